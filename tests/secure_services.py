"""Authenticated services for the tests, set up the way README "Many machines" sets them up:

- MLflow's user-and-password server (``mlflow server --app-name basic-auth``): an auth config file (mode 0600) that
  replaces the admin password at set-up and keeps a verified password for 60 s (without it every request pays a
  PBKDF2 check: a third of a core while a study logs), and a study account made by the admin through the REST API;
- a Ray token made on the head with ``ray get-auth-token --generate`` and copied to every other machine's token file;
- a scan of files for secrets (the test passwords and tokens).
"""
from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ablation.mlflow_server import MlflowServer
from stores import new_store_uri  # the server starts on a seeded store: no migrations at its start

RAY = str(Path(sys.executable).with_name("ray"))


@dataclass
class AuthServer:
    server: MlflowServer
    admin_password: str
    config_path: Path
    user: str = "researcher"
    password: str = ""

    @property
    def url(self) -> str:
        return self.server.url

    def credentials(self) -> dict[str, str]:
        """The environment a study needs to log to this server as the study account."""
        return {"MLFLOW_TRACKING_USERNAME": self.user, "MLFLOW_TRACKING_PASSWORD": self.password}


def write_auth_config(folder: Path, admin_password: str) -> Path:
    path = folder / "basic_auth.ini"
    path.write_text("[mlflow]\n"
                    "default_permission = NO_PERMISSIONS\n"
                    f"database_uri = sqlite:///{folder / 'basic_auth.db'}\n"
                    "admin_username = admin\n"
                    f"admin_password = {admin_password}\n"
                    "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                    "auth_cache_ttl_seconds = 60\n")
    path.chmod(0o600)
    return path


def request(url: str, method: str = "GET", body: dict | None = None, auth: tuple[str, str] | None = None) -> int:
    """An HTTP request to the server; returns the status code (errors included)."""
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method, headers=headers),
                                    timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def start_auth_server(folder: Path, log_path: Path) -> AuthServer:
    """A basic-auth tracking server on 127.0.0.1 with a fresh admin password and a study account."""
    folder.mkdir(parents=True, exist_ok=True)
    admin_password = secrets.token_urlsafe(24)
    config = write_auth_config(folder, admin_password)
    server = MlflowServer(new_store_uri(folder / "mlflow.db"), folder / "artifacts", log_path=log_path,
                          app_name="basic-auth", env={"MLFLOW_AUTH_CONFIG_PATH": str(config)})
    server.start()
    auth = AuthServer(server, admin_password, config, password=secrets.token_urlsafe(24))
    status = request(f"{server.url}/api/2.0/mlflow/users/create", "POST",
                     {"username": auth.user, "password": auth.password}, auth=("admin", admin_password))
    assert status == 200, f"creating the study account answered HTTP {status}"
    return auth


def make_ray_token(head_home: Path) -> str:
    """``ray get-auth-token --generate`` on the head (its home folder): writes ~/.ray/auth_token, prints the token."""
    head_home.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([RAY, "get-auth-token", "--generate"], env={**os.environ, "HOME": str(head_home)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    token = proc.stdout.strip()
    assert token and (head_home / ".ray" / "auth_token").read_text().strip() == token
    return token


def install_token(token: str, path: Path) -> Path:
    """The token copied to another machine's token file (readable by its owner only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(token)
    path.chmod(0o600)
    return path


def files_containing(roots: list[Path], needles: dict[str, str], skip: set[Path]) -> list[str]:
    """``"<file>: <needle name>"`` for every file under ``roots`` (binary files included: SQLite stores, pickles)
    that contains one of the secret strings, apart from the files in ``skip`` (where a secret is meant to be)."""
    hits = []
    encoded = {name: value.encode() for name, value in needles.items()}
    for root in roots:
        for path in [root] if root.is_file() else root.rglob("*"):
            if not path.is_file() or path.resolve() in skip or path.is_symlink():
                continue
            try:
                data = path.read_bytes()
            except OSError:
                continue
            hits += [f"{path}: {name}" for name, value in encoded.items() if value in data]
    return hits


def wait_until_trials_train(client, experiment: str, proc: subprocess.Popen, err_path: Path, trials: int = 2,
                            timeout_s: float = 400) -> None:
    """Return once each of the study's ``trials`` child runs has logged its first epoch: params are logged and
    training is under way. (A child run alone is not enough: it exists before its params are logged, and a server
    stopped in that moment would only delay ``log_params``, not any epoch.)"""
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, err_path.read_text()[-3000:]
        assert time.monotonic() < deadline, "the trials never started training"
        exp = client.get_experiment_by_name(experiment)
        if exp:
            runs = client.search_runs([exp.experiment_id], "tags.kind = 'trial'")
            if len(runs) == trials and all("loss" in r.data.metrics for r in runs):
                return
        time.sleep(0.5)
