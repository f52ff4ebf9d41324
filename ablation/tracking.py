"""MLflow bookkeeping for studies: one parent run per study, one child run per trial (docs/ARCHITECTURE.md).

Everything goes through ``MlflowClient`` with explicit run ids, never the fluent "active run" state, because Ray
reuses worker processes across trials and a leaked active run would nest the next trial under the wrong parent.
Calls are retried for a while so a tracking server restart does not fail a study: MLflow's HTTP client already
retries a refused connection with exponential backoff (7 retries, about 4 minutes), and ``retry``
(``tracking.store``) repeats the call on top of that until ``EXPAT_TRACKING_RETRY_S`` (default 900 s) have passed.
Metrics keep their original step and timestamp, so a log call repeated after a lost response is deduplicated by the
store (nothing logged twice).
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

# The store checks and the retry rule are shared with the report builder and the UI check (tracking.store); the
# study driver and the trials import them from here as well.
from core.names import ITER_EVAL_PREFIX
from tracking.store import TrackingError, check_tracking_reachable, open_tracking_store, retry  # noqa: F401
from tracking.runs import child_runs, latest_study_run, trial_run
from tracking.tags import StudyTags, TrialTags


def tracking_credentials() -> dict[str, str]:
    """The MLflow credentials of this process as environment variables, for trial workers on other machines
    (which get their node's environment, not the driver's). Passed in memory only: never logged or stored."""
    from mlflow.environment_variables import MLFLOW_TRACKING_TOKEN
    from mlflow.utils.credentials import read_mlflow_creds
    creds = read_mlflow_creds()
    found = {"MLFLOW_TRACKING_USERNAME": creds.username, "MLFLOW_TRACKING_PASSWORD": creds.password,
             "MLFLOW_TRACKING_TOKEN": MLFLOW_TRACKING_TOKEN.get()}
    return {k: v for k, v in found.items() if v}


def git_commit() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def ensure_experiment(client: MlflowClient, name: str) -> str:
    exp = retry(lambda: client.get_experiment_by_name(name))
    if exp is not None:
        return exp.experiment_id
    try:
        return retry(lambda: client.create_experiment(name))
    except Exception as exc:  # created meanwhile (another study, or a repeated call whose answer was lost)
        exp = retry(lambda: client.get_experiment_by_name(name))
        if exp is None:
            raise exc
        return exp.experiment_id


def find_parent_run(client: MlflowClient, exp_id: str, study: str):
    return retry(lambda: latest_study_run(client, exp_id, study))


def create_parent_run(client: MlflowClient, exp_id: str, tags: StudyTags, params: dict[str, Any]) -> str:
    """The study's parent run, named after the study, with its tags and params."""
    run = retry(lambda: client.create_run(exp_id, run_name=tags.study, tags=tags.to_tags()))
    log_params(client, run.info.run_id, params)
    return run.info.run_id


def log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    items = [Param(k, str(v)) for k, v in params.items()]
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        retry(lambda chunk=items[i:i + 100]: client.log_batch(run_id, params=chunk))


def children(client: MlflowClient, exp_id: str, parent_id: str) -> list:
    return retry(lambda: child_runs(client, exp_id, parent_id))


def find_child(client: MlflowClient, exp_id: str, parent_id: str, trial_id: str):
    """The child run of one trial, found by tag in the store (no scan over the study's runs)."""
    return retry(lambda: trial_run(client, exp_id, parent_id, trial_id))


def fail_unfinished_children(client: MlflowClient, exp_id: str, parent_id: str, reason: str) -> int:
    """Close child runs that a stopped study left RUNNING (they reopen on --resume)."""
    n = 0
    for run in children(client, exp_id, parent_id):
        if run.info.status == "RUNNING":
            set_tags(client, run.info.run_id, TrialTags.only(failure_reason=reason))
            retry(lambda r=run: client.set_terminated(r.info.run_id, "FAILED"))
            n += 1
    return n


# Evaluation metrics first: MLflow keeps a run's metrics in the order they were first logged, and the compare view
# plots the first one by default (rank1 rather than lr).
_METRIC_ORDER = ("rank1", "mAP", "mINP", "rank5", "rank10", "rank20", "loss")


