"""Scale-out on real components that the tests start on 127.0.0.1 (no mocks), secured as README "Many machines"
secures them:

- a Ray cluster of a head and a worker node (`ray start --head` / `ray start --address`, 1 CPU each) with token
  authentication (the head's token from `ray get-auth-token --generate`, copied to the worker and the driver), an
  `mlflow server --app-name basic-auth` (SQLite backend, local artifact folder) reached over HTTP as a study account,
  and a shared storage folder: a tiny study run with `--address` places its two trials on both nodes, logs them to
  the server and keeps its Ray results in the shared folder; a driver without the token or with a wrong one is
  refused in one line;
- the tracking server stopped and started again mid-study: no trial fails, every metric of every epoch arrives.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from ablation.mlflow_server import free_port
from secure_services import install_token, make_ray_token, start_auth_server, wait_until_trials_train
from test_ablation_e2e import TINY as E2E_TINY

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).with_name("ray"))

# The end-to-end tests' tiny study, trained for two epochs so a server restart can land mid-trial.
TINY = {**E2E_TINY, "overrides": {**E2E_TINY["overrides"], "solver.epochs": 2}}
HISTORY_KEYS = ("rank1", "mAP", "mINP", "loss")


def base_env(shared: Path, token_file: Path | None = None) -> dict[str, str]:
    """What every node and the driver get: the project on the path (as if installed on each machine), the shared
    data cache, no telemetry, and on a cluster Ray's token authentication with this machine's copy of the cluster
    token (a local study's Ray turns it on by itself)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "MLFLOW_TRACKING_USERNAME",
                        "MLFLOW_TRACKING_PASSWORD")}
    env.update({"PYTHONPATH": str(ROOT), "EXPAT_DATA_CACHE": str(shared / "cache"), "RAY_USAGE_STATS_ENABLED": "0",
                "MLFLOW_DISABLE_TELEMETRY": "true"})
    if token_file is not None:
        env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)})
    return env


@pytest.fixture(scope="module")
def module_auth_server(tmp_path_factory):
    """One basic-auth server for the module (each test logs its own experiment), stopped at the end."""
    folder = tmp_path_factory.mktemp("auth") / "mlflow-server"  # its stores, artifacts and auth config
    auth = start_auth_server(folder, folder.parent / "mlflow-server.log")
    try:
        yield auth
    finally:
        auth.server.stop()


@pytest.fixture
def auth_server(module_auth_server, monkeypatch):
    """MLflow's basic-auth server, running (a test may have stopped it); this test process reads it as the study
    account."""
    if module_auth_server.server.proc is None:
        module_auth_server.server.start()
    for key, value in module_auth_server.credentials().items():
        monkeypatch.setenv(key, value)
    return module_auth_server


def processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


