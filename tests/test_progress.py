"""The study's progress display, driven with stand-ins for Tune's trials (their status, last result and config)."""
import io
import pickle
import re
from types import SimpleNamespace

import pytest

from ablation.progress import REFRESH_S, StudyProgress
from ablation.study import load_study
from ablation.trainable import StudyContext


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(scope="module")
def ctx():
    spec = load_study("loss_comparison")  # 4 algorithms x 3 seeds, rank1 (max)
    return StudyContext(spec=spec, tracking_uri="", experiment_id="", parent_run_id="",
                        git_commit="")


def trial(i, status="PENDING", **result):
    return SimpleNamespace(trial_id=f"t{i}", status=status, config={"trial_index": i}, last_result=result,
                           error_msg=None)


def test_pipe_gets_one_line_per_ended_trial(ctx):
    out = io.StringIO()
    progress = StudyProgress(ctx, stream=out)
    progress.setup(total_num_samples=12)
    trials = [trial(i) for i in range(12)]
    trials[0].status, trials[0].last_result = "RUNNING", {"rank1": 40.0}
    progress.on_step_end(1, trials)
    assert out.getvalue() == ""  # nothing ended yet: nothing printed
    trials[0].status, trials[0].last_result = "TERMINATED", {"rank1": 55.5}
    trials[4].status, trials[4].last_result = "RUNNING", {"rank1": 61.25}
    progress.on_step_end(2, trials)
    trials[1].status = "TERMINATED"
    trials[1].last_result = {"failed": 1, "failure_reason": "NonFiniteLossError: loss is nan"}
    trials[2].status, trials[2].error_msg = "ERROR", "RuntimeError: worker died\nTraceback ..."
    progress.on_step_end(3, trials)
    progress.on_step_end(4, trials)  # no new end: no new line
    progress.on_experiment_end(trials)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("finished triplet/seed=0 (rank1 55.50) -- study loss_comparison: 1/12 ended, "
                               "1 finished, 1 running, 0 failed | best rank1 61.25 (bnneck/seed=1) [elapsed ")
    assert lines[1].startswith("failed triplet/seed=1 (NonFiniteLossError: loss is nan) -- study loss_comparison: "
                               "3/12 ended, 1 finished, 1 running, 2 failed")
    assert lines[2].startswith("failed triplet/seed=2 (RuntimeError: worker died) -- ")
    assert re.search(r"\[elapsed \d\d:\d\d, ETA [^\]]+\]$", lines[0])


def test_terminal_display_redraws_without_news(ctx, monkeypatch):
    assert REFRESH_S <= 10
    out = Terminal()
    clock = [100.0]
    monkeypatch.setattr("ablation.progress.time.monotonic", lambda: clock[0])
    monkeypatch.setenv("COLUMNS", "200")  # the terminal's width: a narrower one cuts the end of the line
    progress = StudyProgress(ctx, stream=out)
    progress.setup(total_num_samples=12)
    trials = [trial(i, "TERMINATED", rank1=50.0 + i) if i < 3 else trial(i, "RUNNING", rank1=10.0)
              for i in range(5)] + [trial(i) for i in range(5, 12)]
    progress.on_step_end(1, trials)  # a resumed study: 3 trials ended before, no line is printed for them
    first = out.getvalue()
    assert "study loss_comparison: 3/12 ended [" in first and "| 3 finished, 2 running, 0 failed" in first
    assert "best rank1 52.00 (triplet/seed=2)" in first and "\n" not in first.rstrip("\n")
    clock[0] += REFRESH_S / 2
    progress.on_step_end(2, trials)
    assert out.getvalue() == first  # nothing changed and the last draw is recent
    clock[0] += REFRESH_S
    progress.on_step_end(3, trials)
    assert len(out.getvalue()) > len(first)  # redrawn: the elapsed time moves
    progress.on_experiment_end(trials)


def test_minimised_metric_and_pickling(ctx):
    spec = ctx.spec.__class__(**{**ctx.spec.__dict__, "metric": "loss", "mode": "min"})
    c = StudyContext(spec=spec, tracking_uri="", experiment_id="", parent_run_id="", git_commit="")
    progress = StudyProgress(c, stream=io.StringIO())
    progress.setup(total_num_samples=12)
    trials = [trial(0, "TERMINATED", loss=2.0), trial(1, "TERMINATED", loss=1.0),
              trial(2, "RUNNING", loss=float("nan"))]
    assert progress.best(trials) == (1.0, "triplet/seed=1")
    progress.on_step_end(1, trials)
    clone = pickle.loads(pickle.dumps(progress))  # Tune pickles its callbacks with the experiment state
    assert clone._bar is None and clone._stream is None
