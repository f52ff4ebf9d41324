"""``--resume`` after an interrupted study: a trial that failed for good is not run again, an unfinished one
continues, and neither Ray's results nor MLflow hold an epoch twice.

One study of two trials: one whose loss overflows at its first step (``loss.metric_weight=1e39``:
NonFiniteLossError, tagged ``failure_permanent``) and one that trains ``EPOCHS`` epochs. The driver is stopped by
SIGTERM, as a scheduler stops a job (it takes the Ctrl-C path, which the fault tests send as SIGINT), while the
second trains, and resumed by the command its one line prints. Tune's saved state then already lists the failed
trial as ended; a driver killed with SIGKILL can leave it listed as running (Tune saves its state after the fact),
and Tune then starts it again on ``--resume``. The test puts the state in that form, so what keeps the trial from training again is the
trial's own check of its MLflow run (``ablation.trainable._report_if_ended``), not Tune's bookkeeping.
"""
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from studies import (TINY, history, kill_session, output, ray_trials, result_lines, start_study, study_env,
                     study_runs, wait_until, with_overrides)

pytestmark = pytest.mark.slow
EPOCHS = 5
GRACE_S = 30  # the time README.md says a stopped study needs between SIGTERM and SIGKILL
BODY = {**with_overrides(TINY, solver__epochs=EPOCHS, loss__type="expat"),
        "axes": {"loss.metric_weight": [1.0, 1e39]}, "baseline": {}, "checkpoint_interval_s": 0}


def trial_progress(storage: Path) -> tuple[bool, int]:
    """(whether a trial reported its failure, the highest epoch another trial reported) in Tune's results."""
    failed, epoch = False, 0
    for trial_dir in storage.glob("*/run_trial_*"):
        for line in result_lines(trial_dir):
            failed |= bool(line.get("failed"))
            epoch = max(epoch, int(line.get("epoch") or 0))
    return failed, epoch


def mark_running(ray_path: str, trial_id: str) -> None:
    """Tune's experiment state as a driver killed before it recorded the trial's end leaves it: still RUNNING
    (which ``Tuner.restore`` turns into PENDING, a trial to run)."""
    states = list(Path(ray_path).glob("experiment_state-*.json"))
    assert states
    for state in states:
        outer = json.loads(state.read_text())
        entries = []
        for trial_json, runtime in outer["trial_data"]:
            trial = json.loads(trial_json)
            if trial["trial_id"] == trial_id:
                assert trial["status"] == "TERMINATED", trial["status"]
                trial["status"] = "RUNNING"
            entries.append([json.dumps(trial, indent=2), runtime])
        outer["trial_data"] = entries
        state.write_text(json.dumps(outer))


def test_resume_skips_the_permanently_failed_trial_and_finishes_the_interrupted_one(tmp_path):
    proc = start_study(tmp_path, "perm", BODY)
    try:
        wait_until(lambda: trial_progress(tmp_path / "ray_results") >= (True, 1), proc,
                   what="a failed trial and an epoch of the other")
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=300)
        stopped_in = time.monotonic() - sent
    finally:
        kill_session(proc)
    log = (tmp_path / "perm.log").read_text()
    assert code == 143, log[-3000:]
    print(f"SIGTERM to exit: {stopped_in:.1f} s")
    assert stopped_in < GRACE_S, f"SIGTERM to exit took {stopped_in:.1f} s"
    (line,) = [line for line in log.splitlines() if line.startswith("interrupted:")]
    assert "Traceback" not in log, log[-3000:]
    resume_line = re.search(r"run `([^`]+)` to finish the rest", line).group(1)
    client, parents, children = study_runs(tmp_path, "perm")
    assert all(r.info.status != "RUNNING" for r in [*parents, *children])
    by_weight = {r.data.params["loss.metric_weight"]: r for r in children}
    broken, good = by_weight["1e+39"], by_weight["1.0"]
    assert broken.info.status == "FAILED" and broken.data.tags["failure_permanent"] == "true"
    assert broken.data.tags["failure_reason"].startswith("NonFiniteLossError")
    assert good.info.status == "FAILED" and "--resume" in good.data.tags["failure_reason"]
    ray_path = parents[0].data.tags["study.ray_path"]
    before = ray_trials(ray_path)
    broken_id, good_id = broken.data.tags["trial_id"], good.data.tags["trial_id"]
    assert before[good_id][-1]["epoch"] < EPOCHS  # interrupted mid-training
    mark_running(ray_path, broken_id)

    # the resume command as printed: the study file's path, the tracking store and the storage path the study used
    words = shlex.split(resume_line)
    assert words[:3] == ["python", "-m", "ablation.run"] and str(tmp_path / "perm.yaml") in words, resume_line
    env = {**study_env(tmp_path), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    resumed = subprocess.run(resume_line, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, output(resumed)
    assert "1/2 trials finished, 1 failed" in resumed.stdout
    client, parents, children = study_runs(tmp_path, "perm")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED" and len(children) == 2
    after = ray_trials(ray_path)
    # Tune did start the failed trial again (from scratch: it has no checkpoint, so Tune wrote its result.json
    # anew), and the trial ended at once: one result saying so, no epoch trained
    assert [line.get("already_ended") for line in before[broken_id]] == [None]
    (again,) = after[broken_id]
    assert again.get("already_ended") == 1 and again.get("failed") == 1 and "epoch" not in again, again
    broken_now = {r.data.tags["trial_id"]: r for r in children}[broken_id]
    assert broken_now.info.status == "FAILED" and broken_now.data.tags["failure_permanent"] == "true"
    assert (broken_now.info.start_time, broken_now.info.end_time) == (broken.info.start_time, broken.info.end_time)
    assert broken_now.data.tags["failure_reason"] == broken.data.tags["failure_reason"]
    assert broken_now.data.metrics == {}
    # the interrupted trial continued from its checkpoint: every epoch once, in Ray's results and in MLflow
    good_now = {r.data.tags["trial_id"]: r for r in children}[good_id]
    assert good_now.info.status == "FINISHED" and "failure_reason" not in good_now.data.tags
    lines = after[good_id]
    assert [line["epoch"] for line in lines] == list(range(1, EPOCHS + 1)), [line["epoch"] for line in lines]
    assert [line["training_iteration"] for line in lines] == list(range(1, EPOCHS + 1))
    assert len(lines) > len(before[good_id])  # trained after the resume, not only before
    for key in good_now.data.metrics:
        assert [m.step for m in history(client, good_now.info.run_id, key)] == list(range(1, EPOCHS + 1)), key
