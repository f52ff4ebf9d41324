"""Each CLI once in a fresh interpreter (``python -m <module>``), as a user starts it: what the in-process runs of
tests/inprocess.py cannot catch (an import-time failure, the ``if __name__ == "__main__"`` exit status, output
that only a fresh interpreter prints). The tests of what each CLI prints and refuses run its ``main(argv)`` in
process (tests/test_bad_input.py, test_bad_store.py, test_reproduction.py, test_study_spec.py)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from test_bad_input import assert_refused  # exit status 2, one stderr line naming the needles, no traceback

ROOT = Path(__file__).resolve().parent.parent
CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


def fresh(module: str, *argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIALS}
    return subprocess.run([sys.executable, "-m", module, *argv], cwd=cwd,
                          env={**env, "PYTHONPATH": str(ROOT), "EXPAT_DATA_CACHE": str(cwd / "cache")},
                          capture_output=True, text=True, timeout=180)


def test_train_cli_in_a_fresh_interpreter_refuses_a_bad_key(tmp_path):
    proc = fresh("core.train", "--config", "quick", f"run.output_dir={tmp_path / 'out'}", "loss.typo=1",
                 cwd=tmp_path)
    assert_refused(proc, "config error:", "loss.typo", "loss.type")
    assert proc.stdout == "" and not (tmp_path / "out").exists()


def test_study_cli_in_a_fresh_interpreter_plans_and_refuses(tmp_path):
    plan = fresh("ablation.run", "--study", "loss_comparison", "--dry-run", cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "12 trials" in plan.stdout and "expat_center/seed=2" in plan.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"base": "quick", "axes": {"loss.type": ["triplet", "expat"]}, "metric": "acc"}))
    assert_refused(fresh("ablation.run", "--study", str(bad), "--dry-run", cwd=tmp_path), "study error:",
                   "metric 'acc' is never reported")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]  # no store, no Ray results, no cache


def test_report_cli_in_a_fresh_interpreter_refuses_a_mistyped_store(tmp_path):
    typo = tmp_path / "mlfow.db"
    assert_refused(fresh("reports.build", "--study", "s", "--tracking-uri", str(typo), cwd=tmp_path),
                   f"no MLflow database at {typo}")
    assert not typo.exists() and not (tmp_path / "outputs").exists()


def test_ui_check_cli_in_a_fresh_interpreter_refuses_a_mistyped_store(tmp_path):
    typo = tmp_path / "mlfow.db"
    assert_refused(fresh("ablation.ui_check", "--study", "s", "--tracking-uri", str(typo), "--chromium",
                         shutil.which("true") or "/bin/true", "--out", str(tmp_path / "ui"), cwd=tmp_path),
                   f"no MLflow database at {typo}")
    assert not typo.exists() and not (tmp_path / "ui").exists()


def test_benchmark_cli_in_a_fresh_interpreter_refuses_an_unknown_benchmark(tmp_path):
    proc = fresh("benchmarks.run", "--only", "nosuch", "--out", str(tmp_path / "RESULTS.md"), cwd=tmp_path)
    assert proc.returncode == 1 and "unknown benchmark(s) ['nosuch']" in proc.stderr, proc.stderr[-3000:]
    assert "study" in proc.stderr and not (tmp_path / "RESULTS.md").exists()
