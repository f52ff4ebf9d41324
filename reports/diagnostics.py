"""The report's Diagnostics section: what each row's loss did to the embedding, beside its accuracy.

Built from the ``diag.*`` and ``train.*`` metrics every trial logs (core.names; docs/ARCHITECTURE.md, "Embedding
diagnostics") and the angle samples of each trial's last evaluation (``core.names.DIAG_SAMPLES_ARTIFACT``):

- a table per row: mean ± sample std over seeds of the final positive / negative angle, angle AUC, separable-query
  fraction, norms per modality and modality gap, beside the row's Rank-1;
- ``angles.png``: per row, the positive and negative angle distributions at the last evaluation (seeds pooled),
  one panel per row on shared axes;
- ``diagnostics.png``: the main diagnostics per epoch (``plots.plot_learning_curves``: mean over seeds, ± std);
- which diagnostic tracks accuracy: Spearman's rank correlation (``scipy.stats.spearmanr``) of each final
  diagnostic with the study's metric across all finished trials, with its p-value. A correlation, not a cause.

A study whose trials ran with ``eval.diagnostics=false`` has none of these; the section says so.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from core.names import DIAG_METRICS, DIAG_PREFIX, DIAG_SAMPLES_ARTIFACT, TRAIN_METRICS  # noqa: E402
from reports.collect import StudyInfo, finished_mask, load_history, load_run_json  # noqa: E402
from reports.plots import _save, _wrap, plot_learning_curves  # noqa: E402
from reports.tables import aggregate, label, pipe_table  # noqa: E402

FILES = {"angles": "angles.png", "curves": "diagnostics.png"}

# The table's columns (those some finished trial logged), with their headings.
TABLE = {"pos_angle_mean": "pos angle (°)", "neg_angle_mean": "neg angle (°)", "angle_auc": "angle AUC",
         "separable_fraction": "separable queries", "norm_rgb_mean": "norm RGB", "norm_ir_mean": "norm IR",
         "pooled_norm_rgb_mean": "pooled norm RGB", "pooled_norm_ir_mean": "pooled norm IR",
         "modality_gap": "modality gap", "modality_angle_shift": "angle shift (°)"}
TABLE_METRICS = tuple(DIAG_PREFIX + k for k in TABLE)
# diagnostics.png: the angles and their separability, and the modality gap where there is one
CURVE_METRICS = tuple(DIAG_PREFIX + k for k in ("pos_angle_mean", "neg_angle_mean", "angle_auc", "modality_gap"))
OFF_NOTE = ("No diagnostics: no finished trial logged `diag.*` metrics (the trials ran with "
            "`eval.diagnostics=false`, or before diagnostics existed), so there is no table, angles.png, "
            "diagnostics.png or correlation here.")


def present(trials: pd.DataFrame, metrics: Sequence[str]) -> list[str]:
    """The ``metrics`` that some finished trial logged."""
    done = trials[finished_mask(trials)]
    return [m for m in metrics if m in done.columns and done[m].notna().any()]


def correlations(trials: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Spearman's rho and its two-sided p-value of each final diagnostic (``diag.*``, ``train.*``) with ``metric``
    across the finished trials (pairs where both are logged); columns diagnostic, rho, p, n. A diagnostic with
    fewer than 3 pairs, or constant over them, gets NaN (no rank correlation is defined)."""
    done = trials[finished_mask(trials)]
    rows = []
    for m in present(trials, (*DIAG_METRICS, *TRAIN_METRICS)):
        pair = done[[m, metric]].dropna()
        rho = p = math.nan
        if len(pair) >= 3 and pair[m].nunique() > 1 and pair[metric].nunique() > 1:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # scipy warns on ties it handles by average ranks
                rho, p = stats.spearmanr(pair[m], pair[metric])
        rows.append({"diagnostic": m, "rho": float(rho), "p": float(p), "n": len(pair)})
    return pd.DataFrame(rows, columns=["diagnostic", "rho", "p", "n"])


def _cell(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.3g} ± {'n/a' if math.isnan(std) else f'{std:.2g}'}"


def diagnostics_table(agg: pd.DataFrame, metrics: Sequence[str], metric: str = "rank1") -> str:
    """One row per report row: ``metric`` (the study's accuracy, as in the results table) then each diagnostic,
    mean ± sample std over the finished seeds (``tables.aggregate`` columns)."""
    heads = ["Group", label(metric), *(TABLE.get(m[len(DIAG_PREFIX):], m) for m in metrics)]
    rows = [[g, *(_cell(agg.at[g, f"{m}_mean"], agg.at[g, f"{m}_std"]) for m in (metric, *metrics))]
            for g in agg.index]
    return pipe_table(heads, rows)


def correlation_table(corr: pd.DataFrame, metric: str) -> str:
    rows = [[f"`{r.diagnostic}`", "n/a" if math.isnan(r.rho) else f"{r.rho:+.2f}",
             "n/a" if math.isnan(r.p) else f"{r.p:.3g}", r.n] for r in corr.itertuples()]
    return pipe_table(["Diagnostic", f"Spearman rho with {label(metric)}", "p", "trials"], rows)


