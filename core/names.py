"""Names the packages share: the per-epoch metrics and the MLflow layout of a study (docs/ARCHITECTURE.md).

Defined once here and imported by core (which reports the metrics), ablation (which logs them and the tags) and
reports (which reads them back). No heavy imports: nothing here needs torch, Ray or MLflow; functions that query
MLflow take the client as an argument.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

# --- per-epoch metrics (percent for the ranking metrics) ---------------------------------------------------------
EVAL_METRICS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")  # higher is better
LOSS_METRICS = ("loss", "loss_id", "loss_metric", "loss_center")  # lower is better
# RegDB evaluates both directions on every evaluation: v2t = visible queries against the thermal gallery, t2v the
# reverse. One spelling: the values of eval.regdb_direction, the eval module's keys and the metric-name suffixes.
REGDB_DIRECTIONS = ("v2t", "t2v")
REGDB_DIRECTION_METRICS = tuple(f"{m}_{d}" for d in REGDB_DIRECTIONS for m in ("rank1", "mAP"))
EPOCH_METRICS = (*LOSS_METRICS, "lr", *EVAL_METRICS, "epoch", *REGDB_DIRECTION_METRICS)
# eval.every_iters: the epoch's metrics hold its evaluations at those iterations under ITER_EVALS ({iteration:
# {metric: value}}); MLflow logs each as ITER_EVAL_PREFIX + metric (``iter_rank1``) with step = the iteration.
ITER_EVALS = "iter_evals"
ITER_EVAL_PREFIX = "iter_"


def metric_mode(metric: str) -> str:
    """``max`` for a ranking metric, ``min`` for a loss: the direction in which a metric improves."""
    return "min" if metric in LOSS_METRICS else "max"


# --- MLflow layout: one parent (study) run, one child run per trial -------------------------------------------------
PARENT_ID_TAG = "mlflow.parentRunId"
KIND_TAG, KIND_STUDY, KIND_TRIAL = "kind", "study", "trial"
STUDY_TAG = "study"
#: Parent-run tag holding the study's published numbers (``targets:`` of the study file), as JSON:
#: ``{"source": str, "rows": {group label: {"rank1": float, "mAP": float, "name": str}}}``.
TARGETS_TAG = "study.targets"
#: The config key (an MLflow param of every trial) naming the dataset: the column of a paper-style table.
DATASET_PARAM = "data.dataset"
UNREAD = "unread"  # the MLflow param value of a config key the trial's training does not read


def study_run_filter(study: str) -> str:
    """The MLflow filter that finds the parent runs of ``study`` (newest first with ``attributes.start_time DESC``)."""
    return f"tags.{KIND_TAG} = '{KIND_STUDY}' and tags.{STUDY_TAG} = '{study}'"


def latest_study_run(client: Any, experiment_id: str, study: str):
    """The most recently started parent run of ``study`` (``MlflowClient.search_runs``), or ``None``."""
    runs = client.search_runs([experiment_id], filter_string=study_run_filter(study),
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


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


def child_runs(client: Any, experiment_id: str, parent_id: str, extra_filter: str = "", page_size: int = 1000) -> list:
    """Every child run of ``parent_id`` (``MlflowClient.search_runs``, page by page: no cap on the count)."""
    query = f"tags.`{PARENT_ID_TAG}` = '{parent_id}'" + (f" and {extra_filter}" if extra_filter else "")
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=query, max_results=page_size, page_token=token)
        runs += list(page)
        token = getattr(page, "token", None)
        if not token:
            return runs
