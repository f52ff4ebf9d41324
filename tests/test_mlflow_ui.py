"""The MLflow UI of a finished tiny study as a user sees it: real `mlflow server`, real headless Chromium.

`python -m ablation.ui_check` starts the server, renders the experiment page and the compare view of the study's
child runs, checks every trial's run name on both, the rank1 / mAP columns on the experiment page and the rank1 plot
on the compare view, and saves PNG screenshots.
Chromium is the Debian package `chromium` (`.ci/run` installs it when absent); without it the test is skipped,
except when EXPAT_REQUIRE_CHROMIUM is set (as `.ci/run` does), where it fails.
"""
import json
import os
import re
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from inprocess import run_main
from studies import process_ray
from test_ablation_e2e import TINY as E2E_TINY

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

# The end-to-end tests' tiny study, for two epochs, with a margin axis too (the two losses that read loss.margin).
STUDY = {**E2E_TINY, "overrides": {**E2E_TINY["overrides"], "solver.epochs": 2},
         "axes": {"loss.type": ["triplet", "bnneck"], "loss.margin": [0.5]},
         "baseline": {"loss.type": "triplet", "loss.margin": 0.5}}


def require_chromium() -> None:
    if os.access(CHROMIUM, os.X_OK):
        return
    reason = (f"Chromium not installed at {CHROMIUM}: install the Debian package (apt-get install -y chromium; "
              f".ci/run does it when absent)")
    if os.environ.get("EXPAT_REQUIRE_CHROMIUM"):
        pytest.fail(reason)
    pytest.skip(reason)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_mlflow_ui_shows_the_study(tmp_path):
    require_chromium()
    env = {**os.environ, "EXPAT_DATA_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    (tmp_path / "ui_tiny.yaml").write_text(yaml.safe_dump(STUDY, sort_keys=False))  # the axes in their order
    process_ray()  # the study runs in this process
    study = run_main("ablation.run", ["--study", "ui_tiny.yaml", "--num-cpus", "2", "--tracking-uri", "mlflow.db",
                                      "--storage-path", "ray_results", "--no-report"], cwd=tmp_path, timeout=600)
    assert study.returncode == 0, study.stdout[-3000:] + study.stderr[-3000:]

    out = tmp_path / "ui"
    check = subprocess.run([sys.executable, "-m", "ablation.ui_check", "--study", "ui_tiny",
                            "--tracking-uri", "mlflow.db", "--out", str(out), "--chromium", CHROMIUM],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]
    summary = json.loads((out / "ui_check.json").read_text())
    assert summary["run_names"] == ["bnneck/margin=0.5/seed=0", "triplet/margin=0.5/seed=0"]
    for page in ("experiment", "compare"):
        result = summary["pages"][page]
        assert result["missing"] == [], (page, result)
        width, height = png_size(Path(result["screenshot"]))
        assert width == 1920 and height >= 1080
        assert Path(result["screenshot"]).stat().st_size > 20_000  # a rendered page, not a blank one

    # What the pages say, read back from the rendered DOM.
    from ablation.ui_check import visible_text
    experiment = visible_text((out / "experiment.html").read_text())
    compare = visible_text((out / "compare.html").read_text())
    # Rows grouped by report row (the `group` tag), with the study's varied keys as columns.
    assert "Group: loss.type=bnneck, loss.margin=0.5" in experiment
    assert "Group: loss.type=triplet, loss.margin=0.5" in experiment
    for column in ("rank1", "mAP", "mINP", "loss.type", "loss.margin", "model.neck"):
        assert re.search(rf"(?<![\w.]){re.escape(column)}(?!\w)", experiment), column
    # The compare view plots the varied parameters (loss.type first; the resolved neck differs with it) against
    # rank1 (the first metric logged), not lr.
    assert re.search(r"Parameters: loss\.type [^:]*\bmodel\.neck Metrics: rank1 ", compare), compare[:3000]
    assert "Run Name: bnneck/margin=0.5/seed=0 triplet/margin=0.5/seed=0" in compare
    # The server the script started is gone.
    port = int(re.search(r"127\.0\.0\.1:(\d+)", check.stdout).group(1))
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, f"mlflow server still listening on {port}"
