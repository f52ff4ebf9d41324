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

from core.names import metric_mode
from reports.collect import finished_mask
from reports.stats import ALPHA, MAX_SEEDS, NO_TEST, POWER, WELCH, compare_groups
from reports.targets import TARGET_METRICS

LABELS = {"rank1": "Rank-1", "rank5": "Rank-5", "rank10": "Rank-10", "rank20": "Rank-20", "mAP": "mAP",
          "mINP": "mINP"}
#: Always in the table (the Top1 (mAP) column and the bar chart need them).
CORE_METRICS = ("rank1", "mAP")
OPTIONAL_METRICS = ("mINP", "rank1_v2t", "mAP_v2t", "rank1_t2v", "mAP_t2v")  # RegDB: both directions


def label(metric: str) -> str:
    return LABELS.get(metric, metric)


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


def compared_metrics(agg: pd.DataFrame, study_metric: str | None = None) -> tuple[str, ...]:
    """The metrics compared with the baseline: the study's metric first, then Rank-1 and mAP."""
    shown = [c[: -len("_mean")] for c in agg.columns if c.endswith("_mean")]
    return tuple(dict.fromkeys(m for m in (study_metric, *CORE_METRICS) if m in shown))


def comparisons(trials: pd.DataFrame, agg: pd.DataFrame, metrics: Sequence[str],
                baseline: str | None) -> dict[str, pd.DataFrame]:
    """``stats.compare_groups`` of every row against the baseline, per metric (Holm within each metric);
    empty when there is no baseline with a finished trial."""
    if not has_baseline(agg, baseline):
        return {}
    done = trials[finished_mask(trials)]
    return {m: compare_groups(done, m, baseline, list(agg.index)) for m in metrics}


