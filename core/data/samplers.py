"""Batch samplers: PK (RSB), cross-modal PK, the authors' random RGB-IR triplets, and plain random batches.

All of them are *batch samplers*: iterating yields one list per batch (pass them as `DataLoader(batch_sampler=...)`,
not `sampler=`). PK-style lists hold dataset indices, grouped identity by identity; the triplet sampler yields
`(index, role)` pairs in role-major order (see docs/ARCHITECTURE.md).

Every epoch's batches are a pure function of (seed, epoch): `set_epoch(e)` selects the epoch, and each full
`iter()` advances the epoch by one, so consecutive epochs differ even if the trainer never calls `set_epoch`
(calling it explicitly is what makes resumed runs reproduce the same batches).
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from typing import Sequence

import numpy as np

from .records import DatasetError

ROLES = ("anchor_rgb", "positive_rgb", "negative_rgb", "anchor_ir", "positive_ir", "negative_ir")


class EpochBatchSampler:
    """Base class: caches the batch list of the current epoch; subclasses implement `_make_batches(rng)`."""

    def __init__(self, seed: int):
        self.seed = int(seed)
        self.epoch = 0
        self._cached: tuple[int, list] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def batches(self) -> list[list]:
        """The batches of the current epoch (same list on every call until the epoch changes)."""
        if self._cached is None or self._cached[0] != self.epoch:
            rng = np.random.default_rng([self.seed, self.epoch])
            self._cached = (self.epoch, self._make_batches(rng))
        return self._cached[1]

    def _make_batches(self, rng: np.random.Generator) -> list[list]:
        raise NotImplementedError

    def __iter__(self):
        batches = self.batches()
        self.epoch += 1
        return iter(batches)

    def __len__(self) -> int:
        return len(self.batches())


def _group(pids: Sequence[int], positions: Sequence[int] | None = None) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = defaultdict(list)
    for i in (range(len(pids)) if positions is None else positions):
        groups[int(pids[i])].append(i)
    return dict(groups)


def _check_pk(batch_size: int, num_instances: int, num_ids: int, even: bool = False) -> int:
    if num_instances < 1 or batch_size % num_instances:
        raise DatasetError(f"batch_size={batch_size} must be a multiple of num_instances={num_instances} "
                           f"(a PK batch is P identities x K=num_instances images).")
    if even and num_instances % 2:
        raise DatasetError(f"num_instances={num_instances} must be even for the cross-modal sampler "
                           f"(K/2 RGB + K/2 IR images per identity).")
    num_pids = batch_size // num_instances
    if num_ids < num_pids:
        raise DatasetError(f"only {num_ids} identities are available but a batch needs "
                           f"P = batch_size/num_instances = {num_pids}; lower batch_size or raise num_instances.")
    return num_pids


def _chunks(indices: list[int], k: int, rng: np.random.Generator, num_chunks: int | None = None) -> list[list[int]]:
    """Shuffle one identity's indices into chunks of k (RSB): fewer than k images are drawn with replacement and
    leftovers are dropped. With `num_chunks`, fresh shuffles are appended until exactly that many chunks exist."""
    chunks: list[list[int]] = []
    while not chunks or (num_chunks is not None and len(chunks) < num_chunks):
        pool = np.asarray(indices)
        if len(pool) < k:
            pool = rng.choice(pool, size=k, replace=True)
        pool = rng.permutation(pool)
        chunks += [pool[i:i + k].tolist() for i in range(0, len(pool) - k + 1, k)]
    return chunks if num_chunks is None else chunks[:num_chunks]


def _assemble(chunks: dict[int, list[list[int]]], num_pids: int, rng: np.random.Generator) -> list[list[int]]:
    """RSB loop: while at least P identities have chunks left, pick P at random and take one chunk of each."""
    available = sorted(chunks)
    batches = []
    while len(available) >= num_pids:
        picked = [available[i] for i in rng.choice(len(available), size=num_pids, replace=False)]
        batches.append([idx for pid in picked for idx in chunks[pid].pop(0)])
        available = [pid for pid in available if chunks[pid]]
    return batches


class RandomIdentitySampler(EpochBatchSampler):
    """RSB PK sampler: each batch holds P = batch_size/num_instances identities with exactly K = num_instances
    images each (identities with fewer than K images are sampled with replacement). One epoch uses every
    identity's images once, in chunks of K, until fewer than P identities have chunks left."""

    def __init__(self, pids: Sequence[int], batch_size: int, num_instances: int, seed: int = 0):
        super().__init__(seed)
        self.groups = _group(pids)
        self.num_instances = int(num_instances)
        self.num_pids = _check_pk(int(batch_size), self.num_instances, len(self.groups))

    def _make_batches(self, rng):
        chunks = {pid: _chunks(idx, self.num_instances, rng) for pid, idx in self.groups.items()}
        return _assemble(chunks, self.num_pids, rng)


