"""Study specs: shipped studies parse, plans are what the YAML says, impossible specs fail with clear errors."""
import json
from pathlib import Path

import pytest
import yaml

from ablation.study import StudyError, list_studies, load_study, targets_json
from inprocess import run_main

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_studies_load():
    assert {"loss_comparison", "margin_sweep", "csbn_ablation", "tpe_asha"} <= set(list_studies())
    for name in list_studies():
        load_study(name)


def test_loss_comparison_plan():
    spec = load_study("loss_comparison")
    plan = spec.plan
    assert len(plan) == 12 and [t.index for t in plan] == list(range(12))
    assert {t.params["loss.type"] for t in plan} == {"triplet", "bnneck", "expat", "expat_center"}
    assert sorted({t.params["solver.seed"] for t in plan}) == [0, 1, 2]
    assert spec.group_keys() == ["loss.type"] and spec.baseline_label() == "loss.type=triplet"
    assert plan[-1].name == "expat_center/seed=2" and plan[-1].row == "loss.type=expat_center"


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
    ({"baseline": "CS-BN"}, "baseline"),
    ({"variants": {"a": {"loss.typo": 1}}}, "loss.typo"),
    ({"variants": {"a": {"loss.type": "triplet"}}}, "loss.type is both an axis and set by a variant"),
    ({"overrides": {"data.root": False}}, "data.root: got the YAML boolean"),
    ({"resources": {"cpu": 0}}, "resources"),
    ({"overrides": {"data.batch_size": 30}}, "data.batch_size"),
    ({"colour": "blue"}, "colour"),
    ({"name": "it's"}, "name \"it's\" must be letters"),  # a quote would break MLflow's search filter
    ({"name": 7}, "name 7 must be letters"),
])
def test_bad_specs_fail_with_the_field_named(tmp_path, change, needle):
    with pytest.raises(StudyError) as info:
        load_study(_write(tmp_path, {**BASE, **change}))
    assert needle in str(info.value)


def test_unknown_study_lists_the_shipped_ones():
    with pytest.raises(StudyError, match="loss_comparison"):
        load_study("no_such_study")


def test_cli_dry_run_and_bad_spec_exit_codes(tmp_path):
    ok = _dry_run("loss_comparison")
    assert ok.returncode == 0, ok.stderr
    assert "12 trials" in ok.stdout and "expat_center/seed=2" in ok.stdout
    bad = _dry_run(_write(tmp_path, {**BASE, "metric": "acc"}))
    assert bad.returncode == 2
    assert "metric 'acc' is never reported" in bad.stderr and "Traceback" not in bad.stderr


TARGETS = {"source": "expAT README, Market-1501",
           "rows": [{"group": {"loss.type": "triplet"}, "name": "Triplet Loss", "rank1": 92.0, "mAP": 81.7},
                    {"group": {"loss.type": "expat"}, "rank1": 94.7}]}


