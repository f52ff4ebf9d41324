"""Secure by default, on real services started on this machine:

- a local study runs with Ray's token authentication on (the package no longer turns it off): while it runs, a
  client without the token or with a wrong one cannot connect to its Ray and runs nothing, and a client with the
  token Ray wrote for the study can (so the refusals are the token's doing, not a Ray that is gone);
- the study logs to MLflow's user-and-password server (basic-auth app) through MLFLOW_TRACKING_USERNAME /
  MLFLOW_TRACKING_PASSWORD; a request without credentials gets 401; a wrong password or none stops the study in one
  line that names the server and never the password;
- neither the password nor the Ray token lands in the tracking store, its artifacts, Ray's results, the report or
  any log of the study.
"""
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from inprocess import run_main
from secure_services import files_containing, request, start_auth_server
from studies import wait_until
from test_ablation_e2e import TINY

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent

# The clients connect as soon as the study's Ray is up, and are answered within seconds (the refused ones give up
# after REFUSED_RETRIES attempts): the trials' start and six tiny epochs keep the study running well past that, also
# on a loaded machine.
STUDY = {**TINY, "overrides": {**TINY["overrides"], "solver.epochs": 6}}
# Ray's client asks the GCS up to RAY_NUM_REDIS_GET_RETRIES times (20, 2 s apart) before it gives up; a refused
# client needs only the first answer to show the refusal.
REFUSED_RETRIES = "2"

# A client that runs one task; the marker file says whether anything ran. The task asks for no CPU: the study's
# trials hold them all, and a task waiting for one would only run (or fail) once the study ends.
CLIENT = """
import pathlib, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
@ray.remote(num_cpus=0)
def touch(path):
    pathlib.Path(path).write_text("ran")
    return 1
print(ray.get(touch.remote(sys.argv[2])))
"""


CREDENTIALS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "MLFLOW_TRACKING_USERNAME",
               "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without Ray's auth settings and MLflow credentials, plus ``extra``."""
    return {**{k: v for k, v in os.environ.items() if k not in CREDENTIALS}, "PYTHONPATH": str(ROOT), **extra}


def study_cmd(tmp_path: Path, study: Path, tracking_uri: str) -> list[str]:
    return [sys.executable, "-m", "ablation.run", "--study", str(study), "--num-cpus", "2",
            "--tracking-uri", tracking_uri, "--storage-path", str(tmp_path / "ray_results")]


def gcs_address(ray_tmp: Path) -> str | None:
    """The GCS address of the (only) Ray session under ``ray_tmp``, once Ray has written its port file."""
    ports = list(ray_tmp.glob("ray/session_latest/gcs_server_port_*"))
    if not ports or not ports[0].read_text().strip():
        return None
    import ray.util
    return f"{ray.util.get_node_ip_address()}:{ports[0].read_text().strip()}"


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """One basic-auth server for the module: the refused studies never get past its login."""
    folder = tmp_path_factory.mktemp("auth") / "mlflow-server"  # its store, artifacts, auth config and log
    auth = start_auth_server(folder, folder / "server.log")
    try:
        yield auth
    finally:
        auth.server.stop()


