"""Building a study's Ray Tune ``Tuner``s from its plan: the trainable with its resources, the param space (a grid
study's trial index with the values each trial varies, or a search's distributions), the search algorithm, the
scheduler, and the run config with the driver's callbacks. ``ablation.driver`` fits them.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter

from ablation.interrupt import QuietOnInterrupt
from ablation.progress import StudyProgress
from ablation.study import SEED_KEY, TRIAL_INDEX, StudySpec, Trial, refit_configs
from ablation.trainable import StudyContext, run_trial
from core.config import get_value

if TYPE_CHECKING:
    from ablation.driver import TrialStatusCallback


def make_trainable(spec: StudySpec, ctx: StudyContext):
    """The function trainable (``ablation.trainable.run_trial``) with the study's context and a trial's resources."""
    return tune.with_resources(tune.with_parameters(run_trial, ctx=ctx),
                               {"cpu": spec.resources.get("cpu", 1), "gpu": spec.resources.get("gpu", 0)})


def build_tuner(spec: StudySpec, ctx: StudyContext, ray_path: str, callback: TrialStatusCallback,
                verbose: int = 0) -> tune.Tuner:
    """The study's first experiment: the grid's planned trials, or the trials the search samples."""
    base = spec.base_config()
    trainable = make_trainable(spec, ctx)
    search_alg, param_space, num_samples = None, {}, 1
    if spec.algorithm == "grid":
        param_space = grid_param_space(spec)
    else:
        from ray.tune.search.optuna import OptunaSearch
        param_space = {k: _tune_distribution(d) for k, d in spec.search["space"].items()}
        param_space[SEED_KEY] = spec.seeds[0]
        search_alg = OptunaSearch(seed=int(spec.search.get("seed", 0)))
        if spec.max_concurrent:
            search_alg = ConcurrencyLimiter(search_alg, max_concurrent=spec.max_concurrent)
        num_samples = spec.search_trials
    sched = spec.scheduler
    if sched.get("type", "fifo") == "asha":
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=int(sched.get("max_t", base.solver.epochs)),
                                  grace_period=int(sched.get("grace_period", 1)),
                                  reduction_factor=float(sched.get("reduction_factor", 2)))
    else:
        scheduler = FIFOScheduler()
    tune_config = tune.TuneConfig(metric=spec.metric, mode=spec.mode, search_alg=search_alg, scheduler=scheduler,
                                  num_samples=num_samples, reuse_actors=True,
                                  max_concurrent_trials=spec.max_concurrent or None)
    run_config = tune.RunConfig(
        name=Path(ray_path).name, storage_path=str(Path(ray_path).parent), verbose=verbose,
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        callbacks=[callback, StudyProgress(ctx), QuietOnInterrupt()])
    return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)


def grid_param_space(spec: StudySpec) -> dict:
    """Tune's param space of a grid study: the trial's index in ``spec.plan`` (what the trainable reads) and,
    under their dotted keys, the values its row varies, so Ray's own results (``params.json``, the ResultGrid's
    dataframe) show ``loss.at_margin`` rather than an index."""
    keys = list(dict.fromkeys(k for t in spec.plan for k in t.params))
    values = [{k: get_value(t.config, k) for k in keys} for t in spec.plan]
    space = {TRIAL_INDEX: tune.grid_search([t.index for t in spec.plan])}
    for key in keys:
        space[key] = tune.sample_from(lambda config, key=key: values[config[TRIAL_INDEX]][key])
    return space


def _tune_distribution(d: dict):
    kind = d["type"]
    if kind == "float":
        return tune.uniform(float(d["low"]), float(d["high"]))
    if kind == "loguniform":
        return tune.loguniform(float(d["low"]), float(d["high"]))
    if kind == "int":
        return tune.randint(int(d["low"]), int(d["high"]) + 1)
    return tune.choice(list(d["values"]))


def build_refit_tuner(spec: StudySpec, ctx: StudyContext, path: str, callback: TrialStatusCallback,
                      best: Trial, verbose: int = 0) -> tune.Tuner:
    """The refit experiment of a study that selects: ``best``'s settings once per refit seed, tested on test."""
    configs = refit_configs(spec, best)
    param_space = {k: v for k, v in configs[0].items() if k != SEED_KEY}
    param_space[SEED_KEY] = tune.grid_search([c[SEED_KEY] for c in configs])
    tune_config = tune.TuneConfig(metric=spec.metric, mode=spec.mode, scheduler=FIFOScheduler(), reuse_actors=True,
                                  max_concurrent_trials=spec.max_concurrent or None)
    run_config = tune.RunConfig(
        name=Path(path).name, storage_path=str(Path(path).parent), verbose=verbose,
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1), callbacks=[callback, QuietOnInterrupt()])
    return tune.Tuner(make_trainable(spec, ctx), param_space=param_space, tune_config=tune_config,
                      run_config=run_config)
