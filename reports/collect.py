"""Read one study's runs out of MLflow: the only module of `reports` that queries the tracking store.

Reports are built from MLflow alone (no Ray result folders, no core code), so a report can be rebuilt on any
machine that can reach the tracking store, long after the trials ran. The store is opened with the checks every
tool makes (``tracking.store``: a missing, corrupt or unwritable SQLite file, a server that is down or refuses the
credentials, each refused in one line), and every read goes through the driver's ``retry``, so a tracking server
restarting while a report is built delays it instead of failing it. The layout read here is the contract in
docs/ARCHITECTURE.md, "MLflow layout": an experiment named after the study, one parent run per study execution
(tags ``kind=study``, ``study=<name>``, ``study.*``) and one child run per trial (tag ``mlflow.parentRunId``).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tracking.store import TrackingError, open_existing_store, retry
from core.names import DATASET_PARAM, EPOCH_METRICS, UNREAD
from core.names import tracking_uri as resolve_uri
from tracking.runs import child_runs, latest_study_run
from tracking.tags import StudyTags, TrialTags

FINISHED = "FINISHED"


class ReportError(ValueError):
    """The study cannot be reported (no usable store, no experiment or parent run). The CLI prints it and exits
    with 2."""


@dataclass(frozen=True)
class StudyInfo:
    """Where a study execution lives in MLflow, and the ``study.*`` tags of its parent run."""

    name: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    parent_status: str
    parent_start_time: int  # ms since the epoch, as MLflow stores it
    metric: str
    mode: str
    group_keys: tuple[str, ...]
    baseline: str | None  # None when the study names no baseline row
    algorithm: str = "grid"  # "grid" or "optuna" (tag study.algorithm)
    targets: dict | None = None  # the parsed study.targets tag (StudyTags.targets), None when the study declares no targets
    selection: str | None = None  # how a study that selects chose its table (tag study.selection), else None


def _hint(study: str) -> str:
    return f"run `python -m ablation.run --study {study}` first"


def open_client(study: str, tracking_uri: str) -> MlflowClient:
    """A client for ``tracking_uri`` after the store checks (``tracking.store.open_existing_store``).

    A SQLite file that does not exist is refused: MLflow would silently create an empty database there (schema
    included), so a typo in the path would leave a stray ``mlflow.db`` behind and then report "no experiment"
    instead of "no store".
    """
    try:
        return open_existing_store(tracking_uri)
    except TrackingError as exc:
        raise ReportError(f"study {study!r}: {exc}") from None


def study_client(info: StudyInfo) -> MlflowClient:
    """A client for the store of a study that ``find_study`` found (and so checked)."""
    return MlflowClient(tracking_uri=info.tracking_uri)


def find_study(study: str, tracking_uri: str, parent_run_id: str | None = None) -> StudyInfo:
    """Locate the study's parent run: ``parent_run_id`` if given, else the most recently started one."""
    tracking_uri = resolve_uri(tracking_uri)
    client = open_client(study, tracking_uri)
    experiment = retry(lambda: client.get_experiment_by_name(study))
    if experiment is None:
        raise ReportError(f"study {study!r}: no MLflow experiment of that name at {tracking_uri} ({_hint(study)})")
    if parent_run_id is not None:
        try:
            parent = retry(lambda: client.get_run(parent_run_id))
        except MlflowException as exc:
            raise ReportError(f"study {study!r}: parent run {parent_run_id} not found at {tracking_uri}") from exc
        tags = StudyTags.from_tags(parent.data.tags)
        if not tags.is_study or tags.study != study:
            raise ReportError(f"study {study!r}: run {parent_run_id} at {tracking_uri} is not a parent run of it")
    else:
        parent = retry(lambda: latest_study_run(client, experiment.experiment_id, study))
        if parent is None:
            raise ReportError(f"study {study!r}: no parent run (tag kind=study) at {tracking_uri} ({_hint(study)})")
    tags = StudyTags.from_tags(parent.data.tags)
    return StudyInfo(name=study, tracking_uri=tracking_uri, experiment_id=parent.info.experiment_id,
                     parent_run_id=parent.info.run_id, parent_status=parent.info.status,
                     parent_start_time=parent.info.start_time or 0,
                     metric=tags.metric or "rank1", mode=tags.mode or "max",
                     group_keys=tags.group_keys or (), baseline=tags.baseline or None,
                     algorithm=tags.algorithm or "grid", targets=_targets(study, tags.targets),
                     selection=tags.selection or None)


def _targets(study: str, text: str | None) -> dict | None:
    if not text:
        return None
    try:
        targets = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(f"study {study!r}: tag {StudyTags.key('targets')} of the parent run is not JSON ({exc})") \
            from None
    return targets if targets.get("rows") else None


def _child_runs(client: MlflowClient, info: StudyInfo) -> list:
    """Every child of the parent run, following MLflow's result pages."""
    return retry(lambda: child_runs(client, info.experiment_id, info.parent_run_id))


