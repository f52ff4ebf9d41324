"""RegDB cross-modality evaluation (visible <-> thermal).

The released code evaluates thermal -> visible only and passes file paths as "camids", so no gallery item is ever
excluded (docs/REPRODUCTION.md §8.5). That is the right rule here: query and gallery come from different sensors, so
there is no same-view image to drop and every query keeps the whole gallery. Both directions reuse one distance matrix
(the metrics are symmetric in their arguments).
"""
from __future__ import annotations

import numpy as np

from core.eval.distance import pairwise_distance
from core.eval.rank import as_numpy, evaluate_with_exclusion, metrics_dict
from core.names import REGDB_DIRECTIONS as DIRECTIONS  # ("v2t", "t2v"), as eval.regdb_direction and metric names


def _result(dist: np.ndarray, q_pids, g_pids, max_rank: int) -> dict:
    cmc, mAP, mINP = evaluate_with_exclusion(dist, q_pids, g_pids, None, max_rank=max_rank)
    return {**metrics_dict(cmc, mAP, mINP), "cmc": cmc}


def evaluate_regdb(feats_visible, feats_thermal, pids_visible, pids_thermal, direction: str = "v2t",
                   metric: str = "sqeuclidean", max_rank: int = 50) -> dict:
    """Fractions ``rank1, rank5, rank10, rank20, mAP, mINP`` (and ``cmc``) for one direction:
    ``v2t`` = visible query, thermal gallery; ``t2v`` the reverse."""
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown RegDB direction {direction!r}; expected one of {DIRECTIONS}")
    pv, pt = as_numpy(pids_visible).ravel(), as_numpy(pids_thermal).ravel()
    if direction == "v2t":
        return _result(pairwise_distance(feats_visible, feats_thermal, metric=metric), pv, pt, max_rank)
    return _result(pairwise_distance(feats_thermal, feats_visible, metric=metric), pt, pv, max_rank)


def evaluate_regdb_both(feats_visible, feats_thermal, pids_visible, pids_thermal, metric: str = "sqeuclidean",
                        max_rank: int = 50) -> dict:
    """``{"v2t": ..., "t2v": ...}`` from a single distance matrix."""
    pv, pt = as_numpy(pids_visible).ravel(), as_numpy(pids_thermal).ravel()
    dist = pairwise_distance(feats_visible, feats_thermal, metric=metric)
    return {"v2t": _result(dist, pv, pt, max_rank),
            "t2v": _result(np.ascontiguousarray(dist.T), pt, pv, max_rank)}
