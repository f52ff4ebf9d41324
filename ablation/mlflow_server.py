"""An ``mlflow server`` subprocess on 127.0.0.1, started and stopped by process group.

Used by ``python -m ablation.ui_check`` (which shows a study's SQLite store through a server of its own) and by the
tests that need a real tracking server (``tests/secure_services.py``: the basic-auth server of the scale-out and
security tests). Nothing here imports MLflow: the server is the ``mlflow`` executable next to this Python.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_executable() -> str:
    local = Path(sys.executable).with_name("mlflow")
    return str(local) if local.exists() else (shutil.which("mlflow") or "mlflow")


class MlflowServer:
    """An ``mlflow server`` subprocess on 127.0.0.1 (SQLite backend, local artifact folder, one worker).

    Started in its own process group and stopped by that group id, so nothing it spawned is left behind. The same
    port and stores can be started again after ``stop()`` (a server restart). ``app_name="basic-auth"`` with
    ``env={"MLFLOW_AUTH_CONFIG_PATH": ...}`` starts MLflow's user-and-password server; its Flask secret key is made
    once per instance, so a restarted server keeps it.
    """

    def __init__(self, backend_uri: str, artifacts_dir: str | Path, port: int | None = None,
                 log_path: str | Path | None = None, browser_host: str | None = None, app_name: str | None = None,
                 env: dict[str, str] | None = None):
        self.backend_uri = backend_uri
        self.artifacts_dir = Path(artifacts_dir)
        self.port = port or free_port()
        self.log_path = Path(log_path) if log_path else self.artifacts_dir.parent / f"mlflow-server-{self.port}.log"
        self.browser_host = browser_host
        self.app_name = app_name
        self.env = dict(env or {})
        if app_name:
            self.env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", secrets.token_hex(32))
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [mlflow_executable(), "server", "--backend-store-uri", self.backend_uri,
               "--artifacts-destination", str(self.artifacts_dir), "--host", "127.0.0.1", "--port", str(self.port),
               "--workers", "1"]
        if self.app_name:
            cmd += ["--app-name", self.app_name]
        if self.browser_host:
            hosts = [f"{h}:{self.port}" for h in (self.browser_host, "127.0.0.1", "localhost")]
            cmd += ["--allowed-hosts", ",".join(hosts),
                    "--cors-allowed-origins", f"http://{self.browser_host}:{self.port}"]
        return cmd

    def start(self, timeout: float = 120) -> "MlflowServer":
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", **self.env)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                     cwd=self.artifacts_dir.parent, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.proc.returncode}; log: {self.log_path}\n"
                                   + self.log_path.read_text()[-2000:])
            if self.healthy():
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server not healthy after {timeout:.0f} s; log: {self.log_path}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM to the server's process group, SIGKILL to what is left after ``timeout`` seconds."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                self.proc.poll()  # reap the direct child, else it counts as alive
                if not _group_alive(pgid):
                    break
                time.sleep(0.2)
            if not _group_alive(pgid):
                break
        self.proc.poll()
        self.proc = None

    def __enter__(self) -> "MlflowServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
