"""A bad tracking store through the tools that read one (``python -m reports.build``, ``python -m ablation.ui_check``):
each is refused with exit status 2 and ONE stderr line naming the store, no traceback, before any work, by the
checks ``ablation.run`` makes too (``tracking.store``); and no tool creates a store at a path the user mistyped.

The line says which check answered (the SQLite header, the missing file, the server's health probe, the
authenticated read), so a missing check shows as another line or as a hang in MLflow's minutes of HTTP retries
(caught by the subprocess timeout), not as a slow pass. The tools run in this process through their ``main(argv)`` (tests/inprocess.py, whose
deadline stands in for the subprocess timeout); tests/test_cli_smoke.py runs each in a fresh interpreter.
"""
from __future__ import annotations

import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from inprocess import run_main
from test_bad_input import assert_refused  # exit status 2, one stderr line naming the needles
from stores import new_store_uri

CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
TOOLS = ("reports.build", "ablation.ui_check")


def run_tool(tool: str, cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    argv = ["--study", "some_study", *args]
    if tool == "ablation.ui_check":  # any executable: the store is refused before a browser could start
        argv += ["--chromium", shutil.which("true") or "/bin/true", "--out", str(cwd / "ui")]
    return run_main(tool, argv, cwd=cwd, env={**dict.fromkeys(CREDENTIALS), **(env or {})}, timeout=90)


class FakeServer:
    """A tracking server stand-in on 127.0.0.1: healthy, and answering every API call with ``status``."""

    def __init__(self, status: int):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                code = 200 if self.path.startswith("/health") else status
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"OK" if code == 200 else b"no")

            do_POST = do_GET  # noqa: N815 - MLflow's client searches with POST

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_server(request):
    server = FakeServer(request.param)
    yield server
    server.close()


@pytest.mark.parametrize("tool", TOOLS)
def test_corrupt_sqlite_store(tmp_path, tool):
    garbage = tmp_path / "mlflow.db"
    garbage.write_bytes(b"this is not a database\n" * 100)
    assert_refused(run_tool(tool, tmp_path, "--tracking-uri", str(garbage)), str(garbage), "is not an SQLite database")
    damaged = tmp_path / "damaged.db"  # an SQLite header, then garbage: found by MLflow's first use of the store
    damaged.write_bytes(b"SQLite format 3\x00" + b"\xff" * 8000)
    assert_refused(run_tool(tool, tmp_path, "--tracking-uri", str(damaged)), str(damaged), "cannot be used",
                   "not a database")
    assert garbage.read_bytes() == b"this is not a database\n" * 100  # left as it was
    assert not (tmp_path / "ui").exists() and not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("tool", TOOLS)
def test_mistyped_store_path_is_refused_and_never_created(tmp_path, tool):
    for typo in (tmp_path / "mlfow.db", tmp_path / "no_such_folder" / "mlflow.db"):
        assert_refused(run_tool(tool, tmp_path, "--tracking-uri", str(typo)), f"no MLflow database at {typo}")
        assert not typo.exists() and (typo.parent == tmp_path or not typo.parent.exists())
    # No --tracking-uri: ./mlflow.db, which is not there either; it is not made.
    assert_refused(run_tool(tool, tmp_path), f"no MLflow database at {tmp_path / 'mlflow.db'}")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("tool", TOOLS)
def test_unreachable_server_answers_at_once(tmp_path, tool):
    # Port 9 (discard): nothing listens. The health probe answers in one line; without it MLflow's HTTP client
    # would retry for minutes (and the subprocess timeout would fail the test).
    assert_refused(run_tool(tool, tmp_path, "--tracking-uri", "http://127.0.0.1:9"), "http://127.0.0.1:9",
                   "is not reachable")


@pytest.mark.parametrize("fake_server", [401], indirect=True)
@pytest.mark.parametrize("tool", TOOLS)
def test_server_refusing_the_credentials(tmp_path, tool, fake_server):
    assert_refused(run_tool(tool, tmp_path, "--tracking-uri", fake_server.url), fake_server.url, "HTTP 401",
                   "asks for a user name and password", "MLFLOW_TRACKING_PASSWORD")
    secret = "not-the-password-4711"
    line = assert_refused(run_tool(tool, tmp_path, "--tracking-uri", fake_server.url,
                                   env={"MLFLOW_TRACKING_USERNAME": "someone", "MLFLOW_TRACKING_PASSWORD": secret}),
                          fake_server.url, "HTTP 401", "refused the user name and password given")
    assert secret not in line


@pytest.mark.parametrize("fake_server", [403], indirect=True)
def test_server_denying_the_account(tmp_path, fake_server):
    for tool in TOOLS:
        assert_refused(run_tool(tool, tmp_path, "--tracking-uri", fake_server.url), fake_server.url, "HTTP 403",
                       "denied this account access")


@pytest.fixture(scope="module")
def study_store(tmp_path_factory) -> Path:
    """A valid SQLite store (made once) holding one finished trial of the study ``some_study``."""
    from mlflow import MlflowClient
    store = tmp_path_factory.mktemp("study_store") / "mlflow.db"
    client = MlflowClient(new_store_uri(store))
    exp = client.create_experiment("some_study")
    parent = client.create_run(exp, run_name="some_study", tags={"kind": "study", "study": "some_study",
                                                                   "study.group_keys": "loss.type"})
    child = client.create_run(exp, run_name="a/seed=0", tags={"mlflow.parentRunId": parent.info.run_id,
                                                               "kind": "trial", "group": "loss.type=a", "seed": "0"})
    client.log_param(child.info.run_id, "loss.type", "a")
    client.log_metric(child.info.run_id, "rank1", 50.0, step=1)
    client.set_terminated(child.info.run_id)
    return store


def test_ui_check_other_bad_input_exits_2_in_one_line(tmp_path, study_store):
    store = study_store  # a valid store without the study asked for
    ui = ["--study", "no_such_study", "--tracking-uri", str(store), "--out", str(tmp_path / "ui")]
    true = shutil.which("true") or "/bin/true"
    for extra, needles in (
            (["--chromium", str(tmp_path / "no-chromium")], ["Chromium not found", str(tmp_path / "no-chromium")]),
            (["--chromium", true, "--size", "big"], ["--size 'big'", "WIDTHxHEIGHT"]),
            (["--chromium", true], ["no experiment named 'no_such_study'", str(store)])):
        assert_refused(run_main("ablation.ui_check", ui + extra, cwd=tmp_path, timeout=90), *needles)
    assert not (tmp_path / "ui").exists()


def test_unwritable_out_folder_exits_2_in_one_line(tmp_path, study_store):
    """A study that is there, an --out below a regular file (unwritable even for root): one line, no traceback."""
    store = study_store
    blocker = tmp_path / "file.txt"
    blocker.write_text("a regular file, not a folder")
    true = shutil.which("true") or "/bin/true"
    for tool, *cmd in (["reports.build", "--no-log"], ["ablation.ui_check", "--chromium", true]):
        proc = run_main(tool, [*cmd, "--study", "some_study", "--tracking-uri", str(store), "--out",
                               str(blocker / "out")], cwd=tmp_path, timeout=90)
        assert_refused(proc, str(blocker / "out"), "Not a directory", "--out")
