"""What a loss does to the embedding: angles, angular separability, feature magnitudes and the modality gap.

The expAT argument is about angles (Euclidean triplets cannot shape the included angle; expAT constrains it, CS-BN
steadies magnitudes across modalities), so these functions measure exactly that on the test features an evaluation
has already computed: no extra forward pass. All are pure (tensors or arrays in, floats out) and usable from a
notebook; ``core.inference`` calls them on every evaluation on the pairs each protocol looks at (cross-modal on
SYSU-MM01 and RegDB, with SYSU's camera rule; cross-camera on Market/Duke).

Angles are in degrees between L2-normalised features. Large problems are sampled with a fixed seed (``max_pairs``):
whole queries are drawn, so each drawn query keeps every one of its pairs and its margin stays exact.
"""
from __future__ import annotations

from typing import Callable, Union

import numpy as np

from core.eval.rank import as_numpy

#: Pairs (query x gallery) that an evaluation's diagnostics look at: beyond this, a fixed-seed sample of whole
#: queries. Sized so the diagnostics cost stays under 5% of the evaluation (benchmarks/bench_diagnostics.py measures it).
EVAL_MAX_PAIRS = 100_000
#: Images per identity and modality that an evaluation's modality gap looks at (a fixed-seed sample).
EVAL_MAX_PER_IDENTITY = 10
#: Positive and negative angles kept from the last evaluation for the report's distribution plots.
SAMPLE_SIZE = 4000

Exclude = Union[np.ndarray, Callable[[np.ndarray], "np.ndarray | None"], None]
_CHUNK_ELEMS = 1 << 20  # query x gallery entries per chunk: bounds the float64 temporaries to ~8 MB each


def _floats(x) -> np.ndarray:
    """float64 stays float64 (exact hand-made cases); anything else is float32, as the test features are: a float64
    copy of a Market-sized gallery would cost more than the diagnostics themselves."""
    x = as_numpy(x)
    return x if x.dtype == np.float64 else x.astype(np.float32, copy=False)


def _unit_rows(x) -> np.ndarray:
    x = _floats(x)
    if x.ndim != 2:
        raise ValueError(f"features must be 2-D [N, D], got shape {x.shape}")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _degrees(cos: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip(cos.astype(np.float64, copy=False), -1.0, 1.0)))


def _excluded(exclude: Exclude, rows: np.ndarray, shape: tuple[int, int]) -> np.ndarray | None:
    """The [rows, gallery] part of ``exclude`` (a boolean mask or the rank module's ``rows -> mask`` callable)."""
    if exclude is None:
        return None
    ex = exclude(rows) if callable(exclude) else np.asarray(exclude, dtype=bool)[rows]
    return None if ex is None else np.broadcast_to(ex, shape)


