"""Faults a long study must survive, provoked for real: real Ray, real MLflow (SQLite), real processes killed.

- trials that raise (weights unreadable on the trial's node) or whose loss turns NaN: FAILED with the reason, the study goes on, the report lists them;
- a trial's worker SIGKILLed mid-training: Tune retries it from its last checkpoint into the same MLflow run;
- the study driver stopped by SIGINT or SIGKILL: ``--resume`` finishes only what was unfinished and the result
  equals an uninterrupted study's;
- two studies logging to one SQLite store at once;
- an unwritable tracking store or storage path: refused before any training.
"""
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from inprocess import run_main
from studies import ROOT, TINY as E2E_TINY
from studies import (kill_session, result_lines, run_study, run_study_here, runs, start_study, study_cmd,
                     study_env)

pytestmark = pytest.mark.slow
EPOCHS = 2
# The end-to-end tests' tiny study, for EPOCHS epochs and three losses.
# Every epoch's checkpoint goes to Tune, so a killed or interrupted trial continues from the epoch it reached.
TINY = {**E2E_TINY, "overrides": {**E2E_TINY["overrides"], "solver.epochs": EPOCHS},
        "axes": {"loss.type": ["triplet", "bnneck", "expat"]}, "checkpoint_interval_s": 0}
# The faulty study's epochs: its healthy trial is killed after its first and must go on to the last.
KILLED_EPOCHS = 3


def steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, key)]


def wait_for_result(storage: Path, pattern: str, proc: subprocess.Popen, min_iteration: int = 1,
                    timeout: float = 400) -> tuple[Path, dict]:
    """Poll Tune's result.json files until the trial matching ``pattern`` has reported ``min_iteration``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"study ended early with {proc.returncode}"
        for trial_dir in storage.glob(f"*/{pattern}"):
            lines = result_lines(trial_dir)
            if lines and lines[-1]["training_iteration"] >= min_iteration:
                return trial_dir, lines[-1]
        time.sleep(0.1)
    raise AssertionError(f"no result for {pattern} within {timeout}s")


def results_section(report: str) -> str:
    """The report's tables (results and failed trials), without run ids, URIs and the generation time."""
    return report[report.index("## Results"):report.index("## Plots")]


def assert_complete(client: MlflowClient, run, epochs: int = EPOCHS) -> None:
    """FINISHED, and each per-epoch metric logged exactly once per epoch 1..epochs."""
    assert run.info.status == "FINISHED", (run.info.run_name, run.info.status, run.data.tags.get("failure_reason"))
    for key in ("rank1", "mAP", "loss"):
        assert steps(client, run.info.run_id, key) == list(range(1, epochs + 1)), (run.info.run_name, key)


def model_metrics(run) -> dict:
    """The final metrics that depend on the model only (not the wall-clock ones: images_per_sec, time_epoch)."""
    return {k: v for k, v in run.data.metrics.items() if k not in ("images_per_sec", "time_epoch")}


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data_cache")


# ------------------------------------------------------------------------------------------- failing trials


# Installed in the study's processes through PYTHONPATH (Ray's trial workers inherit the driver's environment): in
# every process but the driver, opening the file named by EXPAT_TEST_EIO_FILE fails with an I/O error, as a disk or
# network file system failing on a trial's node would. The driver's up-front check of model.pretrained reads the
# file, so it passes; the trials fail at run time, when they build the model.
_EIO_HOOK = """
import errno, os, sys

def _eio(event, args):
    if event == "open" and args and isinstance(args[0], (str, os.PathLike)) \\
            and os.fspath(args[0]) == os.environ.get("EXPAT_TEST_EIO_FILE"):
        main = getattr(sys.modules.get("__main__"), "__spec__", None)
        if getattr(main, "name", None) != "ablation.run":
            raise OSError(errno.EIO, os.strerror(errno.EIO), os.fspath(args[0]))

sys.addaudithook(_eio)
"""


