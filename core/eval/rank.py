"""CMC, mAP and mINP for re-id ranking, computed without sorting the gallery.

Why no sort: every metric here depends only on where each query's *true matches* land in the ranking of the
kept gallery items. With a total order "ascending distance, ties broken by lower gallery index" (the order of a
stable argsort), the 1-based rank of a true match ``j`` is

    rank(j) = 1 + #{kept i : (d[i], i) < (d[j], j)}

so a query with ``M`` true matches costs ``M`` linear counting passes over its row instead of an
``O(g log g)`` sort. For float32 distances the pair ``(d, index)`` is packed into one int64 key (an
order-preserving integer image of the float in the high 32 bits, the column in the low 32), which makes each pass
a single vectorised ``<`` + count and makes the tie rule exact. Queries are processed in chunks of rows (bounded
memory) and, inside a chunk, sorted by ``M`` so that pass ``k`` only touches the rows that still have a ``k``-th
match.

Two protocols share the core through an ``exclude`` callable that says which gallery items a query must ignore:
Market/Duke drop items with the same pid *and* camera (:func:`evaluate_rank`); SYSU-MM01 drops every camera-2
item for a camera-3 query (``core.eval.sysu``). Keep the two rules apart (docs/REPRODUCTION.md §9.19).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

Exclude = Callable[[np.ndarray], "np.ndarray | None"]

_KEY_MAX = np.iinfo(np.int64).max
_CHUNK_ELEMS = 1 << 18  # distance entries per chunk: ~2 MB of int64 keys, cache friendly for the repeated passes


def as_numpy(x) -> np.ndarray:
    """Torch tensors (any device) or array-likes -> numpy, without copying when not needed."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _float32_keys(d32: np.ndarray) -> np.ndarray:
    """int64 keys that order entries by (distance, column). ``d32`` must be a scratch array (it is overwritten)."""
    d32 += np.float32(0.0)  # -0.0 -> +0.0: both zeros must tie, as they do as floats
    b = d32.view(np.int32)
    b ^= (b >> 31) & np.int32(0x7FFFFFFF)  # IEEE bits -> order-preserving signed integers
    keys = b.astype(np.int64)
    keys *= np.int64(1 << 32)
    keys += np.arange(d32.shape[1], dtype=np.int64)
    return keys


def _row_counts(mask: np.ndarray) -> np.ndarray:
    """Row sums of a C-contiguous bool matrix (a narrow-dtype byte sum is several times faster than
    ``count_nonzero(axis=1)``)."""
    acc = np.uint16 if mask.shape[1] < (1 << 16) else np.int64
    return mask.view(np.uint8).sum(axis=1, dtype=acc)


def _match_positions(match: np.ndarray):
    """Row-major ``(row, col)`` of the true matches (flat nonzero: far faster than 2-D ``np.nonzero``)."""
    flat = np.flatnonzero(match)
    r = flat // match.shape[1]
    return r, flat - r * match.shape[1]


def _ranks_from_keys(keys: np.ndarray, match: np.ndarray, exclude: np.ndarray | None, m: np.ndarray) -> np.ndarray:
    """Ranks of the true matches, ascending per row. Rows must be ordered by decreasing ``m``."""
    if exclude is not None:
        keys[exclude] = _KEY_MAX  # never below any match key (a column index is < 2**32 - 1)
    r, c = _match_positions(match)
    t = keys[r, c]
    t = t[np.lexsort((t, r))]  # r is already sorted, so it stays aligned with t
    pos = np.arange(r.size) - np.repeat(np.cumsum(m) - m, m)
    kmax = int(m[0]) if m.size else 0
    thr = np.full((keys.shape[0], kmax), _KEY_MAX, dtype=np.int64)
    thr[r, pos] = t
    below = np.zeros((keys.shape[0], kmax), dtype=np.int64)
    buf = np.empty(keys.shape, dtype=bool)
    for k in range(kmax):
        n = int(np.count_nonzero(m > k))
        below[:n, k] = _row_counts(np.less(keys[:n], thr[:n, k:k + 1], out=buf[:n]))
    return below + 1