def failed_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials left out of the means: run name, group, seed, status and failure reason."""
    return trials.loc[~finished_mask(trials), ["run_name", "group", "seed", "status", "failure_reason"]]


def _metric_cell(mean: float, std: float, n: int) -> str:
    if n == 0:
        return "failed"
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.2f} ± " + ("n/a" if n < 2 or math.isnan(std) else f"{std:.2f}")


def best_value(means: pd.Series, metric: str) -> float | None:
    """Best mean at the displayed precision, so that cells that print the same are bold together."""
    shown = means.dropna().round(2)
    if shown.empty:
        return None
    return shown.max() if metric_mode(metric) == "max" else shown.min()


def _cell(text: object) -> str:
    """One markdown table cell: a single line without pipes."""
    return " ".join(str(text).split()).replace("|", "\\|")


def pipe_table(headers: Sequence[str], rows: Sequence[Sequence[object]], numeric_from: int = 1) -> str:
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
    best = {m: best_value(agg[f"{m}_mean"], m) for m in metrics}
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
    return pipe_table(headers, rows, numeric_from=1)


def p_text(p: float) -> str:
    return "n/a" if math.isnan(p) else "< 0.001" if p < 0.001 else f"{p:.3f}"


def seeds_text(n: float, diff: float) -> str:
    """Seeds for 80% power: ``∞`` for a zero difference, ``> 10000`` past the end of the search."""
    if math.isnan(n):
        return "n/a"
    if n == math.inf:
        return "∞ (Δ = 0)" if diff == 0 else f"> {MAX_SEEDS}"
    return f"{int(n)}"


def ci_text(c) -> str:
    """``+3.33 [+1.20, +5.46]`` for a compared row ``c`` (a ``compare_groups`` row), ``n/a`` without a test."""
    diff = c["diff"]
    if c["test"] == NO_TEST:
        return "n/a" if math.isnan(diff) else f"{diff:+.2f} (n/a)"
    return f"{diff:+.2f} [{c['ci_low']:+.2f}, {c['ci_high']:+.2f}]"


def comparison_table(comps: Mapping[str, pd.DataFrame]) -> str:
    """One row per non-baseline group: the test used and its seeds, then per metric Δ with its 95% CI (bold where
    the interval excludes 0), the Holm-corrected p-value and, where not significant, the seeds for 80% power."""
    metrics = list(comps)
    first = comps[metrics[0]]
    headers = ["Group", "Test", "Seeds"]
    for m in metrics:
        headers += [f"Δ {label(m)} [95% CI]", "p (Holm)", "Seeds for 80% power"]
    rows = []
    for group in first.index:
        head = first.loc[group]
        seeds = ("n/a" if head["test"] == NO_TEST and head["n"] == 0 else
                 f"{head['n']} vs {head['n_baseline']}" if head["test"] == WELCH else
                 f"{head['n']} pair" + ("s" if head["n"] != 1 else ""))
        row = [group, {WELCH: "Welch"}.get(head["test"], head["test"]), seeds]
        for m in metrics:
            c = comps[m].loc[group]
            cell = ci_text(c)
            row += [f"**{cell}**" if c["ci_excludes_zero"] else cell, p_text(c["p_holm"]),
                    "—" if c["test"] == NO_TEST or c["significant"] else seeds_text(c["seeds_needed"], c["diff"])]
        rows.append(row)
    return pipe_table(headers, rows, numeric_from=3)


def comparison_notes(comps: Mapping[str, pd.DataFrame]) -> list[str]:
    """The sentence that explains the method, and one naming the rows compared without pairing, if any."""
    lines = [f"Δ: group minus baseline, paired by seed (Student's paired t-test on the per-seed differences); "
             f"95% CI of Δ from that test, **bold** where it excludes 0; p corrected with Holm's method across the "
             f"rows of each metric; where the corrected p ≥ {ALPHA:g}, the seeds (pairs) that would detect the "
             f"observed Δ with {POWER:.0%} power at the observed spread (two-sided, at α = {ALPHA:g} divided by the "
             f"rows tested, the level Holm's correction first applies); `n/a`: fewer than 2 paired seeds."]
    first = next(iter(comps.values()))
    welch = [str(g) for g in first.index[first["test"] == WELCH]]
    if welch:
        lines.append("Seeds not shared with the baseline, so Welch's unequal-variance t-test (unpaired; seeds per "
                     "group for 80% power) for: " + ", ".join(f"`{g}`" for g in welch) + ".")
    return lines


def effects_section(effects: pd.DataFrame, metric: str, image: str | None = None) -> str:
    """"Main effects" section: per axis and value, the mean of the cells with that value and its effect."""
    rows = [[f"`{r.axis}`", r.value, f"{r.mean:.2f}", f"{r.effect:+.2f}", r.cells] for r in effects.itertuples()]
    lines = ["## Main effects", "",
             pipe_table(["Axis", "Value", f"Mean {label(metric)}", "Effect", "Cells"], rows, numeric_from=2), "",
             f"Mean {label(metric)} of the grid cells (combinations of the varied keys, each the mean over its "
             f"seeds) that have the value, so averaged over the other axes; effect: that mean minus the mean of "
             f"all cells."]
    if image:
        lines += ["", f"![Interaction plot]({image})"]
    return "\n".join(lines)


def _short(value: object) -> str:
    """A parameter value as MLflow stores it (a string), numbers shortened to 4 significant digits."""
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


def importance_section(importance: pd.DataFrame, best: pd.Series | None, keys: Sequence[str], metric: str,
                       evaluator: str, image: str | None = None) -> str:
    """"Parameter importance" section: the importance table, its bar chart and the best trial's parameters."""
    lines = ["## Parameter importance", ""]
    if importance.empty:
        lines.append("Fewer than 2 finished trials, or no parameter varied: no importance.")
    else:
        lines += [pipe_table(["Parameter", "Importance"],
                              [[f"`{r.param}`", f"{r.importance:.3f}"] for r in importance.itertuples()]), "",
                  f"Share of the variance of the final {label(metric)} explained by each parameter over the finished "
                  f"trials, by {evaluator}."]
        if image:
            lines += ["", f"![Parameter importance]({image})"]
    if best is not None:
        lines += ["", f"Best trial: `{best['run_name']}` ({label(metric)} {best[metric]:.2f})", "",
                  pipe_table(["Parameter", "Value"], [[f"`{k}`", _short(best[k])] for k in keys if k in best.index])]
    return "\n".join(lines)


