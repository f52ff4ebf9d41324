"""PNG figures of a study: final metrics per group (bars) and learning curves per group.

Matplotlib runs on the Agg backend: reports are built on headless machines and inside CI. Each function writes
one file and closes its figure, so building many reports in one process does not accumulate figures.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from reports.tables import label  # noqa: E402

DPI = 120


def _wrap(group: str, width: int = 22) -> str:
    """Group labels like ``loss.type=expat_center, loss.margin=0.5`` are long: one key per line, wrapped."""
    return "\n".join(textwrap.fill(part, width) for part in group.split(", "))


def _save(fig, path: Path) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_metric_bars(agg: pd.DataFrame, path: Path, metrics: Sequence[str] = ("rank1", "mAP")) -> Path:
    """Grouped bars of each group's mean final metric, error bars = sample std over seeds (none for one seed).

    ``agg`` is ``tables.aggregate``'s output; groups keep its row order. A group whose trials all failed gets
    an empty slot marked "failed" rather than disappearing, as in the table.
    """
    groups = list(agg.index)
    x = np.arange(len(groups))
    width = 0.8 / len(metrics)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(groups) + 1.5), 4.2))
    for i, m in enumerate(metrics):
        means = agg[f"{m}_mean"].to_numpy(dtype=float)
        stds = agg[f"{m}_std"].to_numpy(dtype=float)  # NaN (one seed, or failed): no error bar drawn
        bars = ax.bar(x + (i - (len(metrics) - 1) / 2) * width, means, width, yerr=stds,
                      capsize=4, label=label(m), color=f"C{i}")
        for bar, mean, std in zip(bars, means, np.nan_to_num(stds)):
            if not math.isnan(mean):
                ax.annotate(f"{mean:.1f}", (bar.get_x() + bar.get_width() / 2, mean + std),
                            xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=8)
    for xi, n in zip(x, agg["n"]):
        if n == 0:
            ax.text(xi, 50, "all trials\nfailed", ha="center", va="center", color="firebrick", fontsize=9)
    ax.set_xticks(x, [_wrap(g) for g in groups], fontsize=8)
    ax.set_xlim(-0.6, len(groups) - 0.4)  # keep the slot of an all-failed (NaN) group in view
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax.set_title("Final metrics per group (mean ± std over seeds)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)  # outside: bars reach the top
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def curve_stats(history: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std and seed count per (group, metric, step) of a ``collect.load_history`` frame."""
    stats = history.groupby(["group", "metric", "step"])["value"].agg(["mean", "std", "count"])
    return stats.reset_index()


def plot_learning_curves(history: pd.DataFrame, path: Path, groups: Sequence[str],
                         metrics: Sequence[str] = ("rank1", "mAP", "loss"),
                         title: str = "Learning curves (mean over seeds, shaded ± std)") -> Path:
    """One panel per metric, metric vs epoch, one line per group (mean over seeds, shaded ± std where >1 seed).

    Eval metrics are often logged every few epochs only, so points are marked: a line between two evals is an
    interpolation, not a measurement.
    """
    stats = curve_stats(history)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.8), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        for i, g in enumerate(groups):
            s = stats[(stats["group"] == g) & (stats["metric"] == m)].sort_values("step")
            if s.empty:
                continue
            color = f"C{i % 10}"
            ax.plot(s["step"], s["mean"], marker="o", markersize=3, color=color, label=g)
            many = s["count"] > 1
            ax.fill_between(s["step"], s["mean"] - s["std"].fillna(0), s["mean"] + s["std"].fillna(0),
                            where=many.to_numpy(), color=color, alpha=0.2, linewidth=0)
        ax.set_title(label(m))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if not ax.lines:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="gray")
    fig.suptitle(title)
    fig.tight_layout()
    legend = {}  # label -> handle, over all panels (a group may lack one metric)
    for ax in axes[0]:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(name, handle)
    if legend:
        fig.legend(legend.values(), legend.keys(), loc="upper center", ncol=min(len(legend), 3), fontsize=8,
                   bbox_to_anchor=(0.5, 0.0))  # below the panels
    return _save(fig, path)


def plot_interaction(points: pd.DataFrame, x_key: str, line_key: str, metric: str, path: Path,
                     x_order: Sequence | None = None, line_order: Sequence | None = None) -> Path:
    """Interaction plot: mean ``metric`` (``effects.interaction_means``) against the values of ``x_key``, one line
    per value of ``line_key``. Parallel lines mean the two axes act independently; crossing lines, that the best
    value of one depends on the other."""
    x_order = list(x_order if x_order is not None else dict.fromkeys(points[x_key]))
    line_order = list(line_order if line_order is not None else dict.fromkeys(points[line_key]))
    fig, ax = plt.subplots(figsize=(max(4.8, 1.2 * len(x_order) + 2.5), 3.8))
    for i, value in enumerate(line_order):
        s = points[points[line_key] == value].set_index(x_key)["mean"].reindex(x_order)
        ax.plot(range(len(x_order)), s.to_numpy(dtype=float), marker="o", color=f"C{i % 10}",
                label=f"{line_key}={value}")
    ax.set_xticks(range(len(x_order)), [str(v) for v in x_order])
    ax.set_xlabel(x_key)
    ax.set_ylabel(f"{label(metric)} (mean over seeds)")
    ax.set_title(f"Interaction of {x_key} and {line_key}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_importance(importance: pd.DataFrame, path: Path, title: str = "Hyperparameter importance") -> Path:
    """Horizontal bars of ``effects.param_importance``: the most important parameter on top."""
    imp = importance.iloc[::-1]
    fig, ax = plt.subplots(figsize=(6.0, 0.5 * len(imp) + 1.5))
    ax.barh(imp["param"], imp["importance"], color="C0")
    for y, v in enumerate(imp["importance"]):
        ax.annotate(f"{v:.2f}", (v, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set_xlim(0, max(1.0, float(imp["importance"].max()) * 1.15) if len(imp) else 1.0)
    ax.set_xlabel("share of the metric's variance (fANOVA)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)
