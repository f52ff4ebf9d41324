"""The helpers every CLI shares (``core.cli``): one-line errors and one-line usage errors with exit status 2."""
from __future__ import annotations

import pytest

from core.cli import BAD_INPUT, ArgumentParser, one_line


def test_one_line_joins_a_multi_line_message():
    assert one_line(ValueError("bad value\n  for key\tx ")) == "bad value for key x"


def _main(name: str):
    if name == "core.train":
        from core.train import main
        return main
    if name == "ablation.run":
        from ablation.run import main
        return main
    if name == "reports.build":
        from reports.build import main
        return main
    from ablation.ui_check import parse_args
    return parse_args


@pytest.mark.parametrize("cli, argv, needle", [
    ("core.train", ["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ("ablation.run", [], "the following arguments are required: --study"),
    ("ablation.run", ["--study", "x", "--num-cpus", "0"], "argument --num-cpus"),
    ("ablation.run", ["--study", "x", "--verbose", "loud"], "argument --verbose: invalid int value"),
    ("reports.build", ["--study"], "argument --study: expected one argument"),
    ("ablation.ui_check", ["--study", "s", "--port", "abc"], "argument --port: invalid int value"),
])
def test_every_cli_refuses_bad_arguments_in_one_line_with_status_2(capsys, cli, argv, needle):
    with pytest.raises(SystemExit) as exit_info:
        _main(cli)(argv)
    assert exit_info.value.code == BAD_INPUT == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"python -m {cli}: error: ")
    assert needle in lines[0] and f"python -m {cli} --help" in lines[0]


def test_help_still_prints_the_usage_and_exits_0(capsys):
    p = ArgumentParser(prog="tool", description="does things")
    p.add_argument("--n", type=int)
    with pytest.raises(SystemExit) as exit_info:
        p.parse_args(["--help"])
    assert exit_info.value.code == 0
    assert "usage: tool" in capsys.readouterr().out


def test_refuse_prints_one_line_and_returns_the_bad_input_status(capsys):
    from core.cli import refuse
    assert refuse(ValueError("no such\nkey"), "config error") == BAD_INPUT
    assert capsys.readouterr().err == "config error: no such key\n"


def test_sigterm_takes_the_path_of_the_sigint_handler_in_force_and_exits_143():
    """A real SIGTERM to this process within ``stop_like_ctrl_c``: the SIGINT handler in force runs (Tune's during a
    study's fit: stop gracefully, then give the previous handler back), and a second SIGTERM then stops at once
    (KeyboardInterrupt) as a second Ctrl-C does; the exit status is 143, and the caller's handler is back after."""
    import os
    import signal

    from core.cli import interrupted_status, stop_like_ctrl_c
    calls = []

    def graceful(signum, frame):  # Tune's handler does this much: note the stop, restore the previous handler
        calls.append(signum)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    outer = signal.signal(signal.SIGTERM, lambda *_: calls.append("outer"))
    previous_int = signal.signal(signal.SIGINT, graceful)
    try:
        with pytest.raises(KeyboardInterrupt), stop_like_ctrl_c():
            os.kill(os.getpid(), signal.SIGTERM)
            assert calls == [signal.SIGINT]  # the graceful path, once
            os.kill(os.getpid(), signal.SIGTERM)  # the second one stops at once
        assert interrupted_status() == 143
        os.kill(os.getpid(), signal.SIGTERM)
        assert calls == [signal.SIGINT, "outer"]  # the caller's handler is back
    finally:
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, outer)
