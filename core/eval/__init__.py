"""Re-id evaluation: distances, rank metrics (CMC / mAP / mINP), the Market, SYSU-MM01 and RegDB protocols, and
the embedding diagnostics (angles, norms, modality gap).

Metrics come back as fractions; :func:`metrics_to_percent` turns them into the trainer's percent metrics.
"""
from core.eval.diagnostics import angle_diagnostics, feature_norms, modality_gap
from core.eval.distance import normalize, pairwise_distance
from core.eval.rank import evaluate_rank, evaluate_with_exclusion, metrics_to_percent, query_metrics, summarize
from core.eval.regdb import evaluate_regdb, evaluate_regdb_both
from core.eval.sysu import evaluate_sysu, evaluate_sysu_distmat, sample_sysu_gallery

__all__ = [
    "evaluate_rank", "evaluate_with_exclusion", "query_metrics", "summarize", "metrics_to_percent",
    "pairwise_distance", "normalize",
    "evaluate_sysu", "evaluate_sysu_distmat", "sample_sysu_gallery",
    "evaluate_regdb", "evaluate_regdb_both",
    "angle_diagnostics", "feature_norms", "modality_gap",
]
