"""Training-step throughput: ``core.engine.Trainer.train_step`` against a minimal plain PyTorch loop.

Both run in this process, on the same real batches (from the trainer's own train loader), with the same model
architecture and loss, the same optimizer type, learning rate and weight decay (in one parameter group; the trainer
has one group per parameter, like the authors' code), and the same torch thread count; the plain loop is
``out = model(x, modality=m); loss = criterion(out, batch)[0]; zero_grad; backward; step`` and nothing else.
Steps of the two are interleaved (trainer, plain, trainer, plain, ...) and each side keeps its best step, so a
burst of load from a neighbour on a shared machine hits both sides alike. Target (issue 5): trainer >= 0.9 of the
plain loop.

Two configurations: the ``quick`` preset (ResNet-18, 64x32, batch 32, expAT) and ResNet-50 at 256x128 (batch 8 and
2 timed steps in ``--quick`` mode, batch 32 otherwise, since ResNet-50 runs at a few img/s per CPU core). Threads:
1 by default, the CPU share of a trial in every shipped study (``EXPAT_BENCH_THREADS`` changes it). Next to the
wall-clock ratio the notes give the ratio on process CPU time, which on a shared machine leaves out the time the
OS gave to other processes. With one thread (the default) the figures themselves are on process CPU time: a
single-threaded, compute-bound step takes as much CPU time as wall time on an idle machine, while on a busy shared
machine the wall time mostly measures the neighbours (wall-clock numbers stay in the notes). With more threads the
figures are wall-clock, since CPU time then adds up all threads.

It also measures, on the plain loop, whether the ``channels_last`` memory format speeds up the CPU training step,
and whether ``torch.inference_mode`` speeds up evaluation compared with ``torch.no_grad`` (the engine adopts only
what helps; the notes record the numbers), and what the trainer's optimizer step (one parameter group per
parameter, ``fused=True`` as ``core.optim`` builds it) costs against the same groups with torch's default
implementation.
"""
from __future__ import annotations

import copy
import os
import tempfile
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import cv2
import torch

from benchmarks.common import Figure

NAME = "train"


def scale_factor() -> float:
    """``EXPAT_BENCH_SCALE`` (< 1) shrinks the work further; the test suite uses it."""
    return float(os.environ.get("EXPAT_BENCH_SCALE", "1"))


@contextmanager
def temp_data_cache(prefix: str = "expat_bench_") -> Iterator[str]:
    """Point ``EXPAT_DATA_CACHE`` (generated data + image cache) at a fresh temporary folder for the block."""
    old = os.environ.get("EXPAT_DATA_CACHE")
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        os.environ["EXPAT_DATA_CACHE"] = tmp
        try:
            yield tmp
        finally:
            if old is None:
                os.environ.pop("EXPAT_DATA_CACHE", None)
            else:
                os.environ["EXPAT_DATA_CACHE"] = old


def bench_threads() -> int:
    """Torch threads for both sides: ``EXPAT_BENCH_THREADS``, else 1, the CPU share of a trial in every shipped
    study (``resources: {cpu: 1}``; the trainable sets ``run.threads`` from it)."""
    return max(1, int(os.environ.get("EXPAT_BENCH_THREADS", "1")))


def primary_clock(threads: int) -> tuple[str, Callable[[], float]]:
    """The clock the figures use: process CPU time with one thread, wall time otherwise (see the module docstring)."""
    return ("CPU time", time.process_time) if threads == 1 else ("wall clock", time.perf_counter)


def configs(quick: bool) -> list[tuple[str, dict, int]]:
    """(label, overrides of the quick preset, timed steps)."""
    small = scale_factor() < 1
    r50 = {"model.arch": "resnet50", "data.height": 256, "data.width": 128,
           "data.batch_size": 8 if small or quick else 32}
    if small:
        r50.update({"data.height": 64, "data.width": 32})
    return [("quick preset (resnet18 64x32, batch 32)", {}, 2 if small else (5 if quick else 20)),
            (f"resnet50 {r50['data.height']}x{r50['data.width']}, batch {r50['data.batch_size']}", r50,
             1 if small else (2 if quick else 4))]


def make_trainer(overrides: dict, threads: int):
    from core.config import load_config
    from core.engine import Trainer
    cfg = load_config("quick", {"run.progress": False, "run.threads": threads, "data.synthetic_ids": 16,
                                **overrides})
    return Trainer(cfg, log=lambda s: None)


def take_batches(trainer, count: int) -> list[dict]:
    from core.data import set_loader_epoch
    batches: list[dict] = []
    epoch = 0
    while len(batches) < count:
        epoch += 1
        set_loader_epoch(trainer.train_loader, epoch)
        for batch in trainer.train_loader:
            batches.append(batch)
            if len(batches) == count:
                break
    return batches


