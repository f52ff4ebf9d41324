"""Data pipeline: train-loader throughput with the shared image cache, against the model's training step.

Everything runs in a fresh temporary ``EXPAT_DATA_CACHE`` (generated data and image cache), in this process:

- the real train loader of the ``quick`` preset (``core.data.build_train_loader``: cross-modal P x K sampler, flip,
  pad + crop, normalise, random erasing, collation; ``data.num_workers=0`` as in the preset) over full epochs, with
  the image cache cold (first epoch, cache built inside it), warm (the next trials: the file is only mapped), in
  memory, and with ``cache="none"`` (decode + resize every JPEG on every access);
- the reference: ``core.engine.Trainer.train_step`` img/s on real batches of the same preset (ResNet-18, 64x32,
  batch 32), same thread count. Target (issue 5): loading is never the bottleneck, i.e. loader img/s / train img/s
  well above 1;
- the startup a later trial pays: mapping the cache vs building it;
- what a cold cache build pays per image for the authors' resize (PIL's antialiased bilinear) at 384x128 from
  480x240 JPEGs, against OpenCV's plain bilinear used before;
- at 256x128 (ResNet-50 size; 128x64 source JPEGs, upscaled like Market-1501): warm cache vs decoding each time, and
  outside ``--quick`` also against ResNet-50's training step.

Throughputs use the clock of ``bench_train.primary_clock``: process CPU time with one thread (the default, a trial's
CPU share), so a busy neighbour on a shared machine does not move them; start-up and cache-build times are wall
clock, since they include file I/O.
"""
from __future__ import annotations

import time
from pathlib import Path

import cv2
import torch

from benchmarks.bench_train import (bench_threads, make_trainer, primary_clock, scale_factor, take_batches,
                                    temp_data_cache)
from benchmarks.common import Figure, best_time

NAME = "data"


CLOCK = time.perf_counter  # set by run(): process CPU time with one thread (see bench_train), else wall time


def _epoch_rate(loader, epoch: int) -> float:
    """Images per second of one full pass over ``loader`` (batches as the trainer receives them)."""
    from core.data import set_loader_epoch
    set_loader_epoch(loader, epoch)
    start = CLOCK()
    images = sum(batch["images"].shape[0] for batch in loader)
    return images / (CLOCK() - start)


def _best_rate(loader, epochs: int, first_epoch: int = 1) -> float:
    return max(_epoch_rate(loader, first_epoch + e) for e in range(epochs))


def _train_rate(trainer, steps: int) -> float:
    batches = take_batches(trainer, steps + 1)
    trainer.train_step(batches[0])  # warm-up
    best = float("inf")
    for batch in batches[1:]:
        start = CLOCK()
        trainer.train_step(batch)
        best = min(best, CLOCK() - start)
    return batches[0]["images"].shape[0] / best


def _fetch_figure(paths: list[str], cache, height: int, width: int, repeat: int, notes: str) -> Figure:
    """What the cache saves per image, without the augmentation around it: a row of the map vs decode + resize."""
    from core.data import read_image
    from core.data.transforms import resize
    fetch_s = best_time(lambda: [cache[p].copy() for p in paths], repeat=repeat)
    decode_s = best_time(lambda: [resize(read_image(p), height, width) for p in paths], repeat=repeat)
    return Figure(f"image fetch img/s at {height}x{width}: row of the mapped cache (copied)", len(paths) / fetch_s,
                  "img/s", "read_image + resize of the JPEG (what every epoch paid without a cache)",
                  len(paths) / decode_s, "ratio > 1", notes=notes)


