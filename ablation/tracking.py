"""MLflow bookkeeping for studies: one parent run per study, one child run per trial (docs/ARCHITECTURE.md).

Everything goes through ``MlflowClient`` with explicit run ids, never the fluent "active run" state, because Ray
reuses worker processes across trials and a leaked active run would nest the next trial under the wrong parent.
Calls are retried for a while so a tracking server restart does not fail a study: MLflow's HTTP client already
retries a refused connection with exponential backoff (7 retries, about 4 minutes), and ``retry`` repeats the call
on top of that until ``EXPAT_TRACKING_RETRY_S`` (default 900 s) have passed. Metrics keep their original step and
timestamp, so a log call repeated after a lost response is deduplicated by the store (nothing logged twice).
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, TypeVar

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from core.files import probe_write
from core.names import (KIND_STUDY, KIND_TAG, KIND_TRIAL, PARENT_ID_TAG, STUDY_TAG, child_runs,
                        study_run_filter)
from core.locks import exclusive_lock

T = TypeVar("T")


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message says which store and what to do."""


def open_tracking_store(uri: str) -> MlflowClient:
    """First use of the store (a fresh SQLite store builds its schema here); any backend error is a TrackingError."""
    try:
        with _first_use_lock(uri):
            client = MlflowClient(uri)
            retry(lambda: client.search_experiments(max_results=1), attempts=3)
    except Exception as exc:  # noqa: BLE001 - any backend error means the store is unusable
        raise TrackingError(f"tracking store {uri} cannot be used: {str(exc).splitlines()[0]}") from None
    return client


@contextlib.contextmanager
def _first_use_lock(uri: str):
    """Serialise the first use of a SQLite store across processes (a lock on its folder).

    Two drivers opening the same new SQLite file would both run MLflow's schema migrations and collide on alembic's
    temporary tables; with the lock the second finds the schema built. Servers do their own migrations.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    with exclusive_lock(Path(uri[len("sqlite:///"):]).parent):
        yield


def check_tracking_reachable(uri: str) -> None:
    """The quick part of the store check: a SQLite file's folder, written to; a server's health endpoint.

    A SQLite store is found writable by writing, before MLflow is asked: MLflow retries a failing SQLite engine for
    minutes before it gives up, so an unwritable path would otherwise hang the start of a study.
    """
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        if not db.parent.is_dir():
            raise TrackingError(f"tracking store {uri}: {db.parent} is not an existing folder; create it or pass "
                                f"--tracking-uri with a writable path, e.g. sqlite:////abs/folder/mlflow.db")
        try:
            if db.exists():
                with open(db, "r+b"):
                    pass
            else:
                probe_write(db.parent)
        except OSError as exc:
            raise TrackingError(f"tracking store {uri} is not writable ({exc.strerror}); pass --tracking-uri with "
                                f"a writable path, e.g. sqlite:////abs/folder/mlflow.db") from None
    if uri.startswith(("http://", "https://")):
        _check_server(uri)


def _check_server(uri: str) -> None:
    """A tracking server that is down, refuses us or refuses our credentials fails in seconds, not after MLflow's
    minutes of retries."""
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            if resp.status == 200:
                _check_credentials(uri)
                return
            problem = f"answered HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        problem = f"answered HTTP {exc.code}" + (" (Host header refused: start it with --allowed-hosts naming this "
                                                 "host)" if exc.code == 403 else "")
    except (urllib.error.URLError, OSError) as exc:
        problem = f"is not reachable ({getattr(exc, 'reason', exc)})"
    raise TrackingError(f"tracking server {uri} {problem}; start it (mlflow server ... --host ... --port ...) or "
                        f"fix --tracking-uri")


def _check_credentials(uri: str) -> None:
    """One authenticated read with the credentials MLflow itself would send (``MLFLOW_TRACKING_USERNAME`` /
    ``MLFLOW_TRACKING_PASSWORD``, ``MLFLOW_TRACKING_TOKEN`` or ``~/.mlflow/credentials``). The error names the
    server and the variables, never their values."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request
    creds = get_default_host_creds(uri)
    try:
        status = http_request(creds, "/api/2.0/mlflow/experiments/search", "GET", params={"max_results": 1},
                              max_retries=0, timeout=10, raise_on_status=False).status_code
    except Exception as exc:  # noqa: BLE001 - requests' errors: the server went away between the two calls
        raise TrackingError(f"tracking server {uri} is not reachable ({type(exc).__name__}); start it or fix "
                            f"--tracking-uri") from None
    if status == 401:
        given = "refused the user name and password given" if creds.username or creds.token else \
            "asks for a user name and password"
        raise TrackingError(f"tracking server {uri} {given} (HTTP 401); set MLFLOW_TRACKING_USERNAME and "
                            f"MLFLOW_TRACKING_PASSWORD to an account of that server")
    if status == 403:
        raise TrackingError(f"tracking server {uri} denied this account access (HTTP 403); ask its admin for "
                            f"permission or use another account (MLFLOW_TRACKING_USERNAME)")