class CrossModalIdentitySampler(EpochBatchSampler):
    """PK sampler for RGB-IR: each batch = P identities x (K/2 RGB then K/2 IR images).

    Per identity an epoch has as many chunks as its *larger* modality needs, the smaller modality being
    reshuffled to match, so every image of both modalities is seen. Identities lacking a modality are excluded
    with a warning.
    """

    def __init__(self, pids: Sequence[int], modalities: Sequence[int], batch_size: int, num_instances: int,
                 seed: int = 0):
        super().__init__(seed)
        rgb = _group(pids, [i for i, m in enumerate(modalities) if m == 0])
        ir = _group(pids, [i for i, m in enumerate(modalities) if m == 1])
        both = sorted(set(rgb) & set(ir))
        missing = sorted(set(rgb) ^ set(ir))
        self.groups = {pid: (rgb[pid], ir[pid]) for pid in both}
        self.half = int(num_instances) // 2
        excluded = (f"{len(missing)} of {len(missing) + len(both)} identities lack RGB or IR images and are excluded "
                    f"from training batches (train labels {missing[:20]})")
        try:
            self.num_pids = _check_pk(int(batch_size), int(num_instances), len(self.groups), even=True)
        except DatasetError as exc:
            # One message, not a warning followed by an error: the exclusion is why too few identities are left.
            raise DatasetError(f"cross-modal sampler: {exc}".rstrip(".") + (f"; {excluded}" if missing else "")
                               ) from None
        if missing:
            warnings.warn(f"cross-modal sampler: {excluded}")

    def _make_batches(self, rng):
        chunks = {}
        for pid, (rgb, ir) in self.groups.items():
            n = max(len(rgb) // self.half, len(ir) // self.half, 1)
            rgb_chunks, ir_chunks = _chunks(rgb, self.half, rng, n), _chunks(ir, self.half, rng, n)
            chunks[pid] = [r + i for r, i in zip(rgb_chunks, ir_chunks)]
        return _assemble(chunks, self.num_pids, rng)


class TripletSampler(EpochBatchSampler):
    """The authors' RGB-IR random triplets (docs/REPRODUCTION.md §7.2, `SYSU_triplet_dataset`).

    One epoch = every RGB image of the eligible train identities, shuffled; the image only gives the identity.
    Per anchor identity: anchor_rgb random RGB image, positive_rgb a different RGB image, negative_rgb a random
    image of a uniformly drawn other identity; the same for IR with an independently drawn negative identity.
    With `anchor="index"` anchor_rgb is the indexed image itself (the authors' RegDB variant).
    Each batch holds `batch_size` triplets as 6*batch_size `(index, role)` pairs, role-major (ROLES order);
    incomplete last batches are dropped (authors: drop_last=True). Identities with fewer than 2 images in a
    modality cannot give a distinct positive and are excluded with a warning.
    """

    def __init__(self, pids: Sequence[int], modalities: Sequence[int], batch_size: int, seed: int = 0,
                 anchor: str = "random"):
        super().__init__(seed)
        if anchor not in ("random", "index"):
            raise DatasetError(f"triplet anchor='{anchor}' is not one of ['random', 'index'].")
        self.anchor, self.batch_size = anchor, int(batch_size)
        groups = [_group(pids, [i for i, m in enumerate(modalities) if m == mod]) for mod in (0, 1)]
        ids = sorted(pid for pid in set(groups[0]) | set(groups[1])
                     if len(groups[0].get(pid, ())) >= 2 and len(groups[1].get(pid, ())) >= 2)
        excluded = sorted((set(groups[0]) | set(groups[1])) - set(ids))
        if len(ids) < 2:  # one message, not a warning followed by an error
            raise DatasetError(f"triplet sampler needs at least 2 identities with >=2 RGB and >=2 IR images, "
                               f"found {len(ids)} ({len(excluded)} identities have fewer); use data.sampler="
                               f"cross_modal, which needs one image per modality and samples with replacement.")
        if excluded:
            warnings.warn(f"triplet sampler: {len(excluded)} identities have fewer than 2 RGB or 2 IR images and "
                          f"are excluded: {excluded[:20]}")
        # per modality: members concatenated id by id, with offset/count per id position
        self.members = [np.concatenate([groups[m][pid] for pid in ids]) for m in (0, 1)]
        self.counts = [np.array([len(groups[m][pid]) for pid in ids]) for m in (0, 1)]
        self.offsets = [np.concatenate([[0], np.cumsum(c)[:-1]]) for c in self.counts]
        self.num_ids = len(ids)
        if len(self.members[0]) < self.batch_size:
            raise DatasetError(f"triplet sampler: {len(self.members[0])} RGB anchors are fewer than "
                               f"batch_size={self.batch_size} triplets.")

    def _modality_roles(self, m: int, id_pos: np.ndarray, anchor_pos: np.ndarray | None, rng) -> list[np.ndarray]:
        count, offset = self.counts[m], self.offsets[m]
        n = len(id_pos)
        if anchor_pos is None:
            anchor_pos = np.floor(rng.random(n) * count[id_pos]).astype(np.int64)
        pos = np.floor(rng.random(n) * (count[id_pos] - 1)).astype(np.int64)
        pos += pos >= anchor_pos
        neg_id = np.floor(rng.random(n) * (self.num_ids - 1)).astype(np.int64)
        neg_id += neg_id >= id_pos
        neg = np.floor(rng.random(n) * count[neg_id]).astype(np.int64)
        return [self.members[m][offset[id_pos] + anchor_pos], self.members[m][offset[id_pos] + pos],
                self.members[m][offset[neg_id] + neg]]

    def _make_batches(self, rng):
        order = rng.permutation(len(self.members[0]))  # positions in the concatenated RGB members
        id_pos = np.searchsorted(self.offsets[0], order, side="right") - 1
        anchor_pos = order - self.offsets[0][id_pos] if self.anchor == "index" else None
        roles = self._modality_roles(0, id_pos, anchor_pos, rng) + self._modality_roles(1, id_pos, None, rng)
        b = self.batch_size
        return [[(int(idx), r) for r, role in enumerate(roles) for idx in role[s:s + b]]
                for s in range(0, len(order) - b + 1, b)]


class RandomBatchSampler(EpochBatchSampler):
    """Plain shuffled batches of `batch_size` indices (softmax-only training); the last partial batch is dropped."""

    def __init__(self, num_items: int, batch_size: int, seed: int = 0):
        super().__init__(seed)
        if num_items < batch_size:
            raise DatasetError(f"{num_items} training images are fewer than batch_size={batch_size}.")
        self.num_items, self.batch_size = int(num_items), int(batch_size)

    def _make_batches(self, rng):
        order = rng.permutation(self.num_items).tolist()
        b = self.batch_size
        return [order[s:s + b] for s in range(0, self.num_items - b + 1, b)]