def _ranks_generic(d: np.ndarray, match: np.ndarray, exclude: np.ndarray | None, m: np.ndarray) -> np.ndarray:
    """Same as :func:`_ranks_from_keys` for float64 distances that float32 cannot hold exactly.

    Two passes per match (``<`` and ``<=``); the rare rows with a tie against the match get the exact
    lower-index count by a direct look at that row.
    """
    if exclude is not None:
        d[exclude] = np.nan  # NaN is neither <, <= nor == anything: excluded items never count
    r, c = _match_positions(match)
    t = d[r, c]
    order = np.lexsort((c, t, r))
    t, c = t[order], c[order]
    pos = np.arange(r.size) - np.repeat(np.cumsum(m) - m, m)
    kmax = int(m[0]) if m.size else 0
    thr = np.full((d.shape[0], kmax), np.nan)
    col = np.zeros((d.shape[0], kmax), dtype=np.int64)
    thr[r, pos] = t
    col[r, pos] = c
    below = np.zeros((d.shape[0], kmax), dtype=np.int64)
    for k in range(kmax):
        n = int(np.count_nonzero(m > k))
        lt = _row_counts(d[:n] < thr[:n, k:k + 1]).astype(np.int64)
        le = _row_counts(d[:n] <= thr[:n, k:k + 1]).astype(np.int64)
        for i in np.flatnonzero(le - lt > 1):  # ties other than the match itself: lower index ranks first
            lt[i] += np.count_nonzero(d[i, :col[i, k]] == thr[i, k])
        below[:n, k] = lt
    return below + 1


def _chunk_metrics(dist: np.ndarray, rows: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray,
                   exclude: Exclude | None):
    """First-match rank (0 = no match), AP and INP for the queries ``rows``."""
    qp = q_pids[rows]
    match = qp[:, None] == g_pids[None, :]
    ex = exclude(rows) if exclude is not None else None
    if ex is not None:
        ex = np.broadcast_to(ex, match.shape)
        match &= ~ex
    m_orig = _row_counts(match).astype(np.int64)
    perm = np.argsort(-m_orig, kind="stable")
    m = m_orig[perm]
    match = match[perm]
    if ex is not None:
        ex = ex[perm]
    d = dist[rows[perm]]  # a fresh copy we may overwrite
    if d.dtype != np.float32:
        d64 = d.astype(np.float64, copy=False)
        d32 = d64.astype(np.float32)
        if not np.array_equal(d32, d64):
            if np.isnan(d64).any():
                raise ValueError("distance matrix contains NaN")
            ranks = _ranks_generic(d64, match, ex, m)  # d64 is a fresh copy (fancy indexing / astype)
            return _stats(ranks, m, perm)
        d = d32
    if np.isnan(d).any():
        raise ValueError("distance matrix contains NaN")
    ranks = _ranks_from_keys(_float32_keys(d), match, ex, m)
    return _stats(ranks, m, perm)


def _stats(ranks: np.ndarray, m: np.ndarray, perm: np.ndarray):
    n = m.size
    first = np.zeros(n, dtype=np.int64)
    ap = np.zeros(n)
    inp = np.zeros(n)
    valid = m > 0
    if valid.any():
        for k in range(ranks.shape[1]):  # column by column: the sum order never depends on the chunk's width
            ap += np.where(m > k, (k + 1) / ranks[:, k], 0.0)
        first[valid] = ranks[valid, 0]
        ap[valid] /= m[valid]
        inp[valid] = m[valid] / ranks[valid, m[valid] - 1]  # INP = #matches / rank of the last match
    out_first, out_ap, out_inp = np.empty_like(first), np.empty_like(ap), np.empty_like(inp)
    out_first[perm], out_ap[perm], out_inp[perm] = first, ap, inp
    return out_first, out_ap, out_inp


