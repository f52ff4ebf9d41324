"""Parse, then plan: ``load_study`` returns a frozen spec without changing what it was given, and each trial of the
plan carries its config, built once when planned (or sampled). Nobody outside ``ablation/study.py`` builds a trial's
config: the validity checks, the dry run, the estimate, the Tune param space and the trainable read
``trial.config``."""
import copy
import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from ablation.study import StudySpec, load_study, trial_from_config, validate_study

ROOT = Path(__file__).resolve().parent.parent

# Where building a config is not building a trial's: the planning itself, the config loader, the training CLI's
# own config, and benchmarks that time a standalone config (no study).
ALLOWED = {
    "ablation/study.py": "the planning: the one place a trial's config is built",
    "core/config.py": "defines load_config",
    "core/train.py": "python -m core.train builds its own config from --config/--set",
    "benchmarks/bench_train.py": "a standalone training config",
    "benchmarks/bench_diagnostics.py": "a standalone preset config",
    "benchmarks/bench_data.py": "standalone data configs",
    "benchmarks/run.py": "standalone configs for the scaling figure",
}
CALL = re.compile(r"(?<![\w.])(?:[\w.]+\.)?(trial_config|load_config)\(")


def test_only_the_planning_builds_a_trials_config():
    callers = []
    for package in ("ablation", "reports", "benchmarks", "tracking", "core"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for n, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if CALL.search(code) and not code.lstrip().startswith("def ") and rel not in ALLOWED:
                    callers.append(f"{rel}:{n}: {line.strip()}")
    assert callers == [], "read trial.config (or spec.configs()) instead:\n" + "\n".join(callers)


def test_load_study_changes_nothing_it_is_given_and_returns_a_frozen_spec():
    overrides = {"solver.epochs": "2", "model.neck": False}
    before = copy.deepcopy(overrides)
    spec = load_study("loss_comparison", overrides)
    assert overrides == before
    assert spec.overrides["solver.epochs"] == 2 and spec.overrides["model.neck"] == "no"  # canonical values
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.overrides = {}


def test_validate_study_returns_a_new_spec_and_leaves_the_given_one_as_it_was():
    raw = StudySpec(name="s", base="quick", overrides={"loss.type": "expat"},
                    axes={"loss.at_margin": [1, "0.5"]}, scheduler={"type": "asha"},
                    search={"algorithm": "grid", "refit_seeds": [0]}, baseline={"loss.at_margin": 1})
    before = copy.deepcopy(raw)
    spec = validate_study(raw)
    assert raw == before and raw.plan == []
    assert spec.axes == {"loss.at_margin": [1.0, 0.5]} and spec.baseline == {"loss.at_margin": 1.0}
    assert spec.overrides["eval.split"] == "val" and "eval.split" not in raw.overrides  # the leak-free rewrite
    assert [t.config.loss.at_margin for t in spec.plan] == [1.0, 0.5]


def test_optuna_space_values_are_canonical_without_changing_the_file_body(tmp_path):
    body = {"base": "quick", "overrides": {"loss.type": "expat"}, "search": {
        "algorithm": "optuna", "num_samples": 2,
        "space": {"loss.expat_reduction": {"type": "choice", "values": ["mean_of_exp", "exp_of_mean"]}}}}
    raw = StudySpec(name="s", **copy.deepcopy(body))
    spec = validate_study(raw)
    assert raw.search == body["search"] and spec.search["space"] == body["search"]["space"]


@pytest.mark.parametrize("name", ["margin_sweep", "csbn_ablation", "reproduce_regdb"])
def test_each_planned_trial_carries_the_config_of_its_params(name):
    from core.config import get_value
    spec = load_study(name)
    for trial in spec.plan:
        assert trial.config is not None
        for key, value in trial.params.items():
            assert get_value(trial.config, key) == value, (trial.name, key)
        for key, value in spec.overrides.items():
            assert get_value(trial.config, key) == value, (trial.name, key)
    assert spec.configs() == [t.config for t in spec.plan]


def test_grid_trials_come_back_from_tune_with_their_planned_config_and_sampled_ones_get_theirs():
    from ablation.study import TRIAL_INDEX, refit_configs
    grid = load_study("margin_sweep")
    assert trial_from_config(grid, {TRIAL_INDEX: 3}).config is grid.plan[3].config
    search = load_study("tpe_asha")
    assert search.plan == [] and search.configs() == [search.base_config()]
    sampled = trial_from_config(search, {"loss.at_margin": 0.7, "loss.metric_weight": 0.5, "solver.lr": 3e-4,
                                         "loss.expat_reduction": "mean_of_exp"})
    assert sampled.config.loss.at_margin == 0.7 and sampled.config.eval.split == "val"
    refits = [trial_from_config(search, c) for c in refit_configs(search, sampled)]
    assert [(t.config.solver.seed, t.config.eval.split) for t in refits] == [(0, "test"), (1, "test"), (2, "test")]


def test_the_grid_param_space_reads_the_planned_configs():
    from ablation.tuners import grid_param_space
    spec = load_study("margin_sweep")
    space = grid_param_space(spec)
    sample = space["loss.at_margin"].func
    at = [sample({"trial_index": t.index}) for t in spec.plan]
    assert at == [t.config.loss.at_margin for t in spec.plan]


def test_a_yaml_study_file_is_read_not_written(tmp_path):
    path = tmp_path / "s.yaml"
    text = yaml.safe_dump({"base": "quick", "overrides": {"loss.type": "expat"}, "axes": {"loss.at_margin": [1]}})
    path.write_text(text)
    load_study(str(path), {"solver.epochs": 1})
    assert path.read_text() == text


@pytest.mark.parametrize("resources,threads,device", [({"cpu": 2}, 2, "cpu"), ({"cpu": 1, "gpu": 0}, 1, "cpu"),
                                                      ({"cpu": 4, "gpu": 0.5}, 4, "cuda")])
def test_a_trial_runs_on_its_resources_not_on_run_device_auto(resources, threads, device):
    """The trainable, --estimate and the benchmarks' loop train a planned config this way: on a GPU machine
    run.device=auto would pick the GPU for a trial given none (and --estimate would time the wrong device)."""
    from ablation.study import run_on_trial_resources
    cfg = load_study("loss_comparison").plan[0].config
    assert cfg.run.device == "auto"
    run_on_trial_resources(cfg, resources)
    assert (cfg.run.threads, cfg.run.device, cfg.run.progress) == (threads, device, False)
