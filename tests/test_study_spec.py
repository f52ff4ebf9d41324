"""Study specs: shipped studies parse, plans are what the YAML says, impossible specs fail with clear errors."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ablation.study import StudyError, list_studies, load_study, plan_grid, trial_name

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_studies_load():
    assert {"loss_comparison", "margin_sweep", "csbn_ablation", "tpe_asha"} <= set(list_studies())
    for name in list_studies():
        load_study(name)


def test_loss_comparison_plan():
    spec = load_study("loss_comparison")
    plan = plan_grid(spec)
    assert len(plan) == 12
    assert {p["loss.type"] for p in plan} == {"triplet", "bnneck", "expat", "expat_center"}
    assert sorted({p["solver.seed"] for p in plan}) == [0, 1, 2]
    assert spec.group_keys() == ["loss.type"] and spec.baseline_label() == "loss.type=triplet"
    assert trial_name(spec, plan[-1]) == "expat_center/seed=2"


def _write(tmp_path, body):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(body))
    return str(path)


BASE = {"base": "quick", "axes": {"loss.type": ["expat"]}, "seeds": [0]}


@pytest.mark.parametrize("change, needle", [
    ({"axes": {"loss.typo": ["expat"]}}, "loss.typo"),
    ({"axes": {"loss.type": []}}, "empty"),
    ({"axes": {"loss.margin": [-1.0]}}, "loss.margin"),
    ({"search": {"algorithm": "hyperopt"}}, "hyperopt"),
    ({"scheduler": {"type": "pbt"}}, "pbt"),
    ({"metric": "accuracy"}, "accuracy"),
    ({"seeds": []}, "seeds"),
    ({"checkpoint_interval_s": -1}, "checkpoint_interval_s"),
    ({"checkpoint_interval_s": "often"}, "checkpoint_interval_s"),
    ({"search": {"algorithm": "optuna", "num_samples": 2}}, "search.space"),
    ({"search": {"algorithm": "optuna", "num_samples": 2,
                 "space": {"loss.margin": {"type": "float", "low": 1, "high": 0.5}}}}, "low < high"),
    ({"baseline": {"loss.margin": 0.3}}, "baseline"),
    ({"resources": {"cpu": 0}}, "resources"),
    ({"overrides": {"data.batch_size": 30}}, "data.batch_size"),
    ({"colour": "blue"}, "colour"),
])
def test_bad_specs_fail_with_the_field_named(tmp_path, change, needle):
    with pytest.raises(StudyError) as info:
        load_study(_write(tmp_path, {**BASE, **change}))
    assert needle in str(info.value)


def test_unknown_study_lists_the_shipped_ones():
    with pytest.raises(StudyError, match="loss_comparison"):
        load_study("no_such_study")


def test_cli_dry_run_and_bad_spec_exit_codes(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "ablation.run", "--study", "loss_comparison", "--dry-run"],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "12 trials" in ok.stdout and "expat_center/seed=2" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "ablation.run", "--study", _write(tmp_path, {**BASE, "metric": "acc"}),
                          "--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert "metric 'acc' is never reported" in bad.stderr and "Traceback" not in bad.stderr
