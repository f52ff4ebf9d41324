"""MLflow bookkeeping for studies: one parent run per study, one child run per trial (docs/ARCHITECTURE.md).

Everything goes through ``MlflowClient`` with explicit run ids, never the fluent "active run" state, because Ray
reuses worker processes across trials and a leaked active run would nest the next trial under the wrong parent.
Calls are retried for a while so a tracking server restart does not fail a study.
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

T = TypeVar("T")
PARENT_ID_TAG = "mlflow.parentRunId"


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message says which store and what to do."""


def default_tracking_uri() -> str:
    return f"sqlite:///{(Path.cwd() / 'mlflow.db').resolve()}"


def absolute_tracking_uri(uri: str | None) -> str:
    """Ray trials run in their own folders, so a relative SQLite path would split the results: make it absolute."""
    if not uri:
        return default_tracking_uri()
    if "://" not in uri:  # a bare path to a database file
        return f"sqlite:///{Path(uri).expanduser().resolve()}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri[len('sqlite:///'):]).resolve()}"
    return uri


def check_tracking_store(uri: str) -> None:
    """Fail before any training when the store cannot be written."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        target = db if db.exists() else db.parent
        if not target.exists():
            raise TrackingError(f"tracking store {uri}: folder {db.parent} does not exist; create it or pass "
                                f"--tracking-uri with a writable path")
        if not os.access(target, os.W_OK):
            raise TrackingError(f"tracking store {uri} is not writable; fix its permissions or pass --tracking-uri "
                                f"with a writable path")
    try:
        retry(lambda: MlflowClient(uri).search_experiments(max_results=1), attempts=3)
    except Exception as exc:  # noqa: BLE001 - any backend error means the store is unusable
        raise TrackingError(f"tracking store {uri} cannot be used: {str(exc).splitlines()[0]}") from None


def retry(fn: Callable[[], T], attempts: int = 30, delay: float = 1.0) -> T:
    """Retry transient tracking failures (server restarting, SQLite busy) before giving up."""
    for i in range(attempts):
        try:
            return fn()
        except Exception:  # noqa: BLE001
            if i == attempts - 1:
                raise
            time.sleep(delay)
    raise AssertionError("unreachable")


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
    return retry(lambda: client.create_experiment(name))


def find_parent_run(client: MlflowClient, exp_id: str, study: str):
    runs = retry(lambda: client.search_runs([exp_id], filter_string=f"tags.kind = 'study' and tags.study = '{study}'",
                                            order_by=["attributes.start_time DESC"], max_results=1))
    return runs[0] if runs else None


def create_parent_run(client: MlflowClient, exp_id: str, study: str, tags: dict[str, str],
                      params: dict[str, Any]) -> str:
    run = retry(lambda: client.create_run(exp_id, run_name=study, tags={"kind": "study", "study": study, **tags}))
    log_params(client, run.info.run_id, params)
    return run.info.run_id


def log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    items = [Param(k, str(v)) for k, v in params.items()]
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        retry(lambda chunk=items[i:i + 100]: client.log_batch(run_id, params=chunk))


def children(client: MlflowClient, exp_id: str, parent_id: str) -> list:
    return retry(lambda: client.search_runs([exp_id], filter_string=f"tags.`{PARENT_ID_TAG}` = '{parent_id}'",
                                            max_results=10000))


def find_child(client: MlflowClient, exp_id: str, parent_id: str, trial_id: str):
    for run in children(client, exp_id, parent_id):
        if run.data.tags.get("trial_id") == trial_id:
            return run
    return None


def fail_unfinished_children(client: MlflowClient, exp_id: str, parent_id: str, reason: str) -> int:
    """Close child runs that a stopped study left RUNNING (they reopen on --resume)."""
    n = 0
    for run in children(client, exp_id, parent_id):
        if run.info.status == "RUNNING":
            retry(lambda r=run: client.set_tag(r.info.run_id, "failure_reason", reason))
            retry(lambda r=run: client.set_terminated(r.info.run_id, "FAILED"))
            n += 1
    return n


class TrialRun:
    """The MLflow child run of one trial, continued (not duplicated) when the trial is retried or resumed."""

    def __init__(self, uri: str, exp_id: str, parent_id: str, trial_id: str, run_name: str, tags: dict[str, str],
                 params: dict[str, Any]):
        self.client = MlflowClient(uri)
        existing = find_child(self.client, exp_id, parent_id, trial_id)
        if existing is not None:
            self.run_id = existing.info.run_id
            retry(lambda: self.client.update_run(self.run_id, status="RUNNING"))
            retry(lambda: self.client.delete_tag(self.run_id, "failure_reason")
                  if "failure_reason" in existing.data.tags else None)
            self.last_step = max((m.step for key in existing.data.metrics
                                  for m in retry(lambda k=key: self.client.get_metric_history(self.run_id, k))),
                                 default=0)
        else:
            run = retry(lambda: self.client.create_run(
                exp_id, run_name=run_name,
                tags={PARENT_ID_TAG: parent_id, "kind": "trial", "trial_id": trial_id, **tags}))
            self.run_id = run.info.run_id
            self.last_step = 0
            log_params(self.client, self.run_id, params)

    def log_epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
        """One batched call per epoch; epochs already logged before a retry are not logged twice."""
        if epoch <= self.last_step:
            return
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, epoch) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch"]
        retry(lambda: self.client.log_batch(self.run_id, metrics=batch))
        self.last_step = epoch

    def log_text(self, text: str, artifact_file: str) -> None:
        retry(lambda: self.client.log_text(self.run_id, text, artifact_file))

    def finish(self) -> None:
        retry(lambda: self.client.set_terminated(self.run_id, "FINISHED"))

    def fail(self, reason: str) -> None:
        retry(lambda: self.client.set_tag(self.run_id, "failure_reason", reason[:5000]))
        retry(lambda: self.client.set_terminated(self.run_id, "FAILED"))