def plain_step_fn(trainer, channels_last: bool = False) -> Callable[[dict], None]:
    """A minimal PyTorch loop on a copy of the trainer's model and loss, with a plain optimizer of the same type."""
    model = copy.deepcopy(trainer.model)
    criterion = copy.deepcopy(trainer.criterion)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    s = trainer.cfg.solver
    params = list(model.parameters()) + [p for p in criterion.parameters() if p.requires_grad]
    opt = (torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay) if s.optimizer == "adam" else
           torch.optim.SGD(params, lr=s.lr, momentum=0.9, weight_decay=s.weight_decay))
    model.train()

    def step(batch: dict) -> None:
        images = batch["images"]
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        out = model(images, modality=batch["modality"])
        loss, _ = criterion(out, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def interleaved_best(fns: dict[str, Callable[[dict], object]], batches: list[dict], warmup: int = 1,
                     clock: Callable[[], float] = time.perf_counter) -> dict:
    """Best seconds per step of each function on ``clock``: steps interleaved over the same batches, the order of
    the functions rotated every round so that none always runs first."""
    return interleaved_best_clocks(fns, batches, warmup, (clock,))[0]


def interleaved_best_clocks(fns: dict[str, Callable[[dict], object]], batches: list[dict], warmup: int = 1,
                            clocks=(time.perf_counter, time.process_time)) -> list[dict]:
    """``interleaved_best`` on several clocks at once (wall time and this process's CPU time by default: with one
    thread the CPU time leaves out the time the OS gave to other processes on a shared machine)."""
    for fn in fns.values():
        for batch in batches[:warmup]:
            fn(batch)
    names = list(fns)
    best = [{name: float("inf") for name in fns} for _ in clocks]
    for i, batch in enumerate(batches[warmup:]):
        for name in names[i % len(names):] + names[:i % len(names)]:
            starts = [clock() for clock in clocks]
            fns[name](batch)
            for b, clock, start in zip(best, clocks, starts):
                b[name] = min(b[name], clock() - start)
    return best


def eval_forward_fn(model: torch.nn.Module, mode: str, channels_last: bool = False) -> Callable[[dict], None]:
    ctx = torch.inference_mode if mode == "inference_mode" else torch.no_grad
    if channels_last:
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)

    def forward(batch: dict) -> None:
        model.eval()
        images = batch["images"]
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with ctx():
            model(images, modality=batch["modality"])

    return forward


def run(quick: bool) -> list[Figure]:
    threads = bench_threads()
    small = scale_factor() < 1
    figures: list[Figure] = []
    old_threads, old_cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    try:
        with temp_data_cache():
            for index, (label, overrides, steps) in enumerate(configs(quick)):
                trainer = make_trainer(overrides, threads)
                assert torch.get_num_threads() == threads, "the engine must honour run.threads"
                batches = take_batches(trainer, steps + 1)  # one warm-up step, then `steps` timed
                n = batches[0]["images"].shape[0]
                plain = plain_step_fn(trainer)
                # Measure channels_last on the quick config always, on ResNet-50 only outside --quick (cost).
                variants = {"trainer": trainer.train_step, "plain": plain}
                if (index == 0 and not small) or not quick:
                    variants["plain channels_last"] = plain_step_fn(trainer, channels_last=True)
                clock_name, _ = primary_clock(threads)
                wall, cpu = interleaved_best_clocks(variants, batches, warmup=1)
                best, other = (cpu, wall) if clock_name == "CPU time" else (wall, cpu)
                other_name = "wall clock" if clock_name == "CPU time" else "CPU time"
                ips = {k: n / v for k, v in best.items()}
                notes = (f"{threads} torch thread(s), {clock_name}, best of {steps} interleaved steps on real batches "
                         f"of {n} images; on {other_name}: trainer {n / other['trainer']:.1f} img/s, plain "
                         f"{n / other['plain']:.1f} img/s, ratio {other['plain'] / other['trainer']:.2f}")
                if "plain channels_last" in ips:
                    cl = ips["plain channels_last"] / ips["plain"]
                    cl_other = other["plain"] / other["plain channels_last"]
                    notes += (f"; channels_last plain loop {ips['plain channels_last']:.1f} img/s = {cl:.2f}x NCHW "
                              f"({cl_other:.2f}x on {other_name}; the engine trains in NCHW)")
                figures.append(Figure(
                    name=f"Trainer.train_step img/s, {label}", value=ips["trainer"], unit="img/s",
                    reference_name="plain PyTorch loop (same model, batch, loss, optimizer, threads)",
                    reference_value=ips["plain"], target="ratio >= 0.9", notes=notes,
                    extra={"threads": threads, "batch": n, "steps": steps, "clock": clock_name,
                           **{f"{k} img/s": v for k, v in ips.items()},
                           **{f"{k} img/s ({other_name})": n / v for k, v in other.items()}}))
                if index == 0:
                    figures.append(_eval_figure(trainer, label, threads, quick, small))
                    figures.append(_optimizer_figure(trainer, label, threads))
                del trainer, batches, plain, variants
    finally:
        torch.set_num_threads(old_threads)
        cv2.setNumThreads(old_cv2_threads)
    return figures


