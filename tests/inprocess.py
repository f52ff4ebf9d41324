"""A CLI run inside the test process: ``main(argv)`` of ``python -m <module>`` with its stdout, stderr and exit
status captured, in a given folder and environment, returned as the ``subprocess.CompletedProcess`` a fresh
interpreter would give. It saves the interpreter start and the torch import (seconds each) for the tests of what a
CLI prints; each CLI keeps one fresh-interpreter smoke test (tests/test_cli_smoke.py) for what only a fresh
interpreter catches (import-time failures, ``if __name__ == "__main__"``).

As in a fresh interpreter: warnings are printed to stderr through the CLI's own format (pytest would record them
instead) under Python's default filters, an exception the CLI does not handle propagates (the test fails, as it
would on a traceback), and a CLI that does not return within ``timeout`` seconds fails the test instead of hanging.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import os
import signal
import subprocess
import sys
import warnings


@contextlib.contextmanager
def _fresh_warnings():
    """Python's default warning filters, shown on (the redirected) ``sys.stderr``, restored afterwards."""
    def show(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    with warnings.catch_warnings():
        formatwarning = warnings.formatwarning
        warnings.resetwarnings()
        warnings.simplefilter("default")
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", category)
        warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
        warnings.showwarning = show
        try:
            yield
        finally:
            warnings.formatwarning = formatwarning  # the CLIs' short_warnings() replaces it


@contextlib.contextmanager
def _deadline(seconds: float, what: str):
    def expire(signum, frame):
        raise TimeoutError(f"{what} did not return within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_main(module: str, argv: list[str], cwd=None, env: dict | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m <module> *argv`` as ``<module>.main(argv)`` in this process. ``env`` is added to the environment
    for the call (a value of ``None`` removes the variable); the folder and the environment are restored after."""
    main = importlib.import_module(module).main
    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    try:
        for key, value in (env or {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = str(value)
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _fresh_warnings(), \
                _deadline(timeout, f"python -m {module}"):
            try:
                code = main([str(a) for a in argv])
            except SystemExit as exc:  # argparse's usage errors and --help
                if exc.code is None or isinstance(exc.code, int):
                    code = exc.code or 0
                else:
                    print(exc.code, file=sys.stderr)
                    code = 1
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess([sys.executable, "-m", module, *map(str, argv)], code or 0, out.getvalue(),
                                       err.getvalue())
