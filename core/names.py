"""Names the packages share: the per-epoch metrics, the MLflow params and the tracking-URI rule (docs/ARCHITECTURE.md).

Defined once here and imported by core (which reports the metrics), ablation (which logs them) and reports (which
reads them back). No heavy imports: nothing here needs torch, Ray or MLflow. The MLflow tags and run queries are
``tracking.tags`` and ``tracking.runs``.
"""
from __future__ import annotations

from pathlib import Path

# --- per-epoch metrics (percent for the ranking metrics) ---------------------------------------------------------
EVAL_METRICS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")  # higher is better
LOSS_METRICS = ("loss", "loss_id", "loss_metric", "loss_center")  # lower is better
# RegDB evaluates both directions on every evaluation: v2t = visible queries against the thermal gallery, t2v the
# reverse. One spelling: the values of eval.regdb_direction, the eval module's keys and the metric-name suffixes.
REGDB_DIRECTIONS = ("v2t", "t2v")
REGDB_DIRECTION_METRICS = tuple(f"{m}_{d}" for d in REGDB_DIRECTIONS for m in ("rank1", "mAP"))
# Embedding diagnostics of every evaluation (core.eval.diagnostics), under one prefix so that MLflow's compare view
# lists them together: angles in degrees between L2-normalised features of the pairs the protocol counts.
DIAG_PREFIX = "diag."
DIAG_ANGLE_KEYS = (*(f"{kind}_angle_{stat}" for kind in ("pos", "neg") for stat in ("mean", "p5", "p50", "p95")),
                   "angle_auc", "separable_fraction", "margin_mean")
MODALITY_NAMES = ("rgb", "ir")  # modality 0 and 1 (docs/ARCHITECTURE.md); single-modality data is all "rgb"
# L2 norms per modality of the test feature (before eval.feat_norm) and of the pre-neck pooled feature


def diag_norm_key(feat: str, modality: int, stat: str) -> str:
    """``[pooled_]norm_<rgb|ir>_<mean|std>``: one norm statistic of one modality; ``feat`` is "" or "pooled_"."""
    return f"{feat}norm_{MODALITY_NAMES[modality]}_{stat}"


DIAG_NORM_KEYS = tuple(diag_norm_key(feat, m, stat) for feat in ("", "pooled_") for m in range(len(MODALITY_NAMES))
                       for stat in ("mean", "std"))
DIAG_GAP_KEYS = ("modality_gap", "modality_angle_shift")  # cross-modal data only
DIAG_METRICS = tuple(DIAG_PREFIX + k for k in (*DIAG_ANGLE_KEYS, *DIAG_NORM_KEYS, *DIAG_GAP_KEYS))
#: The run artifact holding the last evaluation's positive and negative angle samples: {"pos": [...], "neg": [...]}.
DIAG_SAMPLES_ARTIFACT = "diagnostics/angles.json"
# Per-epoch means over the batches of each loss term that mines triplets: the fraction of anchors whose hinge is
# active and the mean anchor-positive / anchor-negative angle (degrees) of the mined pairs.
MINING_TERMS = ("triplet", "expat", "expat_bidir")
TRAIN_STATS = ("active_hinge", "ap_angle", "an_angle")


def train_metric(stat: str, term: str) -> str:
    """``train.<stat>_<term>``: the per-epoch metric of one training diagnostic of one mining loss term."""
    return f"train.{stat}_{term}"


TRAIN_METRICS = tuple(train_metric(stat, term) for term in MINING_TERMS for stat in TRAIN_STATS)
EPOCH_METRICS = (*LOSS_METRICS, "lr", *EVAL_METRICS, "epoch", *REGDB_DIRECTION_METRICS, *DIAG_METRICS,
                 *TRAIN_METRICS)
# eval.every_iters: the epoch's metrics hold its evaluations at those iterations under ITER_EVALS ({iteration:
# {metric: value}}); MLflow logs each as ITER_EVAL_PREFIX + metric (``iter_rank1``) with step = the iteration.
ITER_EVALS = "iter_evals"
ITER_EVAL_PREFIX = "iter_"


def metric_mode(metric: str) -> str:
    """``max`` for a ranking metric, ``min`` for a loss: the direction in which a metric improves."""
    return "min" if metric in LOSS_METRICS else "max"


# --- MLflow params shared by the trials (writers) and the reports (readers); the tags are tracking.tags ------------
#: The config key (an MLflow param of every trial) naming the dataset: the column of a paper-style table.
DATASET_PARAM = "data.dataset"
UNREAD = "unread"  # the MLflow param value of a config key the trial's training does not read


def tracking_uri(uri: str | None, default_file: str = "mlflow.db") -> str:
    """The one rule for tracking URIs: a bare path (``mlflow.db``, ``/abs/mlflow.db``) or a relative SQLite URI
    means that SQLite file, made absolute (Ray trials and report builders run in other folders, and MLflow resolves
    a relative path per process); ``None`` means ``default_file`` in the working directory. Other URIs
    (``sqlite:////abs``, ``http://host:5000``) are kept."""
    if not uri:
        uri = default_file
    if "://" not in uri:
        return f"sqlite:///{Path(uri).expanduser().resolve()}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri[len('sqlite:///'):]).resolve()}"
    return uri

