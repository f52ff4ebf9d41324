"""Plain data types shared by every data module.

Kept free of I/O so that parsers, samplers, loaders and the eval module can all agree on one record type
without importing each other (see docs/ARCHITECTURE.md, "Conventions").
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable


class DatasetError(ValueError):
    """A dataset cannot be used as configured.

    Messages always say what is wrong *and* how to fix it (expected layout, option to set), because these errors
    usually surface inside a long-running study where the traceback alone is not enough.
    """


@dataclass(frozen=True)
class ImageRecord:
    """One image on disk.

    `camid` is 0-based for Market/Duke, the camera number (1..6) for SYSU-MM01, and 0 visible / 1 thermal for
    RegDB. `modality` is 0 = RGB/visible, 1 = IR/thermal.
    """

    path: str
    pid: int
    camid: int
    modality: int = 0


@dataclass(frozen=True)
class DatasetSplits:
    """What every dataset parser returns.

    `train` pids are relabelled to 0..num_train_pids-1 (sorted by original pid); `query`/`gallery` keep the
    original pids, which the evaluation protocols rely on (e.g. Market distractors have pid 0).
    For SYSU-MM01 `gallery` is the full RGB pool: the eval module samples the per-trial gallery from it.
    """

    name: str
    train: list[ImageRecord]
    query: list[ImageRecord]
    gallery: list[ImageRecord]
    num_train_pids: int
    cross_modal: bool
    info: dict = field(default_factory=dict)

    def summary(self) -> str:
        """One line for logs: sizes of each split."""

        def ids(records: list[ImageRecord]) -> int:
            return len({r.pid for r in records})

        return (f"{self.name}: train {len(self.train)} images / {self.num_train_pids} ids, "
                f"query {len(self.query)} / {ids(self.query)} ids, "
                f"gallery {len(self.gallery)} / {ids(self.gallery)} ids")

    def with_records(self, train=None, query=None, gallery=None) -> "DatasetSplits":
        """Copy with some lists replaced; train pids are relabelled again so they stay contiguous."""
        new_train = self.train if train is None else train
        relabelled, num = relabel_pids(new_train)
        return replace(self, train=relabelled, num_train_pids=num,
                       query=self.query if query is None else query,
                       gallery=self.gallery if gallery is None else gallery)


def relabel_pids(records: Iterable[ImageRecord]) -> tuple[list[ImageRecord], int]:
    """Map pids to 0..P-1 in sorted order of the original pid (what the classifier trains on).

    Idempotent on already-relabelled lists, so it is safe to apply again after dropping records.
    """
    records = list(records)
    mapping = {pid: i for i, pid in enumerate(sorted({r.pid for r in records}))}
    return [replace(r, pid=mapping[r.pid]) for r in records], len(mapping)