def query_metrics(distmat, q_pids, g_pids, exclude: Exclude | None = None, chunk_elems: int = _CHUNK_ELEMS):
    """Per-query ``(first_rank, AP, INP)``; ``first_rank`` is 1-based and 0 for a query without a true match.

    ``exclude(rows)`` gets an int array of query indices and returns a bool mask ``[len(rows), g]`` (broadcastable)
    of gallery items those queries must ignore, or ``None``. A true match is a kept item with the query's pid.
    """
    dist = as_numpy(distmat)
    q_pids, g_pids = as_numpy(q_pids).ravel(), as_numpy(g_pids).ravel()
    if dist.ndim != 2 or dist.shape != (q_pids.size, g_pids.size):
        raise ValueError(f"distmat shape {dist.shape} does not match {q_pids.size} queries x {g_pids.size} gallery")
    step = max(1, chunk_elems // max(1, dist.shape[1]))
    parts = [_chunk_metrics(dist, np.arange(s, min(s + step, dist.shape[0])), q_pids, g_pids, exclude)
             for s in range(0, dist.shape[0], step)]
    if not parts:
        return np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0)
    return tuple(np.concatenate(p) for p in zip(*parts))


def _float64_keys(d: np.ndarray) -> np.ndarray:
    """int64 keys with the order of the float64 distances (``-0.0`` ties ``+0.0``)."""
    b = (d.astype(np.float64) + 0.0).view(np.int64)
    return b ^ ((b >> 63) & np.int64(0x7FFFFFFFFFFFFFFF))