def _resize_figure(folder, repeat: int) -> Figure:
    """What a cold cache build pays per image for the authors' resize (PIL's antialiased bilinear) at the RGB-IR
    input size, from SYSU-sized JPEGs, against OpenCV's plain bilinear that the platform used before."""
    import numpy as np
    from core.data import read_image
    from core.data.transforms import resize
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, size=(60, 30, 3), dtype=np.uint8)
    paths = []
    for i in range(64):
        path = str(folder / f"resize_{i}.jpg")
        cv2.imwrite(path, np.roll(cv2.resize(small, (240, 480), interpolation=cv2.INTER_CUBIC), i, axis=0))
        paths.append(path)
    pil_s = best_time(lambda: [resize(read_image(p), 384, 128) for p in paths], repeat=repeat)
    cv2_s = best_time(lambda: [cv2.resize(read_image(p), (128, 384), interpolation=cv2.INTER_LINEAR)
                               for p in paths], repeat=repeat)
    return Figure("cold cache build img/s at 384x128 from 480x240 JPEGs: read_image + PIL bilinear resize",
                  len(paths) / pil_s, "img/s", "read_image + cv2 INTER_LINEAR (no antialiasing; the resize before)",
                  len(paths) / cv2_s, "informative",
                  notes=f"{len(paths)} JPEGs; paid once per machine and image size (the cache keeps the pixels)")


def run(quick: bool) -> list[Figure]:
    from core.config import load_config
    from core.data import build_train_loader, cache_root
    from core.factory import build_dataset

    global CLOCK
    small = scale_factor() < 1
    threads = bench_threads()
    clock_name, CLOCK = primary_clock(threads)
    epochs = 2 if small or quick else 5
    ids = 16 if small else 40  # the quick preset's dataset (40 generated identities)
    old_threads, old_cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(threads)
    figures: list[Figure] = []
    try:
        with temp_data_cache() as tmp:
            cfg = load_config("quick", {"data.synthetic_ids": ids, "run.threads": threads, "run.progress": False})
            splits = build_dataset(cfg)
            d = cfg.data

            def loader(cache: str):
                return build_train_loader(splits, d.height, d.width, d.batch_size, d.num_instances, d.sampler,
                                          seed=0, num_workers=0, flip_prob=d.flip_prob, padding=d.padding,
                                          erasing_prob=d.erasing_prob, cache=cache)

            # Cold: the first trial on the machine builds the cache, then runs its first epoch.
            start, start_clock = time.perf_counter(), CLOCK()
            cold_loader = loader("disk")
            build_s = time.perf_counter() - start
            from core.data import set_loader_epoch
            set_loader_epoch(cold_loader, 1)
            images = sum(b["images"].shape[0] for b in cold_loader)
            cold_rate = images / (CLOCK() - start_clock)
            # Warm: a later trial maps the cache.
            start = time.perf_counter()
            warm_loader = loader("disk")
            map_s = time.perf_counter() - start
            warm_rate = _best_rate(warm_loader, epochs, first_epoch=2)
            memory_rate = _best_rate(loader("memory"), epochs)  # epoch 1 decodes; later epochs reuse the dict
            none_rate = _best_rate(loader("none"), epochs)
            # Reference: the training step of the same preset on real batches (its loaders map the same cache).
            trainer = make_trainer({"data.synthetic_ids": ids}, threads)
            train_rate = _train_rate(trainer, 3 if small else (6 if quick else 20))
            del trainer
            n_train = len(splits.train)
            common = (f"quick preset loader ({n_train} train images, {d.height}x{d.width}, batch {d.batch_size}, "
                      f"num_workers=0, {threads} thread(s), {clock_name}); best of {epochs} epochs")
            ref = "Trainer.train_step img/s (resnet18 64x32, batch 32, same threads)"
            target = "ratio >= 5 (loading never the bottleneck)"
            figures += [
                Figure("train loader img/s, warm shared cache (mapped)", warm_rate, "img/s", ref, train_rate, target,
                       notes=common + f"; in-memory dict cache {memory_rate:.0f} img/s",
                       extra={"memory img/s": memory_rate}),
                Figure("train loader img/s, first epoch with cold cache build", cold_rate, "img/s", ref, train_rate,
                       target, notes=f"cache build {build_s:.2f}s for {n_train} images, then one epoch"),
                Figure("train loader img/s, decoding JPEGs every time (cache=none)", none_rate, "img/s", ref,
                       train_rate, "informative", notes=common),
                Figure("train loader img/s, warm cache vs decoding every time", warm_rate, "img/s",
                       "same loader with cache=none", none_rate, "informative",
                       notes="the generated JPEGs are already 64x32: no resize, only the decode is saved"),
                _fetch_figure([r.path for r in splits.train], warm_loader.dataset.image_cache, d.height, d.width,
                              epochs + 1, f"{n_train} train images (64x32 JPEGs)"),
                Figure("later trial's loader start: map the cache", map_s, "s",
                       "first trial's loader start: decode + resize + write the cache", build_s, "ratio <= 0.5",
                       notes=f"cache folder {cache_root(tmp)}"),
            ]
            figures.append(_resize_figure(Path(tmp), epochs + 1))
            figures += _large(quick, small, threads)
    finally:
        torch.set_num_threads(old_threads)
        cv2.setNumThreads(old_cv2_threads)
    return figures