def plot_angles(samples: Mapping[str, Mapping[str, Sequence[float]]], path: Path) -> Path:
    """One panel per row (``samples``: group -> ``{"pos": [...], "neg": [...]}``, seeds pooled): histograms of
    the positive and negative angles as densities, on the same axes in every panel."""
    groups = list(samples)
    fig, axes = plt.subplots(1, len(groups), figsize=(3.6 * len(groups) + 0.6, 3.2), sharex=True, sharey=True,
                             squeeze=False)
    bins = np.linspace(0, 180, 61)
    for ax, g in zip(axes[0], groups):
        for kind, color, name in (("pos", "C2", "same identity"), ("neg", "C3", "other identities")):
            values = samples[g].get(kind) or []
            if values:
                ax.hist(values, bins=bins, density=True, alpha=0.55, color=color, label=f"{name} ({len(values)})")
        ax.set_title(_wrap(g, 30), fontsize=8)
        ax.set_xlabel("angle (degrees)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("density")
    fig.suptitle("Angles between test features at the last evaluation (positive vs negative pairs)")
    fig.tight_layout()
    return _save(fig, path)


def pooled_samples(trials: pd.DataFrame, groups: Sequence[str],
                   per_run: Mapping[str, Mapping | None]) -> dict[str, dict[str, list]]:
    """Each group's angle samples, its finished trials' (``per_run``: run id -> artifact or None) pooled."""
    done = trials[finished_mask(trials)]
    out = {}
    for g in groups:
        found = [per_run.get(r) for r in done.loc[done["group"] == g, "run_id"]]
        found = [f for f in found if f]
        if found:
            out[g] = {k: [v for f in found for v in f.get(k, [])] for k in ("pos", "neg")}
    return out


def diagnostics_section(agg: pd.DataFrame, table_metrics: Sequence[str], corr: pd.DataFrame, metric: str,
                        images: Mapping[str, str]) -> str:
    """The markdown section; ``table_metrics`` empty means the study has no diagnostics (the section says why).
    ``images``: caption -> file name of the plots that were drawn."""
    lines = ["## Diagnostics", ""]
    if not table_metrics:
        return "\n".join(lines + [OFF_NOTE])
    lines += [diagnostics_table(agg, table_metrics, metric), "",
              "Final evaluation, mean ± sample std over seeds. Angles between L2-normalised test features of the "
              "query x gallery pairs the protocol counts (cross-modal pairs on RGB-IR data); angle AUC: "
              "probability that a same-identity pair has a smaller angle than an other-identity pair; separable "
              "queries: fraction whose every positive is closer in angle than every negative; norms: mean L2 "
              "norm of the test feature (pooled: before the neck) per modality; modality gap: RGB-IR centroid "
              "distance over the mean within-modality spread; angle shift: cross-modal minus within-modality "
              "angle of same-identity pairs.", ""]
    lines += [f"![{caption}]({name})\n" for caption, name in images.items()]
    lines += ["### Which diagnostic tracks accuracy", "",
              correlation_table(corr, metric), "",
              f"Spearman rank correlation of each final diagnostic with `{metric}` across all finished trials, "
              f"with its two-sided p-value (no correction for the number of diagnostics). It says which "
              f"diagnostic moves with accuracy in this study, not that it causes it."]
    return "\n".join(lines)


def build_section(info: StudyInfo, trials: pd.DataFrame, all_trials: pd.DataFrame, agg: pd.DataFrame,
                  out_dir: Path) -> tuple[str, list[Path], pd.DataFrame]:
    """``(markdown section, figures written to out_dir, agg with the diagnostics' mean/std/delta columns)`` for the
    report's rows (``trials``, ``agg``: the results table's); the correlation uses ``all_trials``. The returned
    aggregate feeds ``table.csv``, so it gains every diagnostic some finished trial logged."""
    shown = present(trials, DIAG_METRICS)
    if not shown:
        return diagnostics_section(agg, [], pd.DataFrame(), info.metric, {}), [], agg
    full = agg.join(aggregate(trials, shown, info.baseline).drop(columns=["n", "n_failed"]))
    done = trials[finished_mask(trials)]
    figures, images = [], {}
    per_run = {r: load_run_json(info, r, DIAG_SAMPLES_ARTIFACT) for r in done["run_id"]}
    samples = pooled_samples(trials, list(agg.index), per_run)
    if samples:
        figures.append(plot_angles(samples, Path(out_dir) / FILES["angles"]))
        images["Angle distributions at the last evaluation"] = FILES["angles"]
    curves = present(trials, CURVE_METRICS)
    figures.append(plot_learning_curves(load_history(info, done, curves), Path(out_dir) / FILES["curves"],
                                        list(agg.index), curves,
                                        title="Diagnostics per epoch (mean over seeds, shaded ± std)"))
    images["Diagnostics per epoch"] = FILES["curves"]
    section = diagnostics_section(full, present(trials, TABLE_METRICS), correlations(all_trials, info.metric),
                                  info.metric, images)
    return section, figures, full
