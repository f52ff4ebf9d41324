"""Ctrl-C (SIGINT) during a study: Tune stops the trials and saves its state, which ``--resume`` continues, and the
driver prints one line saying so. What Ray writes while it stops (Tune's notices that it caught the signal and how
to restore, a traceback from a thread stopped mid-write, the progress display's view of trials it is stopping)
goes to a file instead of the terminal.

Tune installs its own SIGINT handler when ``fit()`` starts; ``QuietOnInterrupt.setup``, which Tune calls after
that, wraps it: the first Ctrl-C points file descriptor 2 at the file, then runs Tune's handler (which restores the
handler from before ``fit()``, so a second Ctrl-C stops the driver at once). ``quiet_after_interrupt`` names the
file and points descriptor 2 back when the study's fit step is over, before the driver prints its line.

SIGTERM reaches the same handler: ``core.cli.stop_like_ctrl_c`` runs the SIGINT handler in force on SIGTERM.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path

from ray import tune

_state: dict = {"path": None, "saved_fd": None}  # this driver process's study: the file, and the real stderr


@contextlib.contextmanager
def quiet_after_interrupt(path: str | Path):
    """Within the block, a Ctrl-C sends stderr to ``path``; stderr is the terminal again when the block ends, and
    the SIGINT handler the block found is back (in a notebook or any process that goes on after the study, Ctrl-C
    raises KeyboardInterrupt again instead of going to the study's stopped Tune)."""
    _state["path"] = Path(path)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    finally:
        _state["path"] = None
        restore_stderr()
        if main and previous is not None:
            signal.signal(signal.SIGINT, previous)


def silence_stderr() -> None:
    """Point descriptor 2 (Python's ``sys.stderr`` and Ray's C++ code alike) at the study's file."""
    path = _state["path"]
    if path is None or _state["saved_fd"] is not None:
        return
    sys.stderr.flush()
    try:
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:
        target = os.open(os.devnull, os.O_WRONLY)
    if os.isatty(2):
        os.write(2, b"\n")  # the line that follows starts after the terminal's ^C
    _state["saved_fd"] = os.dup(2)
    os.dup2(target, 2)
    os.close(target)


def restore_stderr() -> None:
    saved = _state["saved_fd"]
    if saved is None:
        return
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
    _state["saved_fd"] = None


def _wrap_sigint() -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # Tune catches no signal there either
    handler = signal.getsignal(signal.SIGINT)
    if getattr(handler, "quiets_stderr", False):
        return

    def on_interrupt(signum, frame):
        silence_stderr()
        if callable(handler):
            handler(signum, frame)
        elif handler != signal.SIG_IGN:
            raise KeyboardInterrupt

    on_interrupt.quiets_stderr = True
    signal.signal(signal.SIGINT, on_interrupt)


class QuietOnInterrupt(tune.Callback):
    """Tune callback of every study's tuners: see the module's docstring. Holds no state (Tune pickles it)."""

    def setup(self, **info) -> None:
        _wrap_sigint()
