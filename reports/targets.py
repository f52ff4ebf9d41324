"""Published numbers (a study's ``targets:``) next to the measured ones. Pure functions over ``tables.aggregate``.

``targets`` is ``StudyInfo.targets``: ``{"source": str, "rows": {group label: {"rank1": .., "mAP": .., "name": ..}}}``
(any of rank1 / mAP may be missing). A measured value is the group's mean over its finished seeds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from core.names import ITER_EVAL_PREFIX

TARGET_METRICS = ("rank1", "mAP")
#: The per-iteration evaluations (eval.every_iters) the best-checkpoint column is chosen from.
CHECKPOINT_METRICS = tuple(ITER_EVAL_PREFIX + m for m in TARGET_METRICS)


def row_names(targets: Mapping | None) -> dict[str, str]:
    """Group label -> published name (``name`` of a target row, e.g. "Triplet Loss") for the rows that have one."""
    rows = (targets or {}).get("rows") or {}
    return {group: str(row["name"]) for group, row in rows.items() if row.get("name")}


def row_name(group: str, targets: Mapping | None) -> str:
    """The row's published name, else its group label."""
    return row_names(targets).get(group, group)


def best_checkpoint(history: pd.DataFrame) -> pd.DataFrame:
    """The authors' selection (rgbir_exp's ``-m all`` scores every saved checkpoint on the test set): per trial the
    evaluation at the iteration with the highest Rank-1 (ties: higher mAP), averaged per group. ``history`` is
    ``collect.load_history`` of ``CHECKPOINT_METRICS``; the result is indexed by group, columns ``TARGET_METRICS``
    (empty when no trial evaluated by iteration)."""
    if history.empty:
        return pd.DataFrame(columns=list(TARGET_METRICS))
    wide = history.pivot_table(index=["run_id", "group", "step"], columns="metric", values="value").reset_index()
    wide = wide.rename(columns=dict(zip(CHECKPOINT_METRICS, TARGET_METRICS)))
    best = wide.sort_values(list(TARGET_METRICS)).groupby("run_id").tail(1)
    return best.groupby("group")[list(TARGET_METRICS)].mean()


def compare_targets(agg: pd.DataFrame, targets: Mapping | None, best: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per target row (study's row order first, then target rows the study did not run): ``group``,
    ``name``, ``ran`` (the study has the row), ``n`` and per metric ``<m>_published``, ``<m>_measured``,
    ``<m>_diff`` (measured − published) and ``<m>_best`` (``best_checkpoint``'s mean, NaN without one)."""
    rows = (targets or {}).get("rows") or {}
    order = [g for g in agg.index if g in rows] + [g for g in rows if g not in agg.index]
    out = []
    for group in order:
        measured_n = int(agg.at[group, "n"]) if group in agg.index else 0
        rec = {"group": group, "name": row_name(group, targets), "ran": group in agg.index, "n": measured_n}
        for m in TARGET_METRICS:
            published = rows[group].get(m)
            published = math.nan if published is None else float(published)
            measured = (float(agg.at[group, f"{m}_mean"]) if group in agg.index and f"{m}_mean" in agg.columns
                        else math.nan)
            chosen = (float(best.at[group, m]) if best is not None and group in best.index and m in best.columns
                      else math.nan)
            rec.update({f"{m}_published": published, f"{m}_measured": measured, f"{m}_diff": measured - published,
                        f"{m}_best": chosen})
        out.append(rec)
    columns = ["group", "name", "ran", "n"] + [f"{m}_{k}" for m in TARGET_METRICS
                                               for k in ("published", "measured", "diff", "best")]
    return pd.DataFrame(out, columns=columns)
