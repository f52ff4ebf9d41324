"""What every command-line tool (``core.train``, ``ablation.run``, ``reports.build``, ``ablation.ui_check``) shares:
one-line errors, short warnings and an argument parser whose usage errors are one line with exit status 2.

Imports nothing heavy (no torch, Ray or MLflow), so a CLI can refuse bad arguments before loading any of them.
"""
from __future__ import annotations

import argparse
import sys
import warnings

BAD_INPUT = 2  # the exit status of every CLI for input it refuses (arguments, config, study file, data)
INTERRUPTED = 130  # the shell's status for a command stopped by Ctrl-C (128 + SIGINT)


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
