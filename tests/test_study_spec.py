"""Study specs: shipped studies parse, plans are what the YAML says, impossible specs fail with clear errors."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ablation.study import StudyError, list_studies, load_study, plan_grid, targets_json, trial_name

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


TARGETS = {"source": "expAT README, Market-1501",
           "rows": [{"group": {"loss.type": "triplet"}, "name": "Triplet Loss", "rank1": 92.0, "mAP": 81.7},
                    {"group": {"loss.type": "expat"}, "rank1": 94.7}]}


def test_targets_become_the_report_tag(tmp_path):
    spec = load_study(_write(tmp_path, {**BASE, "axes": {"loss.type": ["triplet", "expat"], "loss.at_margin": [1]},
                                        "group_by": ["loss.type", "loss.at_margin"],
                                        "targets": {"source": "paper", "rows": [
                                            {"group": {"loss.at_margin": 1, "loss.type": "expat"}, "mAP": 80}]}}))
    # labels as the trials carry them: grouping keys in order, values typed by the config (1 -> 1.0)
    assert json.loads(targets_json(spec)) == {"source": "paper",
                                              "rows": {"loss.type=expat, loss.at_margin=1.0": {"mAP": 80.0}}}
    spec = load_study(_write(tmp_path, {**BASE, "axes": {"loss.type": ["triplet", "expat"]}, "targets": TARGETS}))
    assert json.loads(targets_json(spec))["rows"] == {
        "loss.type=triplet": {"rank1": 92.0, "mAP": 81.7, "name": "Triplet Loss"}, "loss.type=expat": {"rank1": 94.7}}
    assert targets_json(load_study("loss_comparison")) == ""


@pytest.mark.parametrize("targets, needle", [
    ({"rows": TARGETS["rows"]}, "source"),
    ({"source": "x", "rows": []}, "source"),
    ({"source": "x", "rows": [{"group": {"loss.margin": 0.3}, "rank1": 1}]}, "grouping keys"),
    ({"source": "x", "rows": [{"group": {"loss.type": "nope"}, "rank1": 1}]}, "loss.type"),
    ({"source": "x", "rows": [{"group": {"loss.type": "expat"}, "rank1": 140}]}, "0..100"),
    ({"source": "x", "rows": [{"group": {"loss.type": "expat"}}]}, "rank1 and/or mAP"),
    ({"source": "x", "rows": [{"group": {"loss.type": "expat"}, "top1": 90}]}, "targets row"),
    ({"source": "x", "rows": [{"group": {"loss.type": "expat"}, "rank1": 9}] * 2}, "twice"),
])
def test_bad_targets_fail_with_the_field_named(tmp_path, targets, needle):
    with pytest.raises(StudyError) as info:
        load_study(_write(tmp_path, {**BASE, "targets": targets}))
    assert needle in str(info.value) and "targets" in str(info.value)


def test_documented_paper_targets_load(tmp_path):
    """The targets blocks of docs/PAPER_TARGETS.md are valid in a study grouped by loss.type."""
    text = (ROOT / "docs" / "PAPER_TARGETS.md").read_text()
    blocks = [yaml.safe_load(b.split("```")[0]) for b in text.split("```yaml\n")[1:]]
    blocks = [b for b in blocks if "targets" in b]
    assert len(blocks) == 3
    axes = {"loss.type": ["triplet", "bnneck", "expat", "expat_center"]}
    published = [json.loads(targets_json(load_study(_write(tmp_path, {**BASE, "axes": axes, **b}))))["rows"]
                 for b in blocks]
    assert published[0]["loss.type=expat_center"] == {"rank1": 94.7, "mAP": 86.8, "name": "expAT+Center Loss"}
    assert published[1]["loss.type=expat"] == {"rank1": 87.6, "mAP": 77.1, "name": "expAT Loss"}
    assert published[2]["loss.type=expat"] == {"rank1": 38.57, "mAP": 38.61, "name": "expAT Loss"}