def _trial_row(run, group_keys: tuple[str, ...]) -> dict:
    """One trial as a flat dict. Final metrics come from ``run.data.metrics``: MLflow keeps, per metric, the value
    at the highest step logged, which is what "final" means here, also for rank/mAP when eval skips epochs."""
    tags, params = TrialTags.from_tags(run.data.tags), run.data.params
    group = tags.group or ", ".join(f"{k}={params.get(k)}" for k in group_keys) or run.info.run_name
    seed = tags.seed if tags.seed not in (None, "") else params.get("solver.seed")
    seed = int(seed) if isinstance(seed, str) and seed.lstrip("-").isdigit() else seed
    row = {"run_id": run.info.run_id, "run_name": run.info.run_name, "status": run.info.status,
           "group": group, "seed": seed, "split": tags.split if tags.split not in (None, "") else None,
           "phase": tags.phase or None,
           "trial_id": tags.trial_id, "failure_reason": tags.failure_reason or None,
           "start_time": run.info.start_time, "dataset": params.get(DATASET_PARAM), "protocol": protocol(params)}
    row.update({k: params.get(k) for k in group_keys})
    row.update({m: run.data.metrics.get(m) for m in EPOCH_METRICS})
    return row


def protocol(params: dict) -> str | None:
    """The evaluation protocol a trial's numbers follow, where the dataset has a choice: SYSU-MM01's setting and
    CMC form (per image or per identity), RegDB's main direction. (A key the trial did not read is logged as
    ``unread``.)"""
    given = {k: v for k, v in params.items() if v not in (None, "", UNREAD)}
    if "eval.sysu_cmc" in given:
        return (f"SYSU-MM01 {given.get('eval.sysu_mode')}-search {given.get('eval.sysu_shot')}-shot, "
                f"{given['eval.sysu_cmc']} CMC, {given.get('eval.trials')} gallery draws")
    if "eval.regdb_direction" in given:
        return f"RegDB, main direction {given['eval.regdb_direction']} (both directions in the *_v2t / *_t2v columns)"
    return None


def load_trials(info: StudyInfo) -> pd.DataFrame:
    """One row per trial (child run), in the order the trials started (ties broken by trial id, then run name).

    Columns: run_id, run_name, status, group, seed, split (the RegDB split of a study with ``splits``, else None),
    phase (``search`` / ``refit`` in a study that selects, else None), trial_id, failure_reason, start_time, dataset
    (the ``DATASET_PARAM`` param), one column per group-key
    param (string values, as MLflow stores params) and one per name in ``EPOCH_METRICS`` (final value or NaN).
    """
    rows = [_trial_row(run, info.group_keys) for run in _child_runs(study_client(info), info)]
    columns = ["run_id", "run_name", "status", "group", "seed", "split", "phase", "trial_id", "failure_reason",
               "start_time",
               "dataset", "protocol", *info.group_keys, *EPOCH_METRICS]
    df = pd.DataFrame(rows, columns=columns)
    df[list(EPOCH_METRICS)] = df[list(EPOCH_METRICS)].astype(float)
    if all(isinstance(s, int) or s is None for s in df["seed"]):
        df["seed"] = df["seed"].astype("Int64")
    return df.sort_values(["start_time", "trial_id", "run_name"], na_position="last").reset_index(drop=True)


def finished_mask(trials: pd.DataFrame) -> pd.Series:
    """Trials that count in means and curves: status FINISHED and no ``failure_reason`` tag.

    Everything else (FAILED, KILLED, still RUNNING) is reported as not finished rather than averaged in.
    """
    return (trials["status"] == FINISHED) & trials["failure_reason"].isna()


def collect_trials(study: str, tracking_uri: str, parent_run_id: str | None = None) -> tuple[StudyInfo, pd.DataFrame]:
    """``find_study`` then ``load_trials``: the study's parent run and its trials DataFrame."""
    info = find_study(study, tracking_uri, parent_run_id)
    return info, load_trials(info)


def load_history(info: StudyInfo, trials: pd.DataFrame, metrics=("rank1", "mAP", "loss")) -> pd.DataFrame:
    """Per-epoch history (MLflow ``get_metric_history``) of ``metrics`` for the given trials, in long form.

    Columns: run_id, group, seed, metric, step, value. If a step was logged twice (a trial resumed from a
    checkpoint re-logs an epoch) the later timestamp wins, matching what MLflow reports as the latest value.
    """
    client = study_client(info)
    rows = [{"run_id": t.run_id, "group": t.group, "seed": t.seed, "metric": m,
             "step": p.step, "value": p.value, "timestamp": p.timestamp}
            for t in trials.itertuples() for m in metrics
            for p in retry(lambda r=t.run_id, k=m: client.get_metric_history(r, k))]
    columns = ["run_id", "group", "seed", "metric", "step", "value"]
    if not rows:
        return pd.DataFrame(columns=columns)
    hist = pd.DataFrame(rows).sort_values(["run_id", "metric", "step", "timestamp"])
    hist = hist.drop_duplicates(["run_id", "metric", "step"], keep="last")
    return hist[columns].reset_index(drop=True)


def table_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials the result table is made of: in a study that selects hyperparameters, only the refit trials
    (the selected configuration, trained on the full training split and tested on test); the search trials were
    evaluated on the validation split and are not results."""
    refit = trials["phase"] == "refit"
    return trials[refit].reset_index(drop=True) if refit.any() else trials


def load_run_json(info: StudyInfo, run_id: str, artifact_path: str) -> dict | None:
    """The JSON artifact ``artifact_path`` of one run (e.g. ``core.names.DIAG_SAMPLES_ARTIFACT``), or ``None`` when
    the run has no such file (listed first: a missing file is an answer, not a failure to retry)."""
    client = study_client(info)
    folder = str(Path(artifact_path).parent) if "/" in artifact_path else None
    listed = retry(lambda: client.list_artifacts(run_id, folder))
    if artifact_path not in {f.path for f in listed}:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        local = retry(lambda: client.download_artifacts(run_id, artifact_path, tmp))
        return json.loads(Path(local).read_text(encoding="utf-8"))