class RayNode:
    """`ray start ... --block`: the node's processes share the process group of this one command, and Ray's
    reaper ends them when it exits; ``stop`` sends SIGTERM (Ray drains the node), then SIGKILL to the group."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str]):
        self.args, self.log, self.env = args, log, env
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([RAY, "start", *self.args, "--block"], stdout=log, stderr=subprocess.STDOUT,
                                         env=self.env, start_new_session=True)

    def stop(self, timeout: float = 60) -> None:
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                self.proc.poll()
                try:
                    os.killpg(self.proc.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.3)
            else:
                continue
            break
        self.proc.poll()
        self.proc = None


def node_args(temp_dir: Path) -> list[str]:
    """Per-node options: 1 CPU, a small object store, its own temp dir and ports (two nodes on one machine)."""
    return ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0", "--object-store-memory=100000000",
            f"--temp-dir={temp_dir}", f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"]


def alive_nodes(address: str, env: dict[str, str]) -> list[str]:
    probe = ("import json, ray; ray.init(address=%r, logging_level='ERROR', log_to_driver=False); "
             "print(json.dumps([n['NodeID'] for n in ray.nodes() if n['Alive']])); ray.shutdown()" % address)
    try:
        out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return []
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else []


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


@pytest.fixture
def ray_cluster(tmp_path):
    """A head and a worker node on 127.0.0.1; torn down (and checked for leftovers) after the test."""
    shared = tmp_path / "shared"
    shared.mkdir()
    base = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))  # short: Ray's Unix socket paths must stay < 108 chars
    # The token is made on the head and copied to each other machine (here: a token file per "machine").
    token = make_ray_token(tmp_path / "head-home")
    head_env = base_env(shared, tmp_path / "head-home" / ".ray" / "auth_token")
    worker_env = base_env(shared, install_token(token, tmp_path / "worker-home" / ".ray" / "auth_token"))
    env = base_env(shared, install_token(token, tmp_path / "driver-home" / ".ray" / "auth_token"))
    port = free_port()
    address = f"127.0.0.1:{port}"
    head = RayNode(["--head", f"--port={port}", "--include-dashboard=false", "--disable-usage-stats",
                    *node_args(base / "head")],
                   tmp_path / "ray-head.log", head_env)
    worker = RayNode([f"--address={address}", *node_args(base / "worker")], tmp_path / "ray-worker.log",
                     worker_env)
    nodes: list[RayNode] = []
    cluster = {"address": address, "env": env, "shared": shared, "base": base, "node_ids": [], "leftovers": None,
               "token": token}

    def teardown():
        for node in reversed(nodes):
            node.stop()
        nodes.clear()
        time.sleep(1)
        cluster["leftovers"] = processes_mentioning(f"{base}/")
        for pid in cluster["leftovers"]:  # ours (their command line names our temp dir): end them one by one
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(base, ignore_errors=True)

    cluster["teardown"] = teardown
    try:
        head.start()
        nodes.append(head)
        deadline = time.monotonic() + 120
        while not port_open(port):  # the head's GCS listens: a worker node can join (cheaper than a Ray client)
            assert head.proc.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "ray-head.log").read_text()[-3000:]
            time.sleep(0.5)
        worker.start()
        nodes.append(worker)
        while len(ids := alive_nodes(address, env)) < 2:
            assert worker.proc.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "ray-worker.log").read_text()[-3000:]
            time.sleep(2)
        cluster["node_ids"] = ids
        yield cluster
    finally:
        teardown()


def write_study(path: Path, body: dict) -> Path:
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def study_runs(client: MlflowClient, name: str):
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return ([r for r in runs if r.data.tags.get("kind") == "study"],
            [r for r in runs if r.data.tags.get("kind") == "trial"])


def study_on_cluster(study: Path, address: str, tracking_uri: str, storage: Path, env: dict[str, str],
                     timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ablation.run", "--study", str(study), "--address", address,
                           "--tracking-uri", tracking_uri, "--storage-path", str(storage)],
                          cwd=study.parent, env=env, capture_output=True, text=True, timeout=timeout)


def test_study_on_two_node_ray_cluster_with_mlflow_server(ray_cluster, auth_server, tmp_path):
    shared, env = ray_cluster["shared"], {**ray_cluster["env"], **auth_server.credentials()}
    server = auth_server.server
    try:
        driver_dir = tmp_path / "driver"
        driver_dir.mkdir()
        study = write_study(driver_dir / "cluster_tiny.yaml", TINY)
        # A driver without the cluster's token, or with another token, is refused in one line and runs nothing.
        # Both drivers at once, each giving up after two of Ray's connection attempts (20 by default, 2 s apart).
        stranger = tmp_path / "stranger-home" / ".ray" / "auth_token"
        few_tries = {"RAY_NUM_REDIS_GET_RETRIES": "2"}
        strangers = {"no token": {"RAY_AUTH_TOKEN_PATH": str(stranger.parent / "missing"), **few_tries},
                     "wrong token": {"RAY_AUTH_TOKEN_PATH": str(install_token("0" * 64, stranger)), **few_tries}}
        with ThreadPoolExecutor(len(strangers)) as pool:
            refusals = {name: pool.submit(study_on_cluster, study, ray_cluster["address"], server.url,
                                          shared / "refused", {**env, **token_env})
                        for name, token_env in strangers.items()}
        for name, future in refusals.items():
            refused = future.result()
            lines = refused.stderr.strip().splitlines()
            assert refused.returncode == 2 and len(lines) == 1, (name, refused.stderr[-3000:])
            assert ray_cluster["address"] in lines[0] and "token" in lines[0], (name, lines[0])
        assert MlflowClient(server.url).get_experiment_by_name("cluster_tiny") is None
        t0 = time.monotonic()
        proc = study_on_cluster(study, ray_cluster["address"], server.url, shared / "ray_results", env)
        elapsed = time.monotonic() - t0
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "2/2 trials finished, 0 failed" in proc.stdout

        client = MlflowClient(server.url)
        parents, children = study_runs(client, "cluster_tiny")
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert sorted(r.info.run_name for r in children) == ["expat/seed=0", "triplet/seed=0"]
        placement = {r.info.run_name: r.data.tags["node_id"] for r in children}
        # One trial on each node (1 CPU per node, 1 CPU per trial, both trials at once).
        assert sorted(placement.values()) == sorted(ray_cluster["node_ids"]), (placement, ray_cluster["node_ids"])
        for run in children:
            assert run.info.status == "FINISHED"
            for key in HISTORY_KEYS:
                assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2], key
        # Artifacts went through the server into its artifact folder (trial configs and the study report).
        stored = {p.name for p in (server.artifacts_dir / parents[0].info.experiment_id).rglob("*")
                  if p.is_file()}
        assert "config.yaml" in stored and "report.md" in stored

        # Ray results of both trials, from both nodes, in the shared storage path.
        ray_path = Path(parents[0].data.tags["study.ray_path"])
        assert ray_path.parent == shared / "ray_results"
        trial_dirs = [d for d in ray_path.iterdir() if d.is_dir() and (d / "result.json").exists()]
        assert len(trial_dirs) == 2
        for d in trial_dirs:
            results = [json.loads(line) for line in (d / "result.json").read_text().splitlines()]
            assert [r["training_iteration"] for r in results] == [1, 2]
            assert all(r.get("node_ip") and r.get("hostname") for r in results)  # one machine: the same for both
            assert list(d.glob("checkpoint_*")), f"no checkpoint in {d}"
            assert not (d / "error.txt").exists()
        print(f"\ncluster study: {elapsed:.0f} s; trials per node: "
              f"{ {n[:8]: list(placement.values()).count(n) for n in ray_cluster['node_ids']} }")
    finally:
        ray_cluster["teardown"]()
    assert ray_cluster["leftovers"] == [], "Ray processes left after the cluster was stopped"


def test_tracking_server_restart_mid_study_loses_nothing(tmp_path, auth_server):
    """The server goes down while both trials train and comes back ~10 s later: the study finishes, no trial fails
    or is retried, and every epoch's metrics are in MLflow exactly once.

    MLflow's own HTTP retries (7, backing off up to ~4 min) would ride out such an outage alone; they are cut to 2
    here (~4 s) so that ablation's retry loop must carry the rest, and its messages are read in the trial logs."""
    # The trials' next epochs end while the server is down (a trial waits in the retry loop, with its epoch's
    # metrics stamped, until the server is back), and the outage outlasts MLflow's own ~4 s of retries.
    epochs, down_s = 4, 10
    server = auth_server.server
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # this study's Ray logs (short: socket paths)
    env = {**base_env(tmp_path), **auth_server.credentials(), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
           "RAY_TMPDIR": str(ray_tmp), "HOME": str(tmp_path / "home")}  # HOME: where the local Ray writes its token
    body = {**TINY, "overrides": {**TINY["overrides"], "solver.epochs": epochs}}
    study = write_study(tmp_path / "restart_tiny.yaml", body)
    out, err = open(tmp_path / "driver.out", "w"), open(tmp_path / "driver.err", "w")
    proc = subprocess.Popen([sys.executable, "-m", "ablation.run", "--study", str(study), "--num-cpus", "2",
                             "--tracking-uri", server.url, "--storage-path", str(tmp_path / "ray_results"),
                             "--no-report"],
                            cwd=tmp_path, env=env, stdout=out, stderr=err, start_new_session=True)
    try:
        client = MlflowClient(server.url)
        wait_until_trials_train(client, "restart_tiny", proc, tmp_path / "driver.err")
        t_down = time.time()
        server.stop()
        time.sleep(down_s)
        server.start()  # same port, same SQLite stores (runs, users) and artifact folder
        t_up = time.time()
        rc = proc.wait(timeout=600)
        stdout = (tmp_path / "driver.out").read_text()
        assert rc == 0, stdout[-3000:] + (tmp_path / "driver.err").read_text()[-3000:]
        assert "2/2 trials finished, 0 failed" in stdout

        parents, children = study_runs(client, "restart_tiny")
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
        during_outage = 0
        for run in children:
            assert "failure_reason" not in run.data.tags
            for key in HISTORY_KEYS:
                history = client.get_metric_history(run.info.run_id, key)
                assert sorted(m.step for m in history) == list(range(1, epochs + 1)), (run.info.run_name, key)
                during_outage += sum(t_down * 1000 <= m.timestamp <= t_up * 1000 for m in history)
        # The outage really hit logging: metrics stamped while the server was down arrived afterwards.
        assert during_outage > 0, "no metric was logged while the server was down; the test did not test anything"
        # No trial failed and was retried by Tune: it rode out the outage in place.
        ray_path = Path(parents[0].data.tags["study.ray_path"])
        assert not list(ray_path.rglob("error.txt"))
        # ablation's retry loop carried the calls that MLflow's HTTP retries gave up on, and said so.
        logs = "".join(p.read_text(errors="replace") for p in ray_tmp.rglob("worker-*.err"))
        waits = re.findall(r"tracking store available again after (\d+) s", logs)
        assert "tracking store unavailable" in logs and waits, logs[-3000:]
        print(f"\nserver down {t_up - t_down:.1f} s; {during_outage} metric values logged during the outage; "
              f"{len(waits)} calls retried by ablation (waited {', '.join(waits)} s); all {len(children)} runs "
              f"FINISHED with {epochs} steps per metric")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out.close()
        err.close()
        server.stop()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_unreachable_tracking_server_fails_before_training(tmp_path):
    """A wrong or stopped server: a one-line error within seconds (not MLflow's minutes of HTTP retries)."""
    study = write_study(tmp_path / "nowhere.yaml", TINY)
    port = free_port()  # nothing listens there
    proc = subprocess.run([sys.executable, "-m", "ablation.run", "--study", str(study),
                           "--tracking-uri", f"http://127.0.0.1:{port}", "--storage-path", str(tmp_path / "rr")],
                          cwd=tmp_path, env=base_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    # The driver's own probe refused it (its message, one line), not MLflow's retrying client, and before the
    # storage path was touched.
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"tracking server http://127.0.0.1:{port} is not reachable" in lines[0], proc.stderr
    assert "Retry" not in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "rr").exists()