def _eval_figure(trainer, label: str, threads: int, quick: bool, small: bool) -> Figure:
    """Evaluation forward: torch.inference_mode (what core.inference.extract_features uses) vs torch.no_grad, and
    channels_last at eval."""
    limit = 32 if small else (64 if quick else 512)
    batches, n = [], 0
    for batch in trainer.gallery_loader:
        batches.append({k: v[:limit - n] for k, v in batch.items()})
        n += batches[-1]["images"].shape[0]
        if n >= limit:
            break
    n = sum(b["images"].shape[0] for b in batches)
    forwards = {"inference_mode": eval_forward_fn(trainer.model, "inference_mode"),
                "no_grad": eval_forward_fn(trainer.model, "no_grad"),
                "inference_mode channels_last": eval_forward_fn(trainer.model, "inference_mode", True)}
    passes = {name: (lambda _, fn=fn: [fn(b) for b in batches]) for name, fn in forwards.items()}
    rounds = 3 if small or quick else 10
    wall, cpu = interleaved_best_clocks(passes, [None] * (rounds + 1), warmup=1)
    clock_name, _ = primary_clock(threads)
    best, other = (cpu, wall) if clock_name == "CPU time" else (wall, cpu)
    other_name = "wall clock" if clock_name == "CPU time" else "CPU time"
    ips = {k: n / v for k, v in best.items()}
    im, im_other = best["no_grad"] / best["inference_mode"], other["no_grad"] / other["inference_mode"]
    cl = best["inference_mode"] / best["inference_mode channels_last"]
    cl_other = other["inference_mode"] / other["inference_mode channels_last"]
    return Figure(
        name=f"eval forward img/s with torch.inference_mode, {label}", value=ips["inference_mode"], unit="img/s",
        reference_name="the same forward under torch.no_grad", reference_value=ips["no_grad"],
        target="informative (adopt only what helps)",
        notes=(f"{threads} thread(s), {clock_name}, best of {rounds} interleaved passes over {n} gallery images; "
               f"inference_mode = {im:.2f}x no_grad ({im_other:.2f}x on {other_name}); channels_last at eval = "
               f"{cl:.2f}x NCHW ({cl_other:.2f}x on {other_name})"),
        extra={f"{k} img/s": v for k, v in ips.items()})


def _optimizer_figure(trainer, label: str, threads: int) -> Figure:
    """The trainer's optimizer step (``core.optim``: one group per parameter, ``fused=True``) against the same
    groups with torch's default CPU implementation (informative: what fusing saves inside the training step)."""
    model = copy.deepcopy(trainer.model)
    from core.optim import build_optimizer
    s = trainer.cfg.solver
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    ours = build_optimizer(model, s.optimizer, s.lr, s.weight_decay, s.bias_lr_factor, s.weight_decay_bias)
    groups = [{k: v for k, v in g.items() if k in ("params", "lr", "weight_decay")} for g in ours.param_groups]
    default = (torch.optim.Adam(groups, fused=False) if s.optimizer == "adam" else
               torch.optim.SGD(groups, momentum=0.9, fused=False))
    wall, cpu = interleaved_best_clocks({"fused": lambda _: ours.step(), "default": lambda _: default.step()},
                                        [None] * 9, warmup=1)
    clock_name, _ = primary_clock(threads)
    best, other = (cpu, wall) if clock_name == "CPU time" else (wall, cpu)
    return Figure(
        name=f"optimizer step s ({s.optimizer}, one group per parameter, fused, as core.optim builds it), {label}",
        value=best["fused"], unit="s", reference_name="the same groups with torch's default (fused=False)",
        reference_value=best["default"], target="informative (below 1: the fused step is faster)",
        notes=(f"{threads} thread(s), {clock_name}, best of 8 steps: fused {best['fused'] * 1e3:.1f} ms vs default "
               f"{best['default'] * 1e3:.1f} ms (other clock: {other['fused'] * 1e3:.1f} vs "
               f"{other['default'] * 1e3:.1f} ms)"),
        extra={"fused s (other clock)": other["fused"], "default s (other clock)": other["default"]})


if __name__ == "__main__":
    import sys
    for f in run(quick="--quick" in sys.argv):
        ratio = f"{f.ratio:.2f}" if f.ratio is not None else "-"
        print(f"{f.name}: {f.value:.1f} {f.unit} | {f.reference_name}: {f.reference_value:.1f} | ratio {ratio} "
              f"({f.target})\n    {f.notes}")
