"""What every command-line tool (``core.train``, ``ablation.run``, ``reports.build``, ``ablation.ui_check``) shares:
one-line errors, short warnings and an argument parser whose usage errors are one line with exit status 2.

Imports nothing heavy (no torch, Ray or MLflow), so a CLI can refuse bad arguments before loading any of them.
"""
from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import warnings

BAD_INPUT = 2  # the exit status of every CLI for input it refuses (arguments, config, study file, data)

_stopped_by = {"signal": signal.SIGINT}  # the signal that stopped this process's command (SIGTERM goes Ctrl-C's way)


def one_line(exc: BaseException | str) -> str:
    """An error as the single stderr line the CLIs print (no traceback for a known bad input)."""
    return " ".join(str(exc).split())


def refuse(exc: BaseException | str, prefix: str = "error") -> int:
    """Print ``prefix: <the error in one line>`` on stderr; the exit status for refused input."""
    print(f"{prefix}: {one_line(exc)}", file=sys.stderr)
    return BAD_INPUT


def short_warnings() -> None:
    """Print warnings (skipped images, excluded identities) as ``warning: ...`` without source lines."""
    warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors are one stderr line naming the problem and pointing at
    ``--help``, with exit status 2 (argparse's own prints the usage block and then the error)."""

    def error(self, message: str):
        self.exit(BAD_INPUT, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def _on_sigterm(signum, frame) -> None:
    """SIGTERM (what SLURM, Kubernetes, systemd, ``timeout`` and ``kill`` send) runs the SIGINT handler in force at
    that moment: one stop path for both signals (Tune's graceful stop during a study's fit, KeyboardInterrupt
    elsewhere). A process whose SIGINT is ignored (started in the background by a shell script, or under
    ``nohup``) still stops on SIGTERM."""
    _stopped_by["signal"] = signum
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


def sigterm_as_ctrl_c() -> None:
    """Install the SIGTERM handler (again: ``ray.init`` replaces it with one that exits at once)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


@contextlib.contextmanager
def stop_like_ctrl_c():
    """Within the block SIGTERM stops the command as Ctrl-C does; the previous handler is back afterwards (a CLI's
    ``main`` called in-process leaves its caller's handler alone)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    _stopped_by["signal"] = signal.SIGINT
    sigterm_as_ctrl_c()
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def interrupted_status() -> int:
    """The exit status of a stopped command: 128 + the signal, 130 for Ctrl-C and 143 for SIGTERM."""
    return 128 + _stopped_by["signal"]


def stop_signal_name() -> str:
    return "SIGTERM" if _stopped_by["signal"] == signal.SIGTERM else "Ctrl-C"