@pytest.fixture(scope="module")
def faulty(tmp_path_factory, data_cache):
    """One study, four rows, three faults (one launch for what would take two):

    - pretrained weights that pass the driver's check but cannot be read on the trial's node (an I/O error at run
      time) make the trainer raise: a generic error, so Tune retries it (max_failures) before giving up;
    - loss.metric_weight=1e39 overflows the loss to inf: NonFiniteLossError, which a retry cannot fix, so the trial
      ends at once;
    - the healthy row's Ray worker is SIGKILLed once it has reported its first epoch (the only trial that reports
      one): Tune retries it from its last checkpoint.
    """
    import torch

    from core.models import ResNetBackbone
    tmp_path = tmp_path_factory.mktemp("faulty")
    weights = tmp_path / "resnet18.pth"
    torch.save(ResNetBackbone("resnet18").state_dict(), weights)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_EIO_HOOK)
    body = {**TINY, "overrides": {**TINY["overrides"], "solver.epochs": KILLED_EPOCHS},
            "axes": {"loss.type": ["expat"], "loss.metric_weight": [1.0, 1e39], "model.pretrained": ["", str(weights)]},
            "baseline": {}}
    proc = start_study(tmp_path, "faulty", body, data_cache=data_cache,
                       env={"EXPAT_TEST_EIO_FILE": str(weights), "PYTHONPATH": os.pathsep.join([str(hook), str(ROOT)])})
    try:
        trial_dir, first = wait_for_result(tmp_path / "ray_results", "run_trial_*", proc)
        os.kill(first["pid"], signal.SIGKILL)  # the Ray worker running the healthy trial, mid-training
        code = proc.wait(timeout=600)
    finally:
        kill_session(proc)
    return {"workdir": tmp_path, "weights": weights, "code": code, "log": (tmp_path / "faulty.log").read_text(),
            "trial_dir": trial_dir, "first": first}


def test_raising_and_nan_trials_fail_with_a_reason_and_the_study_goes_on(faulty):
    tmp_path, weights = faulty["workdir"], faulty["weights"]
    assert faulty["code"] == 0, faulty["log"][-3000:]
    assert "1/4 trials finished, 3 failed" in faulty["log"]
    client, parents, children = runs(tmp_path / "mlflow.db", "faulty")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED" and len(children) == 4
    by = {(r.data.params["loss.metric_weight"], r.data.params["model.pretrained"]): r for r in children}
    assert_complete(client, by["1.0", ""], epochs=KILLED_EPOCHS)
    nan = by["1e+39", ""]
    assert nan.info.status == "FAILED"
    assert nan.data.tags["failure_reason"].startswith("NonFiniteLossError: loss became inf")
    for key in (("1.0", str(weights)), ("1e+39", str(weights))):
        raised = by[key]
        assert raised.info.status == "FAILED"
        reason = raised.data.tags["failure_reason"]
        assert reason.startswith("OSError: [Errno 5] Input/output error") and "\n" not in reason, reason
        assert raised.data.tags.get("failure_permanent") != "true"  # generic: retried, not given up at once
        assert "failure_traceback.txt" in [a.path for a in client.list_artifacts(raised.info.run_id)]
    report = (tmp_path / "outputs" / "reports" / "faulty" / "report.md").read_text()
    failed = report[report.index("## Failed trials"):]
    assert failed.count("| FAILED |") == 3 and "NonFiniteLossError" in failed and "Input/output error" in failed


# ------------------------------------------------------------------------------------------- worker killed


def test_killed_worker_is_retried_from_its_checkpoint_into_the_same_run(faulty):
    assert faulty["code"] == 0, faulty["log"][-3000:]
    # Tune restarted the trial in a new worker from its last checkpoint: epochs continue, none is trained twice.
    lines = result_lines(faulty["trial_dir"])
    first = faulty["first"]
    killed_at = first["epoch"]
    assert killed_at < KILLED_EPOCHS, "the trial ended before its worker was killed: the test tested nothing"
    assert [r["epoch"] for r in lines] == list(range(1, KILLED_EPOCHS + 1))
    assert {r["pid"] for r in lines[killed_at:]} and first["pid"] not in {r["pid"] for r in lines[killed_at:]}
    client, parents, children = runs(faulty["workdir"] / "mlflow.db", "faulty")
    healthy = [r for r in children if (r.data.params["loss.metric_weight"], r.data.params["model.pretrained"])
               == ("1.0", "")]
    assert len(children) == 4 and len(healthy) == 1  # the retry continued the trial's run: no second run
    assert_complete(client, healthy[0], KILLED_EPOCHS)
    assert parents[0].info.status == "FINISHED"


