"""A validation split carved out of the training identities, for selecting hyperparameters without the test set.

SYSU-MM01 ships one (``exp/val_id.txt``, read by its parser); the other datasets do not, so a seeded draw of
training identities is held out instead: the training never sees them, and they form the query and gallery that
searches and early stopping select on.
"""
from __future__ import annotations

import numpy as np

from .records import DatasetError, DatasetSplits, ImageRecord


def hold_out_identities(splits: DatasetSplits, fraction: float, seed: int) -> DatasetSplits:
    """``splits`` with ``round(fraction * P)`` (at least 2) training identities moved to query/gallery.

    Cross-modal data: query = the held-out IR / thermal images, gallery = their RGB / visible images (the test
    protocols' directions). Single modality: one image per (identity, camera) is a query, the rest the gallery,
    so every query has a match from another camera when the identity has one.
    """
    pids = sorted({r.pid for r in splits.train})
    n_val = max(2, round(fraction * len(pids)))
    if n_val > len(pids) - 2:
        raise DatasetError(f"{splits.name}: eval.val_fraction={fraction} holds out {n_val} of {len(pids)} training "
                           f"identities, leaving too few to train on; lower eval.val_fraction")
    rng = np.random.default_rng(seed)
    held = set(rng.choice(pids, size=n_val, replace=False).tolist())
    train = [r for r in splits.train if r.pid not in held]
    val = [r for r in splits.train if r.pid in held]
    if splits.cross_modal:
        query = [r for r in val if r.modality == 1]
        gallery = [r for r in val if r.modality == 0]
    else:
        query, gallery = _one_query_per_camera(val, rng)
    out = splits.with_records(train=train, query=query, gallery=gallery)
    return DatasetSplits(out.name, out.train, out.query, out.gallery, out.num_train_pids, out.cross_modal,
                         info={**splits.info, "eval_ids": "val", "val_ids": sorted(held)})


def _one_query_per_camera(records: list[ImageRecord], rng: np.random.Generator):
    groups: dict[tuple[int, int], list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault((r.pid, r.camid), []).append(i)
    queries = {int(rng.choice(idx)) for idx in groups.values()}
    return ([r for i, r in enumerate(records) if i in queries],
            [r for i, r in enumerate(records) if i not in queries])
