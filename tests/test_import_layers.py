"""Imports go one way: ``ablation`` and ``reports`` both import the shared MLflow side (``tracking``), ``reports``
imports nothing of ``ablation``, and importing ``reports`` or ``tracking`` leaves the process environment as it was
and starts no Ray. Each check runs in a fresh interpreter (this one has imported everything already)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ("reports", "reports.build", "reports.collect", "reports.tables", "reports.stats", "reports.effects",
           "reports.exports", "reports.paper", "reports.plots", "reports.targets")
TRACKING = ("tracking", "tracking.tags", "tracking.runs", "tracking.store", "tracking.defaults")


def _import_in_fresh_python(modules) -> dict:
    code = ("import importlib, json, os, sys\n"
            "before = dict(os.environ)\n"
            f"for m in {list(modules)!r}: importlib.import_module(m)\n"
            "after = dict(os.environ)\n"
            "print(json.dumps({'changed': sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k)),\n"
            "                  'modules': sorted({m.split('.')[0] for m in sys.modules})}))")
    env = {k: v for k, v in os.environ.items() if not k.lstrip("_").startswith(("MLFLOW_", "RAY_", "TUNE_"))}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**env, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("modules", [REPORTS, TRACKING], ids=["reports", "tracking"])
def test_importing_leaves_the_environment_untouched_and_ablation_and_ray_out(modules):
    seen = _import_in_fresh_python(modules)
    assert seen["changed"] == []
    assert "ablation" not in seen["modules"] and "ray" not in seen["modules"]


def test_no_module_of_reports_or_tracking_names_ablation():
    """Also the imports made inside functions, which importing alone would not run."""
    holders = [p.relative_to(ROOT).as_posix() for pkg in ("reports", "tracking") for p in (ROOT / pkg).rglob("*.py")
               if any(line.lstrip().startswith(("import ablation", "from ablation"))
                      for line in p.read_text().splitlines())]
    assert holders == []
