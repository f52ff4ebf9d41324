"""Torch Dataset and DataLoader builders producing the batch dicts of docs/ARCHITECTURE.md.

Reproducibility: the batch sampler is a pure function of (seed, epoch), and every item's augmentation uses its
own numpy Generator seeded from (seed, epoch, batch, position). Results therefore do not depend on the number of
workers, on which worker handles an item, or on resuming mid-study, as long as `set_loader_epoch` is called.
"""

from __future__ import annotations

import warnings
from typing import Iterator, Sequence

import cv2
import numpy as np
from torch.utils.data import DataLoader, Dataset

from .cache import CACHE_MODES, ImageCache, build_image_cache
from .images import read_image
from .records import DatasetError, DatasetSplits, ImageRecord
from .samplers import (CrossModalIdentitySampler, EpochBatchSampler, RandomBatchSampler, RandomIdentitySampler,
                       TripletSampler)
from .transforms import ReidTransform, build_transforms

SAMPLERS = ("pk", "cross_modal", "triplets", "random")
_AUGMENT_SALT = 1  # keeps item seeds [seed, epoch, 1, b, j] apart from sampler seeds [seed, epoch]


class ReidDataset(Dataset):
    """Records + transform. Items are dicts: images, pids, camids, modality (+ roles for triplet keys).

    A key is an index, or `(index, role, aug_seed)` where role is None or 0..5 and aug_seed seeds the item's
    augmentation. `cache` says where the resized uint8 images come from:

    - "disk" (default): the shared memory-mapped cache of `core.data.cache`, built (or just mapped) when the
      dataset is constructed; every trial and worker on the machine shares it, so JPEGs are decoded once per
      machine. Workers open the map lazily (the dataset pickles without pixels).
    - "memory": a per-process dict (path -> array), filled on first use; each worker holds its own copy.
    - "none": decode and resize on every access.
    `True`/`False` mean "disk"/"none". `cache_dir` overrides the cache folder (default: `$EXPAT_DATA_CACHE`).
    """

    def __init__(self, records: Sequence[ImageRecord], transform: ReidTransform, cache: str | bool = "disk",
                 cache_dir: str | None = None):
        mode = ("disk" if cache else "none") if isinstance(cache, bool) else cache
        if mode not in CACHE_MODES:
            raise DatasetError(f"unknown image cache mode {cache!r}; valid: {', '.join(CACHE_MODES)}")
        self.records = list(records)
        self.transform = transform
        self.cache_mode = mode
        self.cache: dict[str, np.ndarray] | None = {} if mode == "memory" else None
        self.image_cache: ImageCache | None = None
        if mode == "disk":
            try:
                self.image_cache = build_image_cache([r.path for r in self.records], transform.height,
                                                     transform.width, prepare=transform.prepare, cache_dir=cache_dir)
            except OSError as exc:  # cache folder not writable, disk full: keep training, decode once per process
                warnings.warn(f"image cache unavailable ({exc}); falling back to the in-memory cache. Set "
                              f"EXPAT_DATA_CACHE to a writable folder with room for the resized images.")
                self.cache_mode, self.cache = "memory", {}

    def __len__(self) -> int:
        return len(self.records)

    def load(self, path: str) -> np.ndarray:
        """The resized uint8 image for `path`: the single place where pixels are read."""
        if self.image_cache is not None:
            return self.image_cache[path]
        if self.cache is not None and path in self.cache:
            return self.cache[path]
        image = self.transform.prepare(read_image(path))
        if self.cache is not None:
            self.cache[path] = image
        return image

    def __getitem__(self, key) -> dict:
        index, role, aug_seed = key if isinstance(key, tuple) else (key, None, None)
        record = self.records[index]
        rng = np.random.default_rng(aug_seed) if aug_seed is not None else None
        item = {"images": self.transform.augment(self.load(record.path), rng), "pids": record.pid,
                "camids": record.camid, "modality": record.modality}
        if role is not None:
            item["roles"] = role
        return item


