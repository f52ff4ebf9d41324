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
EPOCH_METRICS = (*LOSS_METRICS, "lr", *EVAL_METRICS, "epoch", *REGDB_DIRECTION_METRICS)


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

