"""A tiny Optuna TPE + ASHA study end to end: ASHA's early stops are recorded on the stopped trials' runs only.

Why at least one trial is stopped every time, and the same ones: ASHA (grace period 1, reduction factor 2, max_t =
3 epochs) has rungs at epochs 1 and 2; a trial reaching a rung is stopped when its value is worse than the median of
the values already recorded there. Trials run one at a time (``max_concurrent: 1``), so the order in which they
reach the rungs is the order Optuna suggests them, fixed by ``search.seed``; training is deterministic given the
config and seed. The study's metric is the training loss, which ``loss.metric_weight`` (sampled over four orders of
magnitude) scales apart, so no two trials tie. With these seeds two of the four trials are stopped (at epochs 1 and
2) and two train all 3 epochs; the test asserts that some are stopped and some are not, so a change that made every
trial run to the end (no scheduler) or stop fails it.

ASHA also says STOP to a trial at max_t, on its last epoch's result; the trial then trained every epoch and must
not be tagged ``stopped_early`` (it was, when the driver got that decision before the worker closed the run).
"""
import pytest

from studies import TINY, history, output, ray_trials, run_study_here, study_runs, with_overrides

pytestmark = pytest.mark.slow
EPOCHS = 3
BODY = {**with_overrides(TINY, solver__epochs=EPOCHS, loss__type="expat"), "axes": {}, "baseline": {},
        "search": {"algorithm": "optuna", "num_samples": 4, "seed": 0, "refit_seeds": [0],
                   "space": {"loss.metric_weight": {"type": "loguniform", "low": 0.01, "high": 100.0}}},
        "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
        "metric": "loss", "mode": "min", "max_concurrent": 1}


def test_asha_stopped_trials_are_tagged_and_trained_fewer_epochs(tmp_path):
    proc = run_study_here(tmp_path, "asha", BODY, "--no-report")  # read here: the runs and Ray's results
    assert proc.returncode == 0, output(proc)
    client, parents, children = study_runs(tmp_path, "asha")
    search = [r for r in children if r.data.tags.get("phase") == "search"]
    refit = [r for r in children if r.data.tags.get("phase") == "refit"]
    assert len(search) == 4 and len(refit) == 1
    assert all(r.info.status == "FINISHED" and "failure_reason" not in r.data.tags for r in children)
    epochs = {r.info.run_id: [m.step for m in history(client, r.info.run_id, "loss")] for r in children}
    for run in children:  # whatever a trial trained, each epoch is logged once, from 1 on
        assert epochs[run.info.run_id] == list(range(1, len(epochs[run.info.run_id]) + 1)), run.info.run_name
    stopped = [r for r in search if r.data.tags.get("stopped_early") == "true"]
    completed = [r for r in search if "stopped_early" not in r.data.tags]
    assert stopped and completed, {r.info.run_name: epochs[r.info.run_id] for r in search}
    assert len(stopped) + len(completed) == len(search)  # the tag, where set, says "true"
    # Ray's view: a stopped trial reported fewer epochs than the schedule, a completed one all of them
    ray = ray_trials(parents[0].data.tags["study.ray_path"])
    for run in stopped:
        assert len(epochs[run.info.run_id]) < EPOCHS, run.info.run_name
        assert ray[run.data.tags["trial_id"]][-1]["epoch"] < EPOCHS
    for run in completed:
        assert len(epochs[run.info.run_id]) == EPOCHS, run.info.run_name
        assert ray[run.data.tags["trial_id"]][-1]["epoch"] == EPOCHS
    # the refit trial is not under ASHA: it trains every epoch and is never tagged as stopped
    assert len(epochs[refit[0].info.run_id]) == EPOCHS and "stopped_early" not in refit[0].data.tags