def first_identity_ranks(distmat, q_pids, g_pids, exclude: Exclude | None = None,
                         chunk_elems: int = _CHUNK_ELEMS) -> np.ndarray:
    """Per query, the 1-based rank of the first true match in the ranked gallery reduced to the first (closest)
    kept image of each identity; 0 for a query without a true match.

    This is the identity-deduplicated CMC of SYSU-MM01's official evaluation: the rank counts the *identities*,
    not the images, ranked before the true one. Same total order as :func:`query_metrics` (ascending distance,
    ties by lower gallery index). Without sorting: per query and identity the minimum ``(distance, column)`` of its
    kept images (``np.minimum.reduceat`` over the gallery grouped by pid), then a count of the identities whose
    minimum lies below the true identity's.
    """
    dist = as_numpy(distmat)
    q_pids, g_pids = as_numpy(q_pids).ravel(), as_numpy(g_pids).ravel()
    if dist.ndim != 2 or dist.shape != (q_pids.size, g_pids.size):
        raise ValueError(f"distmat shape {dist.shape} does not match {q_pids.size} queries x {g_pids.size} gallery")
    if np.isnan(dist).any():
        raise ValueError("distance matrix contains NaN")
    first = np.zeros(q_pids.size, dtype=np.int64)
    if g_pids.size == 0:
        return first
    order = np.argsort(g_pids, kind="stable")  # columns grouped by identity, ascending column inside a group
    ids, starts, sizes = np.unique(g_pids[order], return_index=True, return_counts=True)
    true_id = np.searchsorted(ids, q_pids).clip(max=ids.size - 1)
    has_id = ids[true_id] == q_pids
    step = max(1, chunk_elems // max(1, dist.shape[1]))
    for s in range(0, dist.shape[0], step):
        rows = np.arange(s, min(s + step, dist.shape[0]))
        keys = _float64_keys(dist[rows][:, order])
        if exclude is not None and (ex := exclude(rows)) is not None:
            keys[np.broadcast_to(ex, (rows.size, g_pids.size))[:, order]] = _KEY_MAX
        best = np.minimum.reduceat(keys, starts, axis=1)  # [rows, identities]
        # The lowest column among an identity's images at its minimum distance (the tie rule).
        at_best = keys == np.repeat(best, sizes, axis=1)
        best_col = np.minimum.reduceat(np.where(at_best, order[None, :], _KEY_MAX), starts, axis=1)
        r = np.arange(rows.size)
        t_key, t_col = best[r, true_id[rows]], best_col[r, true_id[rows]]
        before = (best < t_key[:, None]) | ((best == t_key[:, None]) & (best_col < t_col[:, None]))
        valid = has_id[rows] & (t_key < _KEY_MAX)
        first[rows[valid]] = 1 + _row_counts(np.ascontiguousarray(before[valid])).astype(np.int64)
    return first


def summarize(first_rank: np.ndarray, ap: np.ndarray, inp: np.ndarray, max_rank: int = 50):
    """Average per-query results over the valid queries -> ``(cmc[max_rank], mAP, mINP)`` as fractions.

    CMC is built from first-match ranks, so a query that keeps fewer than ``max_rank`` gallery items simply
    stays at 1 after its first match (the padding of docs/REPRODUCTION.md §9.8, no ragged arrays).
    """
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    valid = first_rank > 0
    nv = int(np.count_nonzero(valid))
    if nv == 0:
        raise ValueError("no query has a true match in the gallery after exclusion, so CMC/mAP are undefined "
                         "(do query and gallery share any pid?)")
    hist = np.bincount(np.minimum(first_rank[valid], max_rank + 1) - 1, minlength=max_rank + 1)[:max_rank]
    cmc = np.cumsum(hist) / nv
    return cmc.astype(np.float64), float(ap[valid].mean()), float(inp[valid].mean())


def evaluate_with_exclusion(distmat, q_pids, g_pids, exclude: Exclude | None = None, max_rank: int = 50):
    """``(cmc, mAP, mINP)`` for any exclusion rule; see :func:`query_metrics`."""
    return summarize(*query_metrics(distmat, q_pids, g_pids, exclude), max_rank=max_rank)


def evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50):
    """Market-1501/Duke protocol: ``(cmc[max_rank], mAP, mINP)`` as fractions in [0, 1].

    Gallery items with the query's pid *and* camera are removed (the same view of the same person is not a
    re-identification); queries left without a true match are skipped. Ranking is by ascending distance, ties
    by lower gallery index. AP averages precision at each true match; INP = #matches / rank of the last match
    (AGW / fast-reid).
    """
    q_pids, g_pids = as_numpy(q_pids).ravel(), as_numpy(g_pids).ravel()
    q_camids, g_camids = as_numpy(q_camids).ravel(), as_numpy(g_camids).ravel()
    if q_camids.size != q_pids.size or g_camids.size != g_pids.size:
        raise ValueError("pid and camid arrays differ in length")

    def same_view(rows: np.ndarray) -> np.ndarray:
        return (q_pids[rows, None] == g_pids[None, :]) & (q_camids[rows, None] == g_camids[None, :])

    return evaluate_with_exclusion(distmat, q_pids, g_pids, same_view, max_rank=max_rank)


RANKS = (1, 5, 10, 20)


def metrics_dict(cmc, mAP: float, mINP: float, scale: float = 1.0) -> dict[str, float]:
    """``{rank1, rank5, rank10, rank20, mAP, mINP}`` times ``scale``; a CMC shorter than 20 counts as padded with
    its last value (a query's CMC never drops once it reached 1)."""
    cmc = np.asarray(cmc, dtype=np.float64).ravel()
    if cmc.size == 0:
        raise ValueError("empty CMC curve")
    out = {f"rank{r}": float(cmc[min(r, cmc.size) - 1]) * scale for r in RANKS}
    out["mAP"] = float(mAP) * scale
    out["mINP"] = float(mINP) * scale
    return out


def metrics_to_percent(cmc, mAP: float, mINP: float) -> dict[str, float]:
    """The trainer's metric names (docs/ARCHITECTURE.md) in percent, from fractions."""
    return metrics_dict(cmc, mAP, mINP, scale=100.0)
