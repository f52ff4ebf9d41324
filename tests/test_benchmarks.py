"""The benchmark suite runs end to end in --quick mode on tiny sizes, so it cannot rot (no timing asserts)."""
import re

import pytest

from benchmarks.common import Figure
from benchmarks.run import discover, target_met
from inprocess import run_main
from studies import process_ray


def test_target_parsing():
    f = Figure("t", 1.0, "s", "ref", 2.0, "ratio <= 1.0")
    assert f.ratio == 0.5 and target_met(f) is True
    assert target_met(Figure("t", 3.0, "s", "ref", 2.0, "ratio <= 1.0")) is False
    assert target_met(Figure("t", 1.0, "s", "ref", 2.0, "ratio <= 0.1 (>= 10x faster)")) is False
    assert target_met(Figure("t", 1.0, "s", "ref", 2.0, "informational")) is None
    assert target_met(Figure("t", 1.0, "s", "ref", 2.0, "ratio <= 1.0", extra={"met": False})) is False


@pytest.mark.slow
def test_quick_suite_writes_every_figure(tmp_path):
    out = tmp_path / "RESULTS.md"
    # In this process, and its studies on this process's Ray (a study joins a Ray it finds running): the studies'
    # start-up figures leave out ray.init here. The CLI's fresh-interpreter run is tests/test_cli_smoke.py's.
    process_ray()
    proc = run_main("benchmarks.run", ["--quick", "--out", str(out)], cwd=tmp_path,
                    env={"EXPAT_BENCH_SCALE": "0.25"}, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    text = out.read_text()
    names = [m.removeprefix("bench_") for m in discover()]
    assert {"eval", "sysu", "study", "scaling"} <= set(names)
    rows = [line for line in text.splitlines() if line.startswith("| ") and line.count("|") >= 9]
    body = [r for r in rows[1:] if not r.startswith("| benchmark")]
    assert "ERROR" not in text.split("## GPU")[0], text
    for name in names:
        mine = [r for r in body if r.split("|")[1].strip() == name]
        assert mine, f"no figure of benchmark {name} in the table"
        for r in mine:
            cells = [c.strip() for c in r.split("|")[1:-1]]
            # benchmark, figure, value, reference, reference value, ratio, target, met
            assert cells[3] != "-" and cells[4] != "-", f"figure without a reference: {r}"
            assert re.match(r"^-?[0-9.,]+(e[-+]?\d+)?$|^n/a$", cells[5]), f"no ratio: {r}"
    for header in ("## Machine", "## Library versions", "## GPU", "torch", "mlflow", "optuna", "ray"):
        assert header in text
    if "No GPU is available" not in text:
        assert "CUDA device" in text
    png = tmp_path / "RESULTS_scaling.png"
    assert png.is_file() and png.stat().st_size > 1000
    # A quick run never touches the committed results.
    assert "quick" in text.split("## Machine")[0]