# ------------------------------------------------------------------------------------------- driver interrupted


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_cache):
    """The same study, run without interruption: what a resumed study must end up equal to."""
    workdir = tmp_path_factory.mktemp("uninterrupted")
    proc = run_study_here(workdir, "resumable", TINY)  # in this process: the same generated data, another cache
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client, parents, children = runs(workdir / "mlflow.db", "resumable")
    report = (workdir / "outputs" / "reports" / "resumable" / "report.md").read_text()
    return {"names": [r.info.run_name for r in children], "metrics": [model_metrics(r) for r in children],
            "report": results_section(report)}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_driver_resumes_only_the_unfinished_trials(tmp_path, data_cache, uninterrupted, sig):
    db = tmp_path / "mlflow.db"
    proc = start_study(tmp_path, "resumable", TINY, data_cache=data_cache)
    try:
        # Two trials run at a time: once the third has reported an epoch, at least one trial has finished.
        wait_for_result(tmp_path / "ray_results", "run_trial_*_2_trial_index=2_*", proc)
        proc.send_signal(sig)
        code = proc.wait(timeout=300)
        log = (tmp_path / "resumable.log").read_text()
        client, parents, children = runs(db, "resumable")
        if sig == signal.SIGINT:
            # Tune stops the trials and saves its state; the driver closes every run and says how to go on.
            assert code == 130, log[-3000:]
            assert "interrupted:" in log and "--resume" in log and "Traceback" not in log
            assert parents[0].info.status == "FAILED" and parents[0].data.tags["interrupted"] == "true"
            assert all(r.info.status in ("FINISHED", "FAILED") for r in children)
            assert all("--resume" in r.data.tags["failure_reason"] for r in children if r.info.status == "FAILED")
        else:
            assert code == -signal.SIGKILL
            # Tune rewrites its state files in place after every trial checkpoint, and a driver killed meanwhile
            # leaves them empty (seen in this test): make that happen every time, so --resume must repair them.
            for state in (tmp_path / "ray_results").glob("*/*-state-*.json"):
                state.write_bytes(b"")
        finished = {r.info.run_id: (r.info.start_time, r.info.end_time, [
            (m.step, m.timestamp, m.value) for m in client.get_metric_history(r.info.run_id, "rank1")])
            for r in children if r.info.status == "FINISHED"}
        assert finished and len(finished) < len(uninterrupted["names"])

        if sig == signal.SIGKILL:
            # Resumed at once by a new driver: the old driver's Ray processes are still exiting; a new Ray starts
            # anyway.
            resumed = run_study(tmp_path, "resumable", TINY, "--resume", data_cache=data_cache)
        else:  # resumed in this process (on its Ray): what is read is the store and Tune's saved state
            resumed = run_study_here(tmp_path, "resumable", TINY, "--resume")
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    finally:
        kill_session(proc)  # whatever the killed driver left behind
    client, parents, children = runs(db, "resumable")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert [r.info.run_name for r in children] == uninterrupted["names"]  # one run per trial, no duplicate
    for run in children:
        assert_complete(client, run)
        assert "failure_reason" not in run.data.tags
    for run in children:  # trials finished before the interruption were not run again
        if run.info.run_id in finished:
            history = [(m.step, m.timestamp, m.value) for m in client.get_metric_history(run.info.run_id, "rank1")]
            assert (run.info.start_time, run.info.end_time, history) == finished[run.info.run_id]
    # Ray's own results: across the interruption every trial reported each epoch once. (After a SIGKILL, a trial that
    # had ended before Tune saved that is started again and reports its final metrics once more, with no epoch.)
    trial_dirs = list((tmp_path / "ray_results").glob("resumable-*/run_trial_*"))
    assert len(trial_dirs) == len(uninterrupted["names"])
    started_anew = 0
    for trial_dir in trial_dirs:
        lines = result_lines(trial_dir)
        epochs = [r["epoch"] for r in lines if "epoch" in r]
        if sig == signal.SIGKILL and lines and all(r.get("already_ended") == 1 for r in lines):
            # Restored from a saved state older than the trial's first result, Tune starts its result.json anew: it
            # holds the final report alone, no epoch (not trained again; its MLflow run was checked unchanged above)
            started_anew += 1
            continue
        assert epochs == list(range(1, EPOCHS + 1)), (trial_dir.name, epochs)
    assert started_anew <= len(finished)
    # Training is deterministic given (seed, epoch) and resumes exactly from checkpoints: same numbers, same report.
    assert [model_metrics(r) for r in children] == uninterrupted["metrics"]
    report = (tmp_path / "outputs" / "reports" / "resumable" / "report.md").read_text()
    assert results_section(report) == uninterrupted["report"]


