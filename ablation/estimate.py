"""``python -m ablation.run --study NAME --estimate``: what a study will cost on this machine, before it runs.

One trial of the study is built as it would train (its data, model, loss and optimizer, on this machine's device),
``STEPS`` training steps are timed after a warm-up step, and the test feature extraction is timed on a few batches
and scaled to the test set (the ranking itself costs well under a second, ``benchmarks/RESULTS.md``). From the
schedule (epochs, steps per epoch, ``solver.max_iters``, ``eval.every``) follow each trial's iterations, images seen
and wall time, and from the trials and the concurrency the resources allow, the study's. Nothing is logged: no
MLflow run, no Ray, no checkpoint.
"""
from __future__ import annotations

import itertools
import math
import os
import time
from dataclasses import dataclass

import torch

from ablation.study import StudySpec, run_on_trial_resources
from core.config import iteration_scheduled

STEPS = 3  # timed training steps, after one warm-up step
EVAL_BATCHES = 2  # timed test batches, scaled to the test set


@dataclass
class Estimate:
    search_trials: int  # the grid's or the search's trials
    refit_trials: int  # run once the search has ended (a study that selects)
    concurrency: int
    device: str
    iterations: int  # per trial
    images_per_iteration: int
    evaluations: int  # per trial
    step_s: float
    eval_s: float  # one evaluation, scaled to the test set
    test_images: int

    @property
    def trial_s(self) -> float:
        return self.iterations * self.step_s + self.evaluations * self.eval_s

    @property
    def trials(self) -> int:
        return self.search_trials + self.refit_trials

    @property
    def study_s(self) -> float:
        """The search's waves of trials, then the refit's (it starts when the search has ended)."""
        waves = math.ceil(self.search_trials / self.concurrency) + math.ceil(self.refit_trials / self.concurrency)
        return waves * self.trial_s

    def describe(self, name: str) -> str:
        return "\n".join([
            f"estimate for study {name} on {self.device} (measured: {STEPS} training steps, {EVAL_BATCHES} test "
            f"batches scaled to {self.test_images} test images):",
            f"  per trial: {self.iterations} iterations x {self.images_per_iteration} images = "
            f"{self.iterations * self.images_per_iteration} images seen, {self.step_s:.3f} s per iteration; "
            f"{self.evaluations} evaluation{'s' if self.evaluations != 1 else ''} x {self.eval_s:.1f} s; about "
            f"{_duration(self.trial_s)}",
            f"  study: {self.trials} trials, {self.concurrency} at once; about {_duration(self.study_s)}"])


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def concurrency(spec: StudySpec, trials: int, cpus: int | None = None) -> int:
    """Trials at once on this machine: its CPUs (``cpus``: the local Ray's, ``--num-cpus``; default all of them)
    over the trial's, and its GPUs over the trial's share."""
    cpus = cpus or os.cpu_count() or 1
    at_once = max(1, int(cpus // float(spec.resources.get("cpu", 1))))
    gpu = float(spec.resources.get("gpu", 0))
    if gpu > 0 and torch.cuda.is_available():
        at_once = min(at_once, max(1, int(torch.cuda.device_count() // gpu)))
    return max(1, min(trials, at_once))


def _schedule(cfg, steps_per_epoch: int) -> tuple[int, int]:
    """(iterations, evaluations) of one trial: epochs of ``steps_per_epoch`` steps, cut by ``solver.max_iters``;
    an evaluation every ``eval.every`` epochs and after the last, and on an iteration schedule every
    ``eval.every_iters`` iterations (one evaluation where both fall on the same iteration)."""
    s = cfg.solver
    per_epoch = min(steps_per_epoch, s.max_steps_per_epoch) if s.max_steps_per_epoch else steps_per_epoch
    iterations = s.epochs * per_epoch
    if s.max_iters:
        iterations = min(iterations, s.max_iters)
    epochs = math.ceil(iterations / max(1, per_epoch))
    at = {min(e * per_epoch, iterations) for e in range(1, epochs + 1) if e % cfg.eval.every == 0 or e == epochs}
    if iteration_scheduled(cfg) and cfg.eval.every_iters:
        at.update(range(cfg.eval.every_iters, iterations + 1, cfg.eval.every_iters))
    return iterations, len(at)


def estimate(spec: StudySpec, cpus: int | None = None) -> Estimate:
    """The study's estimate: its first trial measured on this machine (``measure_trial``), scaled by the plan;
    ``cpus``: the local Ray's CPUs (``--num-cpus``), default this machine's."""
    return for_study(spec, cpus=cpus, **measure_trial(spec))


def for_study(spec: StudySpec, cpus: int | None = None, **trial) -> Estimate:
    """The estimate of ``spec`` from one trial's measured cost (``Estimate``'s per-trial fields): the plan's
    search and refit trials, and as many at once as ``cpus`` (default this machine's) and its GPUs allow."""
    return Estimate(search_trials=spec.search_trials, refit_trials=spec.refit_trials,
                    concurrency=concurrency(spec, spec.total_trials, cpus), **trial)


def measure_trial(spec: StudySpec) -> dict:
    """One trial's cost on this machine: its schedule and the measured seconds of a step and an evaluation."""
    from core.effective import resolve
    from core.engine import Trainer
    from core.factory import check_inputs
    cfg = resolve(spec.configs()[0])  # the first planned trial's config (a search study's: the base config)
    run_on_trial_resources(cfg, spec.resources)  # threads and device as a trial gets them
    check_inputs(cfg)
    trainer = Trainer(cfg, checkpoint_dir=None, log=lambda s: None)
    trainer.model.train()
    batches = iter(trainer.train_loader)
    first = next(batches)
    trainer.train_step(first)  # warm-up: allocations, cudnn autotuning
    _sync()
    start = time.perf_counter()
    timed = 0
    for batch in batches:
        trainer.train_step(batch)
        timed += 1
        if timed == STEPS:
            break
    _sync()
    step_s = (time.perf_counter() - start) / max(1, timed)
    eval_s, test_images = _time_eval(trainer)
    iterations, evaluations = _schedule(cfg, len(trainer.train_loader))
    return dict(device=str(trainer.device), iterations=iterations, images_per_iteration=int(first["images"].shape[0]),
                evaluations=evaluations, step_s=step_s, eval_s=eval_s, test_images=test_images)


@torch.inference_mode()
def _time_eval(trainer) -> tuple[float, int]:
    """Seconds of one evaluation's feature extraction, from ``EVAL_BATCHES`` batches scaled to the test set."""
    trainer.model.eval()
    total = len(trainer.splits.query) + len(trainer.splits.gallery)
    times = []  # (seconds, images) per batch; the first batch warms up and counts only if it is the only one
    for i, batch in enumerate(itertools.chain(trainer.gallery_loader, trainer.query_loader)):
        start = time.perf_counter()
        trainer.model(batch["images"].to(trainer.device), modality=batch["modality"].to(trainer.device))
        _sync()
        times.append((time.perf_counter() - start, batch["images"].shape[0]))
        if i == EVAL_BATCHES:
            break
    timed = times[1:] or times
    return sum(t for t, _ in timed) / max(1, sum(n for _, n in timed)) * total, total


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