def tracking_credentials() -> dict[str, str]:
    """The MLflow credentials of this process as environment variables, for trial workers on other machines
    (which get their node's environment, not the driver's). Passed in memory only: never logged or stored."""
    from mlflow.environment_variables import MLFLOW_TRACKING_TOKEN
    from mlflow.utils.credentials import read_mlflow_creds
    creds = read_mlflow_creds()
    found = {"MLFLOW_TRACKING_USERNAME": creds.username, "MLFLOW_TRACKING_PASSWORD": creds.password,
             "MLFLOW_TRACKING_TOKEN": MLFLOW_TRACKING_TOKEN.get()}
    return {k: v for k, v in found.items() if v}


# MLflow error codes that a repeat cannot fix (a bad argument, a missing or duplicate resource).
_PERMANENT_ERRORS = {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS", "BAD_REQUEST",
                     "PERMISSION_DENIED", "UNAUTHENTICATED", "ENDPOINT_NOT_FOUND", "INVALID_STATE"}


def retry_seconds() -> float:
    return float(os.environ.get("EXPAT_TRACKING_RETRY_S", "900"))


def retry(fn: Callable[[], T], attempts: int | None = None, delay: float = 1.0, timeout: float | None = None) -> T:
    """Repeat ``fn`` through transient tracking failures (server restarting or unreachable, SQLite busy).

    Errors that a repeat cannot fix (MLflow's INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST, ...) are raised at
    once. Otherwise the call is repeated with a growing pause (``delay`` doubling up to 15 s) until ``attempts``
    calls were made or ``timeout`` seconds (default ``EXPAT_TRACKING_RETRY_S``, 900) have passed; an outage that
    lasts more than a few seconds is reported once on stderr, and so is the recovery.
    """
    start = time.monotonic()
    deadline = start + (retry_seconds() if timeout is None else timeout)
    pause, warned, i = delay, False, 0
    while True:
        i += 1
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001
            if getattr(exc, "error_code", None) in _PERMANENT_ERRORS:
                raise
            if (attempts is not None and i >= attempts) or time.monotonic() + pause > deadline:
                raise
            if not warned and time.monotonic() - start >= 5:
                first = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
                print(f"tracking store unavailable ({first}); retrying for up to "
                      f"{deadline - time.monotonic():.0f} s", file=sys.stderr, flush=True)
                warned = True
            time.sleep(pause)
            pause = min(pause * 2, 15.0)
            continue
        if warned:
            print(f"tracking store available again after {time.monotonic() - start:.0f} s", file=sys.stderr,
                  flush=True)
        return result


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
    runs = retry(lambda: client.search_runs([exp_id], filter_string=study_run_filter(study),
                                            order_by=["attributes.start_time DESC"], max_results=1))
    return runs[0] if runs else None


def create_parent_run(client: MlflowClient, exp_id: str, study: str, tags: dict[str, str],
                      params: dict[str, Any]) -> str:
    run = retry(lambda: client.create_run(exp_id, run_name=study, tags={KIND_TAG: KIND_STUDY, STUDY_TAG: study, **tags}))
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
    runs = retry(lambda: client.search_runs(
        [exp_id], filter_string=f"tags.`{PARENT_ID_TAG}` = '{parent_id}' and tags.trial_id = '{trial_id}'",
        max_results=1))
    return runs[0] if runs else None


def fail_unfinished_children(client: MlflowClient, exp_id: str, parent_id: str, reason: str) -> int:
    """Close child runs that a stopped study left RUNNING (they reopen on --resume)."""
    n = 0
    for run in children(client, exp_id, parent_id):
        if run.info.status == "RUNNING":
            retry(lambda r=run: client.set_tag(r.info.run_id, "failure_reason", reason))
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

    def __init__(self, uri: str, exp_id: str, parent_id: str, trial_id: str, run_name: str, tags: dict[str, str],
                 params: dict[str, Any]):
        self.client = MlflowClient(uri)
        existing = find_child(self.client, exp_id, parent_id, trial_id)
        if existing is not None:
            self.run_id = existing.info.run_id
            retry(lambda: self.client.update_run(self.run_id, status="RUNNING"))
            # Tags that describe this attempt (e.g. node_id: a retried trial may run on another node).
            retry(lambda: self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()]))
            retry(lambda: self.client.delete_tag(self.run_id, "failure_reason")
                  if "failure_reason" in existing.data.tags else None)
            self.last_step = max((m.step for key in existing.data.metrics
                                  for m in retry(lambda k=key: self.client.get_metric_history(self.run_id, k))),
                                 default=0)
        else:
            calls = []

            def create():
                # A repeated create after a lost answer must not make a second run for the trial.
                if calls and (made := find_child(self.client, exp_id, parent_id, trial_id)) is not None:
                    return made
                calls.append(1)
                return self.client.create_run(exp_id, run_name=run_name,
                                              tags={PARENT_ID_TAG: parent_id, KIND_TAG: KIND_TRIAL, "trial_id": trial_id,
                                                    **tags})

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

    def log_text(self, text: str, artifact_file: str) -> None:
        retry(lambda: self.client.log_text(self.run_id, text, artifact_file))

    def finish(self) -> None:
        retry(lambda: self.client.set_terminated(self.run_id, "FINISHED"))

    def fail(self, reason: str) -> None:
        retry(lambda: self.client.set_tag(self.run_id, "failure_reason", reason[:5000]))
        retry(lambda: self.client.set_terminated(self.run_id, "FAILED"))
