"""Live progress of a running study on stderr, as a Ray Tune callback in the driver process.

In a terminal: one tqdm display, redrawn at least every ``REFRESH_S`` seconds, with trials ended / total, how many
finished, run and failed, the best value of the study's metric so far with its run name, elapsed time and ETA
(tqdm's estimate from the trials ended since this driver started). Where stderr is not a terminal (CI, a log
file), one line per finished or failed trial instead, with the same fields, so logs stay readable. Ray's own
status tables are off unless ``--verbose`` asks for them.

Counts come from the trial states Tune passes every step, so a resumed study starts from the trials already ended.
"""
from __future__ import annotations

import dataclasses

import io
import math
import shutil
import sys
import time
from typing import Any, TextIO

from ray import tune
from tqdm import tqdm

from ablation.study import trial_from_config
from ablation.trainable import StudyContext

REFRESH_S = 1.0  # at most this long between redraws of the terminal display (the issue asks for <= 10 s)
# ablation.trainable ends a trial that failed for good (NaN loss, bad data) normally, reporting {"failed": 1}:
# Tune calls it TERMINATED, the study counts it as failed.
FAILED_RESULT_KEY = "failed"
# The terminal display puts counts and times first (a narrow terminal cuts the end of the line) and the counts by
# state after a short bar; the log line reads as a sentence. tqdm writes the postfix as ", <text>".
BAR_FORMAT = "{desc}: {n_fmt}/{total_fmt} ended [{elapsed}<{remaining}] |{bar:10}| "
LINE_FORMAT = "{desc}: {n_fmt}/{total_fmt} ended{postfix} [elapsed {elapsed}, ETA {remaining}]"


def _screen() -> tuple[int, int]:
    """The terminal's columns and lines. tqdm's own probe reads -1 on a terminal that never reported its size
    (``script``, some CI consoles) and then draws nothing; ``shutil`` falls back to $COLUMNS/$LINES, then 80x24."""
    size = shutil.get_terminal_size()
    return size.columns, size.lines


def trial_state(trial) -> str:
    """``finished``, ``failed``, ``running`` or ``pending`` for a Tune ``Trial``."""
    status = trial.status
    if status == "ERROR" or (status == "TERMINATED" and (trial.last_result or {}).get(FAILED_RESULT_KEY)):
        return "failed"
    return {"TERMINATED": "finished", "RUNNING": "running"}.get(status, "pending")


class StudyProgress(tune.Callback):
    """The progress display of one study (``ctx`` names the trials as their MLflow runs are named)."""

    def __init__(self, ctx: StudyContext, stream: TextIO | None = None, refresh_s: float = REFRESH_S):
        # Tune pickles its callbacks into the experiment folder (tuner.pkl): keep no tracking credentials here.
        self.ctx, self.refresh_s = dataclasses.replace(ctx, credentials={}), refresh_s
        self._stream = stream  # None: sys.stderr when the study starts
        self._reset()

    def _reset(self) -> None:
        self.total = 0
        self._bar: tqdm | None = None
        self._ended: set[str] = set()
        self._names: dict[str, str] = {}
        self._last_draw = 0.0

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment state; a stream or a live display cannot be pickled.
        state = dict(self.__dict__)
        state.update(_stream=None, _bar=None, _ended=set(), _names={})
        return state

    # --- Tune hooks -------------------------------------------------------------------------------------------
    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info) -> None:
        self._reset()
        self.total = self.ctx.spec.search_trials  # the display is the search's (or grid's) experiment

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        self.update(trials)

    def on_experiment_end(self, trials: list, **info) -> None:
        self.update(trials, force=True)
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # --- display ----------------------------------------------------------------------------------------------
    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stderr

    @property
    def interactive(self) -> bool:
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def name(self, trial) -> str:
        if trial.trial_id not in self._names:
            try:
                self._names[trial.trial_id] = trial_from_config(self.ctx.spec, trial.config).name
            except (KeyError, IndexError, TypeError):
                self._names[trial.trial_id] = str(trial.trial_id)
        return self._names[trial.trial_id]

    def value(self, trial) -> float | None:
        """The trial's latest value of the study's metric (None when not reported yet, or not a number)."""
        value = (trial.last_result or {}).get(self.ctx.spec.metric)
        return float(value) if isinstance(value, (int, float)) and not math.isnan(value) else None

    def best(self, trials: list) -> tuple[float, str] | None:
        """The best latest value of the study's metric among trials that did not fail, with the trial's name."""
        sign = 1 if self.ctx.spec.mode == "max" else -1
        scored = [(self.value(t), self.name(t)) for t in trials
                  if trial_state(t) in ("finished", "running") and self.value(t) is not None]
        return max(scored, key=lambda vn: sign * vn[0]) if scored else None

    def postfix(self, trials: list) -> str:
        states = [trial_state(t) for t in trials]
        text = (f"{states.count('finished')} finished, {states.count('running')} running, "
                f"{states.count('failed')} failed")
        best = self.best(trials)
        metric = self.ctx.spec.metric
        return text + (f" | best {metric} {best[0]:.2f} ({best[1]})" if best else f" | best {metric}: none yet")

    def _open(self, trials: list) -> None:
        total = max(self.total, len(trials))
        # Trials that ended before this driver started (a resumed study) count, but not towards the rate.
        self._ended = {t.trial_id for t in trials if trial_state(t) in ("finished", "failed")}
        interactive = self.interactive
        self._bar = tqdm(total=total, initial=len(self._ended), desc=f"study {self.ctx.spec.name}", unit="trial",
                         file=self.stream if interactive else io.StringIO(), ncols=_screen()[0], nrows=_screen()[1],
                         bar_format=BAR_FORMAT, mininterval=0, leave=True)

    def update(self, trials: list, force: bool = False) -> None:
        if self._bar is None:
            self._open(trials)
        bar = self._bar
        bar.total = max(bar.total, len(trials))
        newly = [t for t in trials if trial_state(t) in ("finished", "failed") and t.trial_id not in self._ended]
        now = time.monotonic()
        if not (newly or force or now - self._last_draw >= self.refresh_s):
            return
        self._last_draw = now
        self._ended.update(t.trial_id for t in newly)
        bar.set_postfix_str(self.postfix(trials), refresh=False)
        bar.n = len(self._ended)
        if self.interactive:
            bar.ncols, bar.nrows = _screen()  # follows a resized terminal
            bar.bar_format = BAR_FORMAT + bar.postfix.replace("{", "{{").replace("}", "}}")
            bar.refresh()
            return
        for t in newly:  # one line per ended trial
            line = bar.format_meter(**{**bar.format_dict, "bar_format": LINE_FORMAT, "ncols": None})
            print(f"{trial_state(t)} {self.name(t)} ({self.outcome(t)}) -- {line}", file=self.stream, flush=True)

    def outcome(self, trial) -> str:
        """The trial's final metric, or the first line of its failure reason."""
        metric = self.ctx.spec.metric
        if trial_state(trial) == "finished":
            value = self.value(trial)
            return f"no {metric} reported" if value is None else f"{metric} {value:.2f}"
        reason = str((trial.last_result or {}).get("failure_reason") or getattr(trial, "error_msg", None) or "")
        return (reason.strip().splitlines() or ["no reason reported"])[0]