def _num(x: float, signed: bool = False) -> str:
    return "—" if math.isnan(x) else f"{x:+.2f}" if signed else f"{x:.2f}"


BEST_ON_TEST = "best checkpoint on test (the authors' selection; optimistic)"


def targets_section(compared: pd.DataFrame, source: str) -> str:
    """"Paper targets" section: published, measured and their difference per row and metric
    (``targets.compare_targets``' output)."""
    # eval.every_iters runs: the test-selected number stands apart from the honest (final) one, never instead of it
    selected = any(f"{m}_best" in compared and compared[f"{m}_best"].notna().any() for m in TARGET_METRICS)
    headers = ["Row"]
    for m in TARGET_METRICS:
        headers += [f"{label(m)} published", f"{label(m)} measured", f"Δ {label(m)}"]
        if selected:
            headers.append(f"{label(m)} {BEST_ON_TEST}")
    rows = []
    for r in compared.to_dict("records"):
        name = r["name"] if r["name"] == r["group"] else f"{r['name']} (`{r['group']}`)"
        row = [name]
        for m in TARGET_METRICS:
            measured = _num(r[f"{m}_measured"]) if r["ran"] else "not run"
            row += [_num(r[f"{m}_published"]), measured, _num(r[f"{m}_diff"], signed=True)]
            if selected:
                row.append(_num(r[f"{m}_best"]))
        rows.append(row)
    note = (f"Published: {source}. Measured: mean over the finished seeds at the end of training; Δ: measured minus "
            f"published.")
    if selected:
        note += (f" {BEST_ON_TEST[0].upper()}{BEST_ON_TEST[1:]}: in each trial, the evaluation of eval.every_iters "
                 f"with the highest Rank-1 on the test set, averaged like the measured number; chosen on the test "
                 f"set, so it is optimistic and not a result.")
    return "\n".join(["## Paper targets", "", pipe_table(headers, rows), "", note])


def failed_table(failed: pd.DataFrame) -> str:
    if failed.empty:
        return "None."
    rows = [[r.run_name, r.group, "" if pd.isna(r.seed) else r.seed, r.status,
             "(no reason logged)" if pd.isna(r.failure_reason) else r.failure_reason] for r in failed.itertuples()]
    return pipe_table(["Run", "Group", "Seed", "Status", "Failure reason"], rows, numeric_from=5)


def render_markdown(study: str, agg: pd.DataFrame, failed: pd.DataFrame, meta: Mapping[str, object],
                    comps: Mapping[str, pd.DataFrame] | None = None, sections: Sequence[str] = ()) -> str:
    """The whole report as GitHub markdown.

    ``meta`` keys: ``parent_run_id`` (required); optional ``metric``, ``mode``, ``group_keys`` (sequence),
    ``baseline``, ``tracking_uri``, ``date`` (a string; default now, UTC), ``selection`` (which split selected the
    table's configuration, for a study that selects) and ``images`` (caption -> relative file name, embedded under
    "Plots"). ``comps`` (``comparisons``' output) adds the "Comparison with the baseline" section; ``sections`` are
    further markdown sections, placed before "Failed trials".
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
        *([f"- Protocol: {meta['protocol']}"] if meta.get("protocol") else []),
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
    if comps:
        lines += ["", "## Comparison with the baseline", "", comparison_table(comps), ""]
        lines += "\n\n".join(comparison_notes(comps)).split("\n")
    for section in sections:
        lines += ["", section.rstrip()]
    lines += ["", "## Failed trials", "", failed_table(failed)]
    images = meta.get("images") or {}
    if images:
        lines += ["", "## Plots", ""] + [f"![{caption}]({name})\n" for caption, name in images.items()]
    return "\n".join(lines).rstrip() + "\n"