def pair_angles(query_feats, gallery_feats, q_pids, g_pids, exclude: Exclude = None, max_pairs: int | None = None,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(positive angles, negative angles, smallest negative angle per query, largest positive angle per query)``
    over the counted query x gallery pairs (``exclude`` True = not counted). Queries without a counted positive
    (negative) get ``-inf`` (``+inf``). With ``max_pairs`` and more pairs than that, only a fixed-seed sample of
    ``max(1, max_pairs // gallery)`` whole queries is looked at."""
    q, g = _floats(query_feats), _floats(gallery_feats)
    qp, gp = as_numpy(q_pids).ravel(), as_numpy(g_pids).ravel()
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1] or len(q) != qp.size or len(g) != gp.size:
        raise ValueError(f"shapes do not agree: query {q.shape} with {qp.size} pids, gallery {g.shape} with "
                         f"{gp.size} pids")
    rows = np.arange(len(q))
    if max_pairs is not None and len(q) * len(g) > max_pairs:
        take = min(len(q), max(1, max_pairs // max(1, len(g))))
        rows = np.sort(np.random.default_rng(seed).choice(len(q), size=take, replace=False))
    pos, neg, min_neg, max_pos = [], [], [], []
    # cosines as products over the norms: normalising the gallery itself would copy all of it
    q_norm = np.maximum(np.linalg.norm(q[rows], axis=1), 1e-12)
    g_norm = np.maximum(np.linalg.norm(g, axis=1), 1e-12)
    step = max(1, _CHUNK_ELEMS // max(1, len(g)))
    for s in range(0, rows.size, step):
        r = rows[s:s + step]
        cos = q[r] @ g.T
        cos /= q_norm[s:s + step, None]
        cos /= g_norm[None, :]
        angle = _degrees(cos)
        same = qp[r, None] == gp[None, :]
        keep = ~ex if (ex := _excluded(exclude, r, angle.shape)) is not None else np.ones(angle.shape, dtype=bool)
        is_pos, is_neg = same & keep, ~same & keep
        pos.append(angle[is_pos])
        neg.append(angle[is_neg])
        max_pos.append(np.where(is_pos, angle, -np.inf).max(axis=1, initial=-np.inf))
        min_neg.append(np.where(is_neg, angle, np.inf).min(axis=1, initial=np.inf))
    cat = (lambda parts: np.concatenate(parts) if parts else np.zeros(0))
    return cat(pos), cat(neg), cat(min_neg), cat(max_pos)


def _summary(prefix: str, angles: np.ndarray) -> dict[str, float]:
    if angles.size == 0:
        return {f"{prefix}_angle_{k}": float("nan") for k in ("mean", "p5", "p50", "p95")}
    p5, p50, p95 = np.percentile(angles, [5, 50, 95])  # numpy's default: linear interpolation
    return {f"{prefix}_angle_mean": float(angles.mean()), f"{prefix}_angle_p5": float(p5),
            f"{prefix}_angle_p50": float(p50), f"{prefix}_angle_p95": float(p95)}


def angle_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """AUC of the angle as a same-identity score: P(positive angle < negative angle), ties one half; the
    Mann-Whitney U of the negatives over the positives divided by the number of (positive, negative) pairs
    (``scipy.stats.mannwhitneyu(neg, pos).statistic / (len(pos) * len(neg))``). Counted with one sort of the
    negatives and two binary searches per positive: scipy ranks both samples together with a stable argsort, which
    costs about ten times more on an evaluation's pairs."""
    if not (pos.size and neg.size):
        return float("nan")
    ordered = np.sort(neg)
    at_most = np.searchsorted(ordered, pos, side="right")  # negatives <= each positive
    below = np.searchsorted(ordered, pos, side="left")  # negatives < each positive
    greater, ties = neg.size * pos.size - at_most.sum(), (at_most - below).sum()
    return float((greater + 0.5 * ties) / (pos.size * neg.size))


def summarize_angles(pos: np.ndarray, neg: np.ndarray, min_neg: np.ndarray, max_pos: np.ndarray) -> dict[str, float]:
    """The keys of :func:`angle_diagnostics` from :func:`pair_angles`' output."""
    out = {**_summary("pos", pos), **_summary("neg", neg)}
    out["angle_auc"] = angle_auc(pos, neg)
    both = np.isfinite(min_neg) & np.isfinite(max_pos)  # queries with a counted positive and a counted negative
    margin = min_neg[both] - max_pos[both]
    out["separable_fraction"] = float(np.mean(margin > 0)) if margin.size else float("nan")
    out["margin_mean"] = float(margin.mean()) if margin.size else float("nan")
    return out


def angle_diagnostics(query_feats, gallery_feats, q_pids, g_pids, exclude: Exclude = None,
                      max_pairs: int | None = None, seed: int = 0) -> dict[str, float]:
    """Angles between L2-normalised query and gallery features, in degrees, over the counted pairs.

    ``exclude``: boolean ``[query, gallery]`` (True = the pair does not count; the protocol's ranking mask) or a
    ``rows -> mask`` callable as ``core.eval.rank`` takes. ``max_pairs=None`` looks at every pair, exactly.
    Keys: ``pos_angle_{mean,p5,p50,p95}`` (same identity), ``neg_angle_*`` (other identities), ``angle_auc``
    (probability that a random positive pair has a smaller angle than a random negative one, ties one half),
    ``separable_fraction`` (queries whose smallest negative angle exceeds their largest positive angle) and
    ``margin_mean`` (mean of that difference), both over the queries with a counted positive and negative.
    """
    return summarize_angles(*pair_angles(query_feats, gallery_feats, q_pids, g_pids, exclude, max_pairs, seed))


def angle_samples(pos: np.ndarray, neg: np.ndarray, size: int = SAMPLE_SIZE, seed: int = 0) -> dict[str, list]:
    """At most ``size`` positive and ``size`` negative angles (a fixed-seed draw without replacement), sorted and
    rounded to 0.01 degree: small enough for a run artifact, enough to draw their distributions."""
    rng = np.random.default_rng(seed)
    pick = (lambda a: rng.choice(a, size, replace=False) if a.size > size else a)
    return {"pos": np.round(np.sort(pick(pos)), 2).tolist(), "neg": np.round(np.sort(pick(neg)), 2).tolist()}


def feature_norms(feats, modality) -> dict[int, tuple[float, float]]:
    """``{modality: (mean, std)}`` of the rows' L2 norms (population std), per modality present."""
    return norm_stats(np.linalg.norm(_floats(feats), axis=1), modality)


def norm_stats(norms, modality) -> dict[int, tuple[float, float]]:
    """:func:`feature_norms` from the rows' norms (a caller holding the features in parts need not join them)."""
    n, mods = as_numpy(norms).astype(np.float64).ravel(), as_numpy(modality).ravel()
    return {int(m): (float(n[mods == m].mean()), float(n[mods == m].std())) for m in np.unique(mods)}


def per_identity_sample(pids, modality, size: int, seed: int = 0) -> np.ndarray:
    """Ascending row indices of a fixed-seed sample of at most ``size`` rows per (identity, modality)."""
    ids, mods = as_numpy(pids).ravel().astype(np.int64), as_numpy(modality).ravel().astype(np.int64)
    _, group = np.unique(ids * 2 + mods, return_inverse=True)  # one integer per (identity, modality 0 or 1)
    order = np.lexsort((np.random.default_rng(seed).random(group.size), group))  # random order inside a group
    first = np.searchsorted(group[order], group[order], side="left")
    return np.sort(order[np.arange(order.size) - first < size])


def modality_gap(feats, pids, modality) -> dict[str, float]:
    """How far apart the two modalities sit (modality 0 = RGB, 1 = IR).

    ``modality_gap``: distance between the RGB and IR centroids divided by the mean distance of a feature to its
    own modality's centroid. ``modality_angle_shift``: mean angle (degrees) of same-identity pairs across modalities
    minus that of same-identity pairs within one modality. Not the angle between the centroids: a BN neck centres
    the features, so its centroids sit near zero and their angle is noise. (An evaluation passes a
    :func:`per_identity_sample` of its features.)
    """
    x = _floats(feats)
    mods, ids = as_numpy(modality).ravel(), as_numpy(pids).ravel()
    if not ((mods == 0).any() and (mods == 1).any()):
        raise ValueError("modality_gap needs features of both modalities (0 = RGB, 1 = IR)")
    centre = {m: x[mods == m].mean(axis=0, dtype=np.float64) for m in (0, 1)}
    spread = np.concatenate([np.linalg.norm(x[mods == m] - centre[m].astype(x.dtype), axis=1) for m in (0, 1)]).mean()
    gap = float(np.linalg.norm(centre[0] - centre[1]) / max(spread, 1e-12))
    # Same-identity pairs only: one small Gram matrix per identity instead of an N x N one.
    u = _unit_rows(x)
    cross, within = [], []
    for pid in np.unique(ids):
        rows = np.flatnonzero(ids == pid)
        angle = _degrees(u[rows] @ u[rows].T)
        m = mods[rows]
        upper = np.triu(np.ones((rows.size, rows.size), dtype=bool), k=1)
        differ = m[:, None] != m[None, :]
        cross.append(angle[upper & differ])
        within.append(angle[upper & ~differ])
    cross_all, within_all = np.concatenate(cross), np.concatenate(within)
    shift = (float(cross_all.mean() - within_all.mean()) if cross_all.size and within_all.size else float("nan"))
    return {"modality_gap": gap, "modality_angle_shift": shift}