def test_study_with_ray_token_auth_and_mlflow_basic_auth_keeps_both_secrets(tmp_path, auth_server, monkeypatch):
    # The server asks who is there: no credentials, or the wrong password, get 401; the study account gets in.
    search = f"{auth_server.url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert request(search) == 401
    assert request(search, auth=(auth_server.user, "not-the-password")) == 401
    assert request(search, auth=(auth_server.user, auth_server.password)) == 200

    home = tmp_path / "home"  # the study's home folder: Ray writes the new local cluster's token there
    home.mkdir()
    ray_tmp = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))  # short: Ray's socket paths must stay < 108 chars
    study = tmp_path / "secure_tiny.yaml"
    study.write_text(yaml.safe_dump(STUDY))
    env = clean_env(HOME=str(home), RAY_TMPDIR=str(ray_tmp), EXPAT_DATA_CACHE=str(tmp_path / "cache"),
                    **auth_server.credentials())
    out, err = open(tmp_path / "driver.out", "w"), open(tmp_path / "driver.err", "w")
    proc = subprocess.Popen(study_cmd(tmp_path, study, auth_server.url), cwd=tmp_path, env=env, stdout=out,
                            stderr=err, start_new_session=True)
    try:
        client = MlflowClient(auth_server.url)
        for key, value in auth_server.credentials().items():  # this test's own reads of the server
            monkeypatch.setenv(key, value)
        token_file = home / ".ray" / "auth_token"
        address = wait_until(lambda: token_file.exists() and gcs_address(ray_tmp), proc, timeout=300,
                             what="the study's Ray with token authentication")
        token = token_file.read_text().strip()

        def client_proc(name: str, **auth_env: str) -> tuple[subprocess.Popen, Path]:
            marker = tmp_path / f"ran-{name}"
            empty_home = tmp_path / f"home-{name}"
            empty_home.mkdir()
            p = subprocess.Popen([sys.executable, "-c", CLIENT, address, str(marker)],
                                 env=clean_env(HOME=str(empty_home), **auth_env), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
            return p, marker

        # The client with the study's token connects and runs a task; the others are answered by the study's GCS
        # itself with "Unauthenticated ... InvalidAuthToken" (Ray's client logs it on each attempt), so their failure
        # is the token check's doing, not a cluster that is gone.
        allowed, allowed_marker = client_proc("right", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
        few_tries = {"RAY_NUM_REDIS_GET_RETRIES": REFUSED_RETRIES}
        refused = {"no token": client_proc("none", RAY_AUTH_MODE="disabled", **few_tries),
                   "wrong token": client_proc("wrong", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
                                              **few_tries)}
        output = allowed.communicate(timeout=180)[0]
        assert allowed.returncode == 0 and allowed_marker.read_text() == "ran", output[-2000:]
        for name, (p, marker) in refused.items():
            output = p.communicate(timeout=180)[0]
            assert p.returncode != 0 and not marker.exists(), f"a client with {name} ran a task:\n{output[-2000:]}"
            assert "Unauthenticated" in output and "InvalidAuthToken" in output, (name, output[-2000:])

        rc = proc.wait(timeout=600)
        stdout, stderr = (tmp_path / "driver.out").read_text(), (tmp_path / "driver.err").read_text()
        assert rc == 0, stdout[-3000:] + stderr[-3000:]
        assert "2/2 trials finished, 0 failed" in stdout
        # Every run landed on the authenticated server and was closed.
        runs = client.search_runs([client.get_experiment_by_name("secure_tiny").experiment_id])
        assert sorted(r.data.tags["kind"] for r in runs) == ["study", "trial", "trial"]
        assert all(r.info.status == "FINISHED" for r in runs)

        # Neither secret anywhere the study wrote: store and artifacts, Ray results, report, driver output, the
        # server's log and Ray's session logs. Only the files meant to hold them are skipped.
        secrets_ = {"MLflow password": auth_server.password, "MLflow admin password": auth_server.admin_password,
                    "Ray token": token}
        hits = files_containing([tmp_path, ray_tmp, auth_server.config_path.parent], secrets_, skip={token_file.resolve(),
                                                                    auth_server.config_path.resolve()})
        assert hits == [], hits
        assert (tmp_path / "outputs" / "reports" / "secure_tiny" / "report.md").exists()
        assert list((tmp_path / "ray_results").rglob("params.json")) and list(ray_tmp.rglob("*.log"))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
        out.close()
        err.close()
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.parametrize("password", ["wrong", None])
def test_wrong_or_missing_mlflow_password_stops_the_study_in_one_line(tmp_path, auth_server, password):
    study = tmp_path / "refused.yaml"
    study.write_text(yaml.safe_dump(TINY))
    creds = {"MLFLOW_TRACKING_USERNAME": auth_server.user, "MLFLOW_TRACKING_PASSWORD": "pw-" + secrets.token_hex(8)}
    # in this process (the refusal comes before Ray or any training): the CLI's main with its own environment
    env = {**dict.fromkeys(CREDENTIALS), "EXPAT_DATA_CACHE": str(tmp_path / "cache"),
           **(creds if password == "wrong" else {})}
    proc = run_main("ablation.run", study_cmd(tmp_path, study, auth_server.url)[3:], cwd=tmp_path, env=env,
                    timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert auth_server.url in lines[0] and "HTTP 401" in lines[0] and "MLFLOW_TRACKING_PASSWORD" in lines[0]
    assert ("refused the user name and password" if password else "asks for a user name and password") in lines[0]
    assert creds["MLFLOW_TRACKING_PASSWORD"] not in proc.stderr + proc.stdout
    assert not (tmp_path / "ray_results").exists()  # refused before Ray started