def _large(quick: bool, small: bool, threads: int) -> list[Figure]:
    """256x128 loader (ResNet-50 input size) from 128x64 JPEGs: warm cache vs decode each time, and (outside
    --quick) against ResNet-50's training step."""
    from core.data import build_splits, build_train_loader, ensure_generated
    from core.data import cache_base

    height, width = (128, 64) if small else (256, 128)
    ids = 12 if small else (24 if quick else 60)
    root = cache_base() / f"market_{height}x{width}"
    ensure_generated("market", root, num_train_ids=ids, num_test_ids=4, height=height // 2, width=width // 2)
    splits = build_splits("market1501", root)
    epochs = 2 if small else (3 if quick else 4)

    def loader(cache: str):
        return build_train_loader(splits, height, width, 16, 4, "pk", seed=0, num_workers=0, padding=10,
                                  erasing_prob=0.5, cache=cache)

    start = time.perf_counter()
    warm = loader("disk")
    build_s = time.perf_counter() - start
    warm_rate = _best_rate(warm, epochs)
    none_rate = _best_rate(loader("none"), epochs)
    paths = [r.path for r in splits.train]
    notes = (f"{len(paths)} train images, {height // 2}x{width // 2} JPEGs resized to {height}x{width}, "
             f"{threads} thread(s), {'wall clock' if CLOCK is time.perf_counter else 'CPU time'}; "
             f"cache build {build_s:.2f}s")
    figures = [
        _fetch_figure(paths, warm.dataset.image_cache, height, width, epochs + 1, notes),
        Figure(f"train loader img/s at {height}x{width}, warm cache", warm_rate, "img/s",
               "same loader with cache=none", none_rate, "informative",
               notes=notes + f"; batch 16, pk sampler, num_workers=0, best of {epochs} epochs; the augmentation "
                             f"(pad, crop, normalise, erasing) dominates both at this size")]
    if not quick:
        workers_rate = _best_rate(build_train_loader(splits, height, width, 16, 4, "pk", seed=0, num_workers=1,
                                                     cache="disk"), epochs)
        trainer = make_trainer({"model.arch": "resnet50", "data.height": height, "data.width": width,
                                "data.batch_size": 16, "data.synthetic_ids": 16}, threads)
        train_rate = _train_rate(trainer, 3)
        figures.append(Figure(f"train loader img/s at {height}x{width}, warm cache, vs ResNet-50", warm_rate, "img/s",
                              f"Trainer.train_step img/s (resnet50 {height}x{width}, batch 16)", train_rate,
                              "ratio >= 5 (loading never the bottleneck)",
                              notes=notes + f"; with 1 loader worker {workers_rate:.0f} img/s",
                              extra={"1 worker img/s": workers_rate}))
    return figures


if __name__ == "__main__":
    import sys
    for f in run(quick="--quick" in sys.argv):
        ratio = f"{f.ratio:.2f}" if f.ratio is not None else "-"
        ref = f"{f.reference_value:.3g}" if f.reference_value is not None else "-"
        print(f"{f.name}: {f.value:.3g} {f.unit} | {f.reference_name}: {ref} | ratio {ratio} ({f.target})\n"
              f"    {f.notes}")
