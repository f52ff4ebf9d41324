"""The tracking store as every tool opens it: one set of checks and one retry rule (docs/ARCHITECTURE.md).

``ablation.run`` (which may create a new SQLite store), ``reports.build`` and ``ablation.ui_check`` (which only read
a store the user names and never create one) make the same checks, each failing in one line that names the store:

- a SQLite store: its folder exists and the file (or, for a new store, the folder) can be written; a file that is
  not an SQLite database (no SQLite header: corrupt, or some other file) is refused before MLflow opens it, and
  one that MLflow cannot use (a damaged database) when first used; a reader refuses a path where no file is,
  instead of letting MLflow create an empty store there (a mistyped path);
- a tracking server: its health endpoint answers within seconds (not after MLflow's minutes of HTTP retries), and
  one authenticated read says whether it takes our credentials (HTTP 401 / 403 named, never their values).

``retry`` repeats tracking calls through a server restart; the study driver and the report builder use it alike.
Light imports only (MLflow, no Ray, no torch), and nothing set in the environment: ``ablation`` and ``reports`` both
import this module.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, TypeVar

import mlflow
from mlflow.tracking import MlflowClient

from core.files import cache_base, probe_write
from core.locks import exclusive_lock

T = TypeVar("T")
SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message says which store and what to do."""


def open_tracking_store(uri: str) -> MlflowClient:
    """First use of the store (a new SQLite store is made here, see `seed_new_sqlite_store`); any backend error is
    a TrackingError."""
    try:
        db = _sqlite_path(uri)
        with _first_use_lock(db):
            if db is not None:
                seed_new_sqlite_store(db)
            client = MlflowClient(uri)
            retry(lambda: client.search_experiments(max_results=1), attempts=3)
    except Exception as exc:  # noqa: BLE001 - any backend error means the store is unusable
        raise TrackingError(f"tracking store {uri} cannot be used: {str(exc).splitlines()[0]}") from None
    return client


@contextlib.contextmanager
def _first_use_lock(db: Path | None):
    """Serialise the first use of a SQLite store across processes (a lock on its folder).

    Two drivers opening the same new SQLite file would both run MLflow's schema migrations and collide on alembic's
    temporary tables; with the lock the second finds the schema built. Servers do their own migrations.
    """
    if db is None:
        yield
        return
    with exclusive_lock(db.parent):
        yield


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` store; ``None`` for a tracking server."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def seed_new_sqlite_store(db: Path) -> None:
    """A new SQLite store (no file at ``db`` yet) starts as a copy of an empty store that this MLflow version built.

    MLflow builds a new store's schema by running every one of its migrations: about 2 s of CPU, paid by every new
    store and, at a study's start, taken from Ray's own start-up on a small machine. Copying a store MLflow built
    once (kept under the cache folder, one file per MLflow version) takes milliseconds. The copy holds the schema and
    its version only: MLflow adds its Default experiment (this store's artifact root, this time) when it first opens
    the store, as for a store it built. Anything in the way (no writable cache folder) leaves the building to MLflow.
    """
    if db.exists():
        return
    template = cache_base() / "mlflow_schema" / f"empty-mlflow-{mlflow.__version__}.db"
    partial = db.with_name(f".{db.name}.{os.getpid()}.seed")
    try:
        if not template.is_file():
            _build_empty_store(template)
        shutil.copyfile(template, partial)
        os.replace(partial, db)  # a reader never sees half a file
    except Exception:  # noqa: BLE001 - the copy is only a shortcut: MLflow builds the store itself instead
        partial.unlink(missing_ok=True)


def _build_empty_store(template: Path) -> None:
    """MLflow builds a store at a scratch path (its migrations, its Default experiment); the experiment is removed
    and the file moved into place whole, so that concurrent builders never leave half a template."""
    template.parent.mkdir(parents=True, exist_ok=True)
    scratch = template.with_name(f".{template.name}.{os.getpid()}.building")
    scratch.unlink(missing_ok=True)
    try:
        MlflowClient(f"sqlite:///{scratch}").search_experiments(max_results=1)  # the schema, the Default experiment
        with contextlib.closing(sqlite3.connect(scratch)) as db:
            with db:
                db.execute("DELETE FROM experiments")
        os.replace(scratch, template)
    finally:
        scratch.unlink(missing_ok=True)


def open_existing_store(uri: str) -> MlflowClient:
    """A client for a store that must already exist (the report builder, the UI check): every check of
    ``check_tracking_reachable`` and of the first use, and no new store made at a path where none is."""
    check_tracking_reachable(uri, existing=True)
    return open_tracking_store(uri)


def check_tracking_reachable(uri: str, existing: bool = False) -> None:
    """The quick part of the store check: a SQLite file's folder, written to, and its header; a server's health
    endpoint and our credentials.

    A SQLite store is found writable by writing, before MLflow is asked: MLflow retries a failing SQLite engine for
    minutes before it gives up, so an unwritable path would otherwise hang the start of a study. With ``existing``
    the SQLite file must be there already: MLflow would create an empty store at a mistyped path.
    """
    db = _sqlite_path(uri)
    if db is not None:
        if existing and not db.is_file():
            raise TrackingError(f"tracking store {uri}: no MLflow database at {db}; check the path (nothing was "
                                f"created there)")
        if not db.parent.is_dir():
            raise TrackingError(f"tracking store {uri}: {db.parent} is not an existing folder; create it or pass "
                                f"--tracking-uri with a writable path, e.g. sqlite:////abs/folder/mlflow.db")
        header = b""
        try:
            if db.exists():
                with open(db, "r+b") as f:
                    header = f.read(len(SQLITE_HEADER))
            else:
                probe_write(db.parent)
        except OSError as exc:
            raise TrackingError(f"tracking store {uri} is not writable ({exc.strerror}); pass --tracking-uri with "
                                f"a writable path, e.g. sqlite:////abs/folder/mlflow.db") from None
        if header and header != SQLITE_HEADER:  # an empty file is a new SQLite database
            raise TrackingError(f"tracking store {uri}: {db} is not an SQLite database (corrupt, or another kind "
                                f"of file); pass --tracking-uri naming the study's mlflow.db")
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