def _metric_order(item: tuple[str, Any]) -> tuple[int, str]:
    key = item[0]
    return (_METRIC_ORDER.index(key), "") if key in _METRIC_ORDER else (len(_METRIC_ORDER), key)


def _tidy(value: float) -> float:
    """Six significant digits: 13.75 rather than 13.750000000000002 in MLflow's tables."""
    return float(f"{float(value):.6g}")


class TrialRun:
    """The MLflow child run of one trial, continued (not duplicated) when the trial is retried or resumed."""

    def __init__(self, uri: str, exp_id: str, run_name: str, tags: TrialTags, params: dict[str, Any]):
        self.client = MlflowClient(uri)
        parent_id, trial_id = tags.parent_run_id, tags.trial_id
        existing = find_child(self.client, exp_id, parent_id, trial_id)
        if existing is not None:
            self.run_id = existing.info.run_id
            retry(lambda: self.client.update_run(self.run_id, status="RUNNING"))
            # Tags that describe this attempt (e.g. node_id: a retried trial may run on another node).
            retry(lambda: self.client.log_batch(self.run_id, tags=_run_tags(tags.attempt())))
            reason = TrialTags.key("failure_reason")
            retry(lambda: self.client.delete_tag(self.run_id, reason) if reason in existing.data.tags else None)
            # The last epoch logged: the iter_* metrics (eval.every_iters) are stepped by iteration, not by epoch
            self.last_step = max((m.step for key in existing.data.metrics if not key.startswith(ITER_EVAL_PREFIX)
                                  for m in retry(lambda k=key: self.client.get_metric_history(self.run_id, k))),
                                 default=0)
        else:
            calls = []

            def create():
                # A repeated create after a lost answer must not make a second run for the trial.
                if calls and (made := find_child(self.client, exp_id, parent_id, trial_id)) is not None:
                    return made
                calls.append(1)
                return self.client.create_run(exp_id, run_name=run_name, tags=tags.to_tags())

            run = retry(create)
            self.run_id = run.info.run_id
            self.last_step = 0
            log_params(self.client, self.run_id, params)

    def log_epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
        """One batched call per epoch; epochs already logged before a retry are not logged twice."""
        if epoch <= self.last_step:
            return
        now = int(time.time() * 1000)
        batch = [Metric(k, _tidy(v), now, epoch) for k, v in sorted(metrics.items(), key=_metric_order)
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch"]
        retry(lambda: self.client.log_batch(self.run_id, metrics=batch))
        self.last_step = epoch

    def log_iterations(self, epoch: int, evaluations: dict[int, dict[str, Any]]) -> None:
        """``eval.every_iters``' evaluations during ``epoch`` as ``ITER_EVAL_PREFIX + metric`` with step = the
        iteration (call before ``log_epoch``: an epoch logged before a retry is not logged twice)."""
        if epoch <= self.last_step:
            return
        now = int(time.time() * 1000)
        batch = [Metric(ITER_EVAL_PREFIX + k, _tidy(v), now, int(step)) for step, metrics in evaluations.items()
                 for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if batch:
            retry(lambda: self.client.log_batch(self.run_id, metrics=batch))

    def log_text(self, text: str, artifact_file: str) -> None:
        retry(lambda: self.client.log_text(self.run_id, text, artifact_file))

    def log_dict(self, mapping: dict, artifact_file: str) -> None:
        retry(lambda: self.client.log_dict(self.run_id, mapping, artifact_file))

    def finish(self) -> None:
        retry(lambda: self.client.set_terminated(self.run_id, "FINISHED"))

    def fail(self, reason: str) -> None:
        set_tags(self.client, self.run_id, TrialTags.only(failure_reason=reason[:5000]))
        retry(lambda: self.client.set_terminated(self.run_id, "FAILED"))


def set_tags(client: MlflowClient, run_id: str, tags: dict[str, str]) -> None:
    """Add ``tags`` (a record's ``only(...)``) to an existing run, one retried call each."""
    for k, v in tags.items():
        retry(lambda k=k, v=v: client.set_tag(run_id, k, v))


def _run_tags(tags: dict[str, str]) -> list[RunTag]:
    return [RunTag(k, v) for k, v in tags.items()]
