"""Per-group aggregates of a study's trials, and the markdown report around them. Pure functions, no I/O.

A report row is a group (the study's ``group`` label, e.g. ``loss.type=expat``); its seeds are repeats of the
same configuration, so the table shows mean ± sample std (ddof=1) over the group's *finished* trials. A failed
trial has no meaningful final metric, so it is left out of the means and listed on its own instead.

Formatting choices (documented once, here):
- means and stds have 2 decimals; a group with one finished seed shows ``± n/a`` (a sample std of one value is
  undefined, and ``± 0.00`` would read as "perfectly reproducible");
- a group whose trials all failed shows ``failed`` in every metric cell;
- Δ is the group mean minus the baseline group's mean, signed (``+1.23``); without a baseline there is no Δ;
- the best mean of each metric column is **bold** (ties at the displayed precision are all bold);
- ``Top1 (mAP)`` repeats the Rank-1 and mAP means with 1 decimal in the expAT README's format, ``94.7 (86.6)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone

import pandas as pd

from reports.collect import finished_mask

LABELS = {"rank1": "Rank-1", "rank5": "Rank-5", "rank10": "Rank-10", "rank20": "Rank-20", "mAP": "mAP",
          "mINP": "mINP"}
#: Always in the table (the Top1 (mAP) column and the bar chart need them).
CORE_METRICS = ("rank1", "mAP")
OPTIONAL_METRICS = ("mINP",)


def label(metric: str) -> str:
    return LABELS.get(metric, metric)


def higher_is_better(metric: str) -> bool:
    """Every per-epoch metric is an accuracy except the ``loss*`` family."""
    return not metric.startswith("loss")


def table_metrics(trials: pd.DataFrame, study_metric: str | None = None) -> tuple[str, ...]:
    """Rank-1 and mAP, plus mINP and the study's own metric when some finished trial logged them."""
    done = trials[finished_mask(trials)]
    extra = [m for m in (*OPTIONAL_METRICS, study_metric)
             if m and m not in CORE_METRICS and m in done.columns and done[m].notna().any()]
    return CORE_METRICS + tuple(dict.fromkeys(extra))


def group_order(trials: pd.DataFrame, baseline: str | None = None) -> list[str]:
    """Baseline first, then groups in order of first appearance (``trials`` is in trial start order)."""
    order = list(dict.fromkeys(trials["group"]))
    return [baseline] + [g for g in order if g != baseline] if baseline in order else order


def aggregate(trials: pd.DataFrame, metrics: Sequence[str] = CORE_METRICS,
              baseline: str | None = None) -> pd.DataFrame:
    """One row per group (index, in ``group_order``): ``n`` finished, ``n_failed`` not finished, and per metric
    ``<m>_mean``, ``<m>_std`` (sample std, NaN for one seed) and ``<m>_delta`` (vs the baseline's mean; NaN
    everywhere when there is no baseline, or its trials all failed)."""
    order = group_order(trials, baseline)
    done = finished_mask(trials)
    agg = pd.DataFrame(index=pd.Index(order, name="group"))
    agg["n"] = trials[done].groupby("group").size().reindex(order, fill_value=0)
    agg["n_failed"] = trials[~done].groupby("group").size().reindex(order, fill_value=0)
    by_group = trials[done].groupby("group")
    for m in metrics:
        agg[f"{m}_mean"] = by_group[m].mean().reindex(order)
        agg[f"{m}_std"] = by_group[m].std(ddof=1).reindex(order)
        base = agg.at[baseline, f"{m}_mean"] if baseline in agg.index else math.nan
        agg[f"{m}_delta"] = agg[f"{m}_mean"] - base
    return agg


def failed_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials left out of the means: run name, group, seed, status and failure reason."""
    return trials.loc[~finished_mask(trials), ["run_name", "group", "seed", "status", "failure_reason"]]


def _metric_cell(mean: float, std: float, n: int) -> str:
    if n == 0:
        return "failed"
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.2f} ± " + ("n/a" if n < 2 or math.isnan(std) else f"{std:.2f}")


def _best(means: pd.Series, metric: str) -> float | None:
    """Best mean at the displayed precision, so that cells that print the same are bold together."""
    shown = means.dropna().round(2)
    if shown.empty:
        return None
    return shown.max() if higher_is_better(metric) else shown.min()


def _cell(text: object) -> str:
    """One markdown table cell: a single line without pipes."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _pipe_table(headers: Sequence[str], rows: Sequence[Sequence[object]], numeric_from: int = 1) -> str:
    align = ["---" if i < numeric_from else "---:" for i in range(len(headers))]
    lines = [headers, align, *rows]
    return "\n".join("| " + " | ".join(_cell(c) for c in line) + " |" for line in lines)


