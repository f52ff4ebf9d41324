"""Shared scaffolding of the study tests: the tiny study, one launcher of ``python -m ablation.run`` in a
subprocess, and readers of what a study leaves behind (its MLflow runs, Ray's per-trial results)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

from inprocess import run_main

ROOT = Path(__file__).resolve().parent.parent

# generated SYSU-MM01-layout data, 16 identities, 3 steps per epoch, 32x16 images (no test of a study measures
# accuracy; an epoch takes half the time of the quick preset's 64x32): a trial trains in seconds on one CPU
TINY = {
    "base": "quick",
    "overrides": {"solver.epochs": 1, "solver.max_steps_per_epoch": 3, "eval.every": 1, "eval.trials": 2,
                  "data.synthetic_ids": 16, "data.height": 32, "data.width": 16},
    "axes": {"loss.type": ["triplet", "expat"]},
    "seeds": [0],
    "baseline": {"loss.type": "triplet"},
    "metric": "rank1",
    "resources": {"cpu": 1},
}


def with_overrides(body: dict, **overrides) -> dict:
    """``body`` with dotted ``overrides`` added (``solver__epochs=4`` stands for ``solver.epochs``)."""
    return {**body, "overrides": {**body["overrides"], **{k.replace("__", "."): v for k, v in overrides.items()}}}


def study_cmd(workdir: Path, name: str, body: dict, *extra: str, tracking: Path | None = None) -> list[str]:
    """The command line of ``python -m ablation.run`` on ``body`` (written to ``workdir/<name>.yaml``) with 2 CPUs,
    the MLflow store ``tracking`` (default ``workdir/mlflow.db``) and Ray's results under ``workdir/ray_results``."""
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**body, "name": name}))
    return [sys.executable, "-m", "ablation.run", "--study", str(path), "--num-cpus", "2",
            "--tracking-uri", str(tracking or workdir / "mlflow.db"), "--storage-path", str(workdir / "ray_results"),
            *extra]


def study_env(workdir: Path, data_cache: Path | None = None) -> dict:
    """This environment with the project on the path and the data cache (default ``workdir/cache``)."""
    return {**os.environ, "EXPAT_DATA_CACHE": str(data_cache or workdir / "cache"), "PYTHONPATH": str(ROOT)}


def run_study(workdir: Path, name: str, body: dict, *extra: str, data_cache: Path | None = None,
              tracking: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """The study of ``study_cmd`` run to its end; the report lands in ``workdir/outputs``."""
    return subprocess.run(study_cmd(workdir, name, body, *extra, tracking=tracking), cwd=workdir,
                          env=study_env(workdir, data_cache), capture_output=True, text=True, timeout=timeout)


def process_ray() -> None:
    """A local Ray for this test process (2 CPUs, token authentication as Ray ships it), started by the first
    in-process study and joined by the next ones (``ablation.ray_start``); stopped when the process exits. Its
    trial workers inherit this process's environment as it is now: the session's data cache (tests/conftest.py)
    and the project on their path."""
    import atexit

    import ray

    from ablation.ray_start import init_local
    if ray.is_initialized():
        return
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *([saved] if saved else [])])
    try:
        init_local(num_cpus=2)  # as a study's driver starts one, without its SIGTERM handler
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = saved
    atexit.register(ray.shutdown)


def run_study_here(workdir: Path, name: str, body: dict, *extra: str, tracking: Path | None = None,
                   timeout: int = 600) -> subprocess.CompletedProcess:
    """``run_study`` through ``python -m ablation.run``'s ``main`` in this process, on ``process_ray``: no
    interpreter, imports or Ray to start per study. For the tests that read what a study leaves behind; the data
    cache is the session's (the trials' workers read the same one). Signals, process-wide hooks and a fresh
    interpreter's own behaviour stay with ``run_study``."""
    process_ray()
    cmd = study_cmd(workdir, name, body, *extra, tracking=tracking)
    return run_main("ablation.run", cmd[3:], cwd=workdir, timeout=timeout)


def start_study(workdir: Path, name: str, body: dict, *extra: str, data_cache: Path | None = None,
                tracking: Path | None = None, env: dict | None = None) -> subprocess.Popen:
    """``run_study`` in the background, in its own session (``kill_session`` ends what is left of it), output to
    ``workdir/<name>.log``; ``env`` is added to ``study_env``'s environment."""
    log = open(workdir / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(study_cmd(workdir, name, body, *extra, tracking=tracking), cwd=workdir,
                            env={**study_env(workdir, data_cache), **(env or {})}, stdout=log,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def kill_session(proc: subprocess.Popen) -> None:
    """Stop whatever is left of a study started by ``start_study`` (Ray processes of a stopped driver)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_until(condition, proc: subprocess.Popen, timeout: float = 400, what: str = "the condition"):
    """Poll ``condition()`` until it returns something true (returned), while the study ``proc`` runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        assert proc.poll() is None, f"study ended early with {proc.returncode} before {what}"
        time.sleep(0.2)
    raise AssertionError(f"no {what} within {timeout} s")


def output(proc: subprocess.CompletedProcess) -> str:
    """The end of a study's stdout and stderr, for assertion messages."""
    return proc.stdout[-3000:] + proc.stderr[-3000:]


def runs(tracking: Path, name: str) -> tuple[MlflowClient, list, list]:
    """``(client, parent runs, child runs sorted by run name)`` of study ``name`` in the SQLite store ``tracking``."""
    client = MlflowClient(f"sqlite:///{tracking}")
    exp = client.get_experiment_by_name(name)
    found = client.search_runs([exp.experiment_id], max_results=1000)
    return (client, [r for r in found if r.data.tags.get("kind") == "study"],
            sorted((r for r in found if r.data.tags.get("kind") == "trial"), key=lambda r: r.info.run_name))


def study_runs(workdir: Path, name: str) -> tuple[MlflowClient, list, list]:
    """``runs`` of study ``name`` in ``workdir/mlflow.db`` (where ``run_study`` logs by default)."""
    return runs(workdir / "mlflow.db", name)


def history(client: MlflowClient, run_id: str, key: str) -> list:
    """The metric's history ordered by step (MLflow returns it in no promised order)."""
    return sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))


def result_lines(trial_dir: Path) -> list[dict]:
    """Tune's ``result.json`` of one trial folder: one dict per reported result (a line being written is left out)."""
    path = trial_dir / "result.json"
    lines = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return lines


def ray_trials(ray_path: str | Path) -> dict[str, list[dict]]:
    """Tune trial id -> the trial's results (``result.json`` lines) in one Ray experiment folder."""
    trials = {}
    for trial_dir in sorted(Path(ray_path).glob("run_trial_*")):
        lines = result_lines(trial_dir)
        if lines:
            trials[lines[0]["trial_id"]] = lines
    return trials