def test_targets_become_the_report_tag(tmp_path):
    spec = load_study(_write(tmp_path, {**BASE, "axes": {"loss.type": ["expat", "expat_center"], "loss.at_margin": [1]},
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


def _write_text(tmp_path, text, name="s.yaml"):
    """A study file as a user writes it (yaml.safe_dump would quote a bare `no`, hiding YAML 1.1's boolean)."""
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _dry_run(study, *extra):
    """``python -m ablation.run --study <study> --dry-run`` in this process (tests/inprocess.py)."""
    return run_main("ablation.run", ["--study", study, "--dry-run", *extra], cwd=ROOT, timeout=120)


def test_values_are_shown_as_the_schema_holds_them(tmp_path):
    spec = load_study(_write_text(tmp_path, "base: quick\noverrides: {loss.type: expat}\n"
                                            "axes:\n  model.neck: [no, csbn]\nbaseline: {model.neck: no}\n"))
    assert [t.params["model.neck"] for t in spec.plan] == ["no", "csbn"]
    assert [t.name for t in spec.plan] == ["neck=no/seed=0", "neck=csbn/seed=0"]
    assert [t.row for t in spec.plan] == ["model.neck=no", "model.neck=csbn"]
    assert spec.baseline_label() == "model.neck=no"


def test_csbn_ablation_rows_are_four_distinct_trainings():
    from core.config import is_cross_modal
    from core.effective import resolve, signature
    from core.factory import build_model
    from ablation.study import trial_config
    spec = load_study("csbn_ablation")
    assert list(spec.variants) == ["no neck", "BNNeck", "CS-BN shared", "CS-BN"]
    assert len(spec.plan) == 4 * 2 and spec.baseline_label() == "CS-BN"
    first = [t for t in spec.plan if t.params["solver.seed"] == 0]
    assert [t.name for t in first] == ["no neck/seed=0", "BNNeck/seed=0", "CS-BN shared/seed=0", "CS-BN/seed=0"]
    configs = [resolve(trial_config(spec, t.params)) for t in first]
    assert len({signature(c) for c in configs}) == 4
    assert all(is_cross_modal(c) for c in configs)
    # BN layers in the neck, and where the losses attach (the two facts model.neck decides)
    bns = [0 if m.head.neck is None else len(m.head.neck.bns) for m in (build_model(c, 10) for c in configs)]
    assert bns == [0, 1, 1, 2]
    assert [c.model.neck for c in configs] == ["no", "bnneck", "csbn", "csbn"]


def test_margin_sweep_varies_each_margin_only_where_it_is_read():
    from core.effective import unread_keys
    from ablation.study import trial_config
    spec = load_study("margin_sweep")
    types = {t.params["loss.type"] for t in spec.plan}
    assert types == {"expat", "triplet", "bnneck"}
    for t in spec.plan:
        unread = unread_keys(trial_config(spec, t.params))
        assert not set(t.params) & set(unread), t.row
    at = sorted({t.params["loss.at_margin"] for t in spec.plan if "loss.at_margin" in t.params})
    margins = sorted({t.params["loss.margin"] for t in spec.plan if "loss.margin" in t.params})
    assert at == [0.25, 0.5, 1.0, 1.5] and margins == [0.1, 0.3, 0.5]


OLD_CSBN = """base: quick
overrides: {solver.epochs: 2, loss.type: expat}
axes:
  model.neck: [no, bnneck, csbn]
  model.modality_specific_bn: [true, false]
seeds: [0, 1]
"""


@pytest.mark.parametrize("text, needles", [
    # the pre-variants csbn_ablation: the BN-layout switch on necks that have no per-modality BN
    (OLD_CSBN, ["row 'model.neck=no, model.modality_specific_bn=True'", "model.modality_specific_bn is not read "
                                                                        "with model.neck=no"]),
    ("base: quick\noverrides: {loss.type: expat}\naxes: {loss.margin: [0.1, 0.3]}\n",
     ["loss.margin is not read by loss.type=expat; expAT's margin is loss.at_margin"]),
    ("base: quick\noverrides: {loss.type: triplet}\naxes: {loss.at_margin: [0.5, 1.0]}\n",
     ["loss.at_margin is not read by loss.type=triplet"]),
    ("base: quick\noverrides: {loss.type: expat}\nvariants:\n  auto: {model.neck: auto}\n  CS-BN: {model.neck: csbn}\n",
     ["rows 'auto' and 'CS-BN' resolve to the same training", "model.neck makes no difference"]),
    ("base: quick\noverrides: {loss.type: expat, loss.center_weight: 0.1}\n",
     ["overrides loss.center_weight is not read by loss.type=expat"]),
    ("base: quick\nsearch:\n  algorithm: optuna\n  num_samples: 2\n  space:\n"
     "    loss.margin: {type: float, low: 0.1, high: 0.5}\n", ["search.space: loss.margin is not read"]),
])
def test_keys_never_read_and_rows_that_train_alike_are_refused(tmp_path, text, needles):
    with pytest.raises(StudyError) as info:
        load_study(_write_text(tmp_path, text))
    for needle in needles:
        assert needle in str(info.value)


def test_dry_run_refuses_unread_axes_and_set_overrides_in_one_line_before_ray(tmp_path):
    bad = _dry_run(_write_text(tmp_path, OLD_CSBN))
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "model.modality_specific_bn is not read" in bad.stderr
    assert "Ray" not in bad.stdout and bad.stdout == ""
    unread_set = _dry_run("csbn_ablation", "--set", "loss.margin=0.5")
    assert unread_set.returncode == 2
    assert unread_set.stderr.strip() == ("study error: study csbn_ablation: --set loss.margin is not read by "
                                         "loss.type=expat; expAT's margin is loss.at_margin; remove it")


@pytest.mark.parametrize("name", ["loss_comparison", "margin_sweep", "csbn_ablation", "tpe_asha"])
def test_every_shipped_study_passes_its_dry_run(name):
    proc = _dry_run(name, "--set", "solver.epochs=2", "--num-cpus", "8")  # the paper studies' 8-CPU machine
    assert proc.returncode == 0, proc.stderr


def test_tpe_asha_searches_on_validation_and_refits_on_test():
    from ablation.study import refit_configs, trial_config, trial_from_config
    spec = load_study("tpe_asha")
    assert spec.selects and spec.refit_seeds == [0, 1, 2]
    sampled = {"loss.at_margin": 0.7, "loss.metric_weight": 0.5, "solver.lr": 3e-4,
               "loss.expat_reduction": "mean_of_exp", "solver.seed": 0}
    search = trial_from_config(spec, sampled)
    assert search.phase == "search" and trial_config(spec, search.params).eval.split == "val"
    refits = [trial_from_config(spec, c) for c in refit_configs(spec, search)]
    assert [t.params["solver.seed"] for t in refits] == [0, 1, 2]
    assert {t.phase for t in refits} == {"refit"} and {t.row for t in refits} == {search.row}
    for t in refits:
        cfg = trial_config(spec, t.params)
        assert cfg.eval.split == "test" and cfg.loss.at_margin == 0.7 and cfg.loss.expat_reduction == "mean_of_exp"
    assert refits[1].name.startswith("refit/") and refits[1].name.endswith("/seed=1")


@pytest.mark.parametrize("change, needle", [
    ({"search": {"algorithm": "optuna", "num_samples": 2, "space": {"solver.lr": {"type": "float", "low": 1e-4,
                                                                                    "high": 1e-3}}},
      "overrides": {"eval.split": "test"}, "axes": {}}, "its search trials evaluate on eval.split=val"),
    ({"scheduler": {"type": "asha"}, "axes": {"loss.type": ["expat"], "eval.split": ["test"]}},
     "remove eval.split from the study"),
    ({"search": {"algorithm": "grid", "refit_seeds": [0]}}, "search.refit_seeds is for studies that select"),
    ({"scheduler": {"type": "asha"}, "search": {"refit_seeds": []}}, "refit_seeds must be a non-empty list"),
])
def test_selecting_on_test_is_refused(tmp_path, change, needle):
    with pytest.raises(StudyError, match=needle):
        load_study(_write(tmp_path, {**BASE, **change}))


def test_a_grid_without_selection_evaluates_on_test():
    spec = load_study("loss_comparison")
    assert not spec.selects and {t.phase for t in spec.plan} == {""}
    assert "eval.split" not in spec.overrides


def test_an_override_only_the_refit_reads_is_accepted():
    # the search trials train on train_id.txt and validate on val_id.txt; the refit trials read the training ids
    spec = load_study("tpe_asha", {"data.sysu_train_ids": "train"})
    assert spec.overrides["data.sysu_train_ids"] == "train"
    with pytest.raises(StudyError, match="--set data.sysu_train_ids is not read with data.dataset=synthetic_market"):
        load_study("loss_comparison", {"data.dataset": "synthetic_market", "data.sampler": "pk",
                                       "data.sysu_train_ids": "train"})


def test_relative_paths_are_made_absolute_against_the_starting_folder(tmp_path, monkeypatch):
    """Tune runs each trial in its own folder, so a relative data.root or weights path would name another file
    there: the study holds them absolute (and logs them so), whether given in the file or with --set."""
    monkeypatch.chdir(tmp_path)
    spec = load_study(_write(tmp_path, {**BASE, "overrides": {**BASE.get("overrides", {}), "data.root": "data/sysu"}}),
                      {"model.pretrained": "~/weights/r18.pth"})
    assert spec.overrides["data.root"] == str(tmp_path / "data" / "sysu")
    assert spec.overrides["model.pretrained"] == str(Path.home() / "weights" / "r18.pth")
    none = load_study(_write(tmp_path, BASE), {"model.pretrained": "none"})
    assert none.overrides["model.pretrained"] == "none"