def test_ctrl_c_prints_the_resume_hint_and_nothing_from_ray(tmp_path, data_cache):
    """Ctrl-C as a terminal sends it: SIGINT to the driver's whole process group, once a trial has logged an
    epoch (Tune is then stopping running trials). stderr holds the one-line hint only; Ray's notices go to the
    file the hint names."""
    body = {**TINY, "overrides": {**TINY["overrides"], "solver.epochs": 50}, "axes": {"loss.type": ["triplet"]}}
    cmd = study_cmd(tmp_path, "ctrl_c", body, "--no-report")
    with open(tmp_path / "stdout.log", "w") as out, open(tmp_path / "stderr.log", "w") as err:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=study_env(tmp_path, data_cache), stdout=out, stderr=err,
                                start_new_session=True)
        try:
            wait_for_result(tmp_path / "ray_results", "run_trial_*", proc)
            os.killpg(proc.pid, signal.SIGINT)
            code = proc.wait(timeout=300)
        finally:
            kill_session(proc)
    stderr = (tmp_path / "stderr.log").read_text()
    assert code == 130, stderr[-3000:]
    lines = stderr.splitlines()
    resume = shlex.join(["python", "-m", "ablation.run", "--study", str(tmp_path / "ctrl_c.yaml"), "--tracking-uri",
                         str(tmp_path / "mlflow.db"), "--storage-path", str(tmp_path / "ray_results"), "--resume"])
    assert len(lines) == 1 and lines[0].startswith(f"interrupted: 0 of 1 trials ended; run `{resume}`"), stderr[-3000:]
    ray_log = next((tmp_path / "ray_results").glob("ctrl_c-*-interrupted.log"))
    assert str(ray_log) in lines[0] and "Stop signal received" in ray_log.read_text()
    assert "Traceback" not in (tmp_path / "stdout.log").read_text()
    client, parents, children = runs(tmp_path / "mlflow.db", "ctrl_c")
    assert parents[0].info.status == "FAILED" and parents[0].data.tags["interrupted"] == "true"
    assert [r.info.status for r in children] == ["FAILED"]


# ------------------------------------------------------------------------------------------- shared store


def test_drivers_opening_one_new_sqlite_store_at_once_all_succeed(tmp_path):
    """Without a lock, MLflow's schema migrations started by several processes on one new file collide (alembic
    errors in all of them); the first use is serialised, so each driver finds or builds the schema cleanly."""
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    code = "import sys; from ablation.tracking import open_tracking_store; open_tracking_store(sys.argv[1])"
    procs = [subprocess.Popen([sys.executable, "-c", code, uri], cwd=ROOT, env=study_env(tmp_path),
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errors = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _ in errors), [err[-800:] for _, err in errors]
    assert MlflowClient(uri).search_experiments()[0].name == "Default"


def test_two_studies_share_one_sqlite_store(tmp_path, data_cache):
    # Two drivers, each with its own local Ray and 2 concurrent trials, create and write the same new SQLite file.
    db = tmp_path / "shared.db"
    body = {**TINY, "axes": {"loss.type": ["triplet", "expat"]}}
    procs = {name: start_study(tmp_path, name, body, "--no-report", data_cache=data_cache, tracking=db)
             for name in ("study_a", "study_b")}
    try:
        codes = {name: p.wait(timeout=600) for name, p in procs.items()}
    finally:
        for p in procs.values():
            kill_session(p)
    logs = {name: (tmp_path / f"{name}.log").read_text() for name in procs}
    assert codes == {"study_a": 0, "study_b": 0}, {n: log[-3000:] for n, log in logs.items()}
    assert not any("database is locked" in log for log in logs.values())
    for name in procs:
        client, parents, children = runs(db, name)
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert [r.info.run_name for r in children] == ["expat/seed=0", "triplet/seed=0"]
        for run in children:
            assert_complete(client, run)
            assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id


# ------------------------------------------------------------------------------------------- unwritable


@pytest.mark.parametrize("which, where", [
    ("--tracking-uri", "under_file"), ("--tracking-uri", "proc"), ("--storage-path", "under_file"),
])
def test_unwritable_tracking_store_or_storage_path_is_refused_before_training(tmp_path, data_cache, which, where):
    # As root, chmod does not stop writes: a path below a regular file, or in /proc, cannot be written by anyone.
    blocker = tmp_path / "file.txt"
    blocker.write_text("a regular file, not a folder")
    bad = {"under_file": blocker / "sub" / ("mlflow.db" if which == "--tracking-uri" else "ray_results"),
           "proc": Path("/proc") / ("mlflow.db" if which == "--tracking-uri" else "ray_results")}[where]
    cmd = study_cmd(tmp_path, "unwritable", TINY)
    cmd[cmd.index(which) + 1] = str(bad)
    ray_tmp = tmp_path / "ray_tmp"  # where a local Ray would put its session: it must never start
    # in this process: the refusal comes before Ray or any training
    proc = run_main("ablation.run", cmd[3:], cwd=tmp_path,
                    env={"EXPAT_DATA_CACHE": str(data_cache), "RAY_TMPDIR": str(ray_tmp)}, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert ("tracking store" if which == "--tracking-uri" else "storage path") in lines[0]
    assert which in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "ray_results").exists() and not list(tmp_path.glob("outputs"))
    assert not ray_tmp.exists()  # refused before Ray started, so before any trial