class SeededBatchSampler:
    """Wraps an `EpochBatchSampler`, turning each key into `(index, role, aug_seed)` (see module docstring)."""

    def __init__(self, inner: EpochBatchSampler, seed: int):
        self.inner, self.seed = inner, int(seed)

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[tuple]]:
        epoch = self.inner.epoch
        for b, batch in enumerate(self.inner):
            yield [(*(key if isinstance(key, tuple) else (key, None)), (self.seed, epoch, _AUGMENT_SALT, b, j))
                   for j, key in enumerate(batch)]

    def __len__(self) -> int:
        return len(self.inner)


def _worker_init(_worker_id: int) -> None:
    cv2.setNumThreads(1)  # one OpenCV thread per worker: avoids oversubscribing the CPU cores


def build_train_sampler(splits: DatasetSplits, batch_size: int, num_instances: int, sampler: str,
                        seed: int) -> EpochBatchSampler:
    """The batch sampler for `sampler`. For "triplets", batch_size counts triplets (N = 6 * batch_size images,
    the authors' train_batch_size=8 -> 48); for the others it counts images."""
    if sampler not in SAMPLERS:
        raise DatasetError(f"unknown sampler '{sampler}'; valid: {', '.join(SAMPLERS)}.")
    if sampler in ("cross_modal", "triplets") and not splits.cross_modal:
        raise DatasetError(f"sampler '{sampler}' needs an RGB-IR dataset, but '{splits.name}' is single-modality; "
                           f"use sampler 'pk' or 'random'.")
    pids = [r.pid for r in splits.train]
    modalities = [r.modality for r in splits.train]
    if sampler == "pk":
        return RandomIdentitySampler(pids, batch_size, num_instances, seed)
    if sampler == "cross_modal":
        return CrossModalIdentitySampler(pids, modalities, batch_size, num_instances, seed)
    if sampler == "triplets":
        return TripletSampler(pids, modalities, batch_size, seed)
    return RandomBatchSampler(len(pids), batch_size, seed)


def _loader(dataset: Dataset, num_workers: int, pin_memory: bool, **kwargs) -> DataLoader:
    return DataLoader(dataset, num_workers=num_workers, pin_memory=pin_memory, worker_init_fn=_worker_init,
                      persistent_workers=num_workers > 0, **kwargs)


def build_train_loader(splits: DatasetSplits, height: int, width: int, batch_size: int, num_instances: int = 4,
                       sampler: str = "pk", seed: int = 0, num_workers: int = 0, flip_prob: float = 0.5,
                       padding: int = 10, erasing_prob: float = 0.5, cache: str | bool = "disk",
                       pin_memory: bool = False, cache_dir: str | None = None) -> DataLoader:
    """Training DataLoader over `splits.train` yielding {images, pids, camids, modality[, roles]} batches.
    `cache`: "disk" (shared memory-mapped image cache), "memory" or "none" (see `ReidDataset`)."""
    batches = build_train_sampler(splits, batch_size, num_instances, sampler, seed)
    transform = build_transforms(height, width, True, flip_prob, padding, erasing_prob)
    return _loader(ReidDataset(splits.train, transform, cache, cache_dir), num_workers, pin_memory,
                   batch_sampler=SeededBatchSampler(batches, seed))


def build_test_loader(records: Sequence[ImageRecord], height: int, width: int, batch_size: int,
                      num_workers: int = 0, cache: str | bool = "disk", pin_memory: bool = False,
                      cache_dir: str | None = None) -> DataLoader:
    """Evaluation DataLoader: record order, no augmentation, yields {images, pids, camids, modality}."""
    dataset = ReidDataset(records, build_transforms(height, width, train=False), cache, cache_dir)
    return _loader(dataset, num_workers, pin_memory, batch_size=batch_size, shuffle=False)


def set_loader_epoch(loader: DataLoader, epoch: int) -> None:
    """Select the epoch whose batches and augmentations the next iteration over `loader` produces."""
    if not hasattr(loader.batch_sampler, "set_epoch"):
        raise TypeError("set_loader_epoch needs a loader from build_train_loader")
    loader.batch_sampler.set_epoch(epoch)