def has_baseline(agg: pd.DataFrame, baseline: str | None) -> bool:
    """Whether Δ columns make sense: the baseline group exists and has a finished trial."""
    return baseline in agg.index and agg.at[baseline, "n"] > 0


def results_table(agg: pd.DataFrame, baseline: str | None = None) -> str:
    """The main table: group, n, then per metric ``mean ± std`` and Δ, then ``Top1 (mAP)``."""
    if agg.empty:
        return "No trials were logged under this parent run."
    metrics = [c[: -len("_mean")] for c in agg.columns if c.endswith("_mean")]
    with_delta = has_baseline(agg, baseline)
    headers = ["Group", "n"]
    for m in metrics:
        headers += [label(m)] + ([f"Δ {label(m)}"] if with_delta else [])
    headers.append("Top1 (mAP)")
    best = {m: _best(agg[f"{m}_mean"], m) for m in metrics}
    rows = []
    for group, r in agg.iterrows():
        n = int(r["n"])
        row = [f"{group} (baseline)" if group == baseline else group,
               f"{n}" + (f" (+{int(r['n_failed'])} failed)" if r["n_failed"] else "")]
        for m in metrics:
            text = _metric_cell(r[f"{m}_mean"], r[f"{m}_std"], n)
            if n and best[m] is not None and round(r[f"{m}_mean"], 2) == best[m]:
                text = f"**{text}**"
            row.append(text)
            if with_delta:
                delta = r[f"{m}_delta"]
                row.append("—" if group == baseline or math.isnan(delta) else f"{delta:+.2f}")
        r1, mp = r["rank1_mean"], r["mAP_mean"]
        row.append("failed" if n == 0 else "n/a" if math.isnan(r1) or math.isnan(mp) else f"{r1:.1f} ({mp:.1f})")
        rows.append(row)
    return _pipe_table(headers, rows, numeric_from=1)


def failed_table(failed: pd.DataFrame) -> str:
    if failed.empty:
        return "None."
    rows = [[r.run_name, r.group, "" if pd.isna(r.seed) else r.seed, r.status,
             "(no reason logged)" if pd.isna(r.failure_reason) else r.failure_reason] for r in failed.itertuples()]
    return _pipe_table(["Run", "Group", "Seed", "Status", "Failure reason"], rows, numeric_from=5)


def render_markdown(study: str, agg: pd.DataFrame, failed: pd.DataFrame, meta: Mapping[str, object]) -> str:
    """The whole report as GitHub markdown.

    ``meta`` keys: ``parent_run_id`` (required); optional ``metric``, ``mode``, ``group_keys`` (sequence),
    ``baseline``, ``tracking_uri``, ``date`` (a string; default now, UTC), ``selection`` (which split selected the
    table's configuration, for a study that selects) and ``images`` (caption -> relative
    file name, embedded under "Plots").
    """
    baseline = meta.get("baseline")
    n_done, n_failed = int(agg["n"].sum()), len(failed)
    date = meta.get("date") or datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    keys = ", ".join(f"`{k}`" for k in meta.get("group_keys") or ()) or "(none)"
    lines = [
        f"# Study report: {study}",
        "",
        f"- Metric: `{meta.get('metric', 'rank1')}` ({meta.get('mode', 'max')}); group keys: {keys}; "
        f"baseline: {f'`{baseline}`' if baseline else '(none)'}",
        f"- Trials: {n_done} finished, {n_failed} failed or unfinished ({n_done + n_failed} total)",
        f"- MLflow parent run: `{meta['parent_run_id']}`"
        + (f" (tracking URI `{meta['tracking_uri']}`)" if meta.get("tracking_uri") else ""),
        f"- Generated: {date}",
        *([f"- Selection: {meta['selection']}"] if meta.get("selection") else []),
        "",
        "## Results",
        "",
        results_table(agg, baseline),
        "",
        "Mean ± sample standard deviation over seeds, finished trials only (`± n/a`: one seed). "
        "Δ: difference of the group mean from the baseline mean. **Bold**: best mean of the column. "
        "Top1 (mAP): Rank-1 and mAP means in the expAT README's format. Values in %.",
    ]
    if baseline and not has_baseline(agg, baseline):
        lines += ["", f"Baseline group `{baseline}` has no finished trial in this run, so there is no Δ column."]
    lines += ["", "## Failed trials", "", failed_table(failed)]
    images = meta.get("images") or {}
    if images:
        lines += ["", "## Plots", ""] + [f"![{caption}]({name})\n" for caption, name in images.items()]
    return "\n".join(lines).rstrip() + "\n"
