"""SYSU-MM01 test protocol (IR query -> RGB gallery), reproducible.

The released code draws each trial's gallery with ``random.seed(time.time())`` (not reproducible,
docs/REPRODUCTION.md §9.5) and ``random.sample(k=10)`` (crashes on a (pid, camera) with fewer than 10 images, §9.8).
Here trial ``t`` draws with ``numpy.random.default_rng(seed + t)`` (a private generator: the global RNGs are untouched,
§9.6) and multi-shot takes ``min(10, n)`` images. The distance to the whole candidate pool is computed once; a trial
only selects columns, and the rank metrics are vectorised over queries (``core.eval.rank``), so ten trials cost about
one evaluation. Exclusion is SYSU's own rule, not Market's: a camera-3 query ignores every camera-2 gallery image.

Two CMC forms: ``standard`` ranks gallery images (the authors' ``eval.py``); ``official`` ranks gallery identities,
each at its closest kept image (SYSU-MM01's MATLAB evaluation, also used by the AGW code). Rank-1, mAP and mINP are
the same under both; Rank-5/10/20 differ, so a reported CMC names its form.
"""
from __future__ import annotations

import numpy as np
import torch

from core.eval.distance import pairwise_distance
from core.eval.rank import as_numpy, first_identity_ranks, metrics_dict, query_metrics, summarize
from core.names import EVAL_METRICS

GALLERY_CAMS = {"all": (1, 2, 4, 5), "indoor": (1, 2)}
SHOT_SIZE = {"single": 1, "multi": 10}
CMC_FORMS = ("standard", "official")


def _check(mode: str, shot: str, cmc: str = "standard") -> None:
    if mode not in GALLERY_CAMS:
        raise ValueError(f"unknown SYSU mode {mode!r}; expected one of {tuple(GALLERY_CAMS)}")
    if shot not in SHOT_SIZE:
        raise ValueError(f"unknown SYSU shot {shot!r}; expected one of {tuple(SHOT_SIZE)}")
    if cmc not in CMC_FORMS:
        raise ValueError(f"unknown SYSU CMC form {cmc!r}; expected one of {CMC_FORMS}")


def sample_sysu_gallery(gallery_pids, gallery_camids, mode: str = "all", shot: str = "single",
                        seed: int = 0) -> np.ndarray:
    """Indices (ascending) of one random gallery: per (pid, camera) of the mode's cameras, 1 image (single-shot)
    or ``min(10, n)`` images (multi-shot), drawn without replacement by a generator seeded with ``seed``."""
    _check(mode, shot)
    pids, cams = as_numpy(gallery_pids).ravel(), as_numpy(gallery_camids).ravel()
    cand = np.flatnonzero(np.isin(cams, GALLERY_CAMS[mode]))
    if cand.size == 0:
        return cand
    _, group = np.unique(np.stack([pids[cand], cams[cand]], axis=1), axis=0, return_inverse=True)
    group = group.ravel()
    u = np.random.default_rng(seed).random(cand.size)
    order = np.lexsort((u, group))  # random order inside each (pid, camera) group
    g_sorted = group[order]
    first = np.searchsorted(g_sorted, g_sorted, side="left")
    take = order[np.arange(order.size) - first < SHOT_SIZE[shot]]
    return np.sort(cand[take])


def sysu_exclusion(q_camids: np.ndarray, g_camids: np.ndarray):
    """SYSU's rule as a ``rows -> mask`` exclusion (``core.eval.rank``): a camera-3 query ignores camera-2 images."""
    cam2 = g_camids == 2
    if not cam2.any():
        return None
    return lambda rows: (q_camids[rows] == 3)[:, None] & cam2[None, :]


def evaluate_sysu_distmat(distmat, q_pids, g_pids, q_camids, g_camids, mode: str = "all", shot: str = "single",
                          num_trials: int = 10, seed: int = 0, max_rank: int = 50, cmc: str = "standard") -> dict:
    """:func:`evaluate_sysu` on a precomputed ``[query, gallery pool]`` distance matrix."""
    _check(mode, shot, cmc)
    if num_trials < 1:
        raise ValueError("num_trials must be >= 1")
    dist = as_numpy(distmat)
    q_pids, g_pids = as_numpy(q_pids).ravel(), as_numpy(g_pids).ravel()
    q_camids, g_camids = as_numpy(q_camids).ravel(), as_numpy(g_camids).ravel()
    trials, cmcs = [], []
    for t in range(num_trials):
        trial_seed = seed + t
        cols = sample_sysu_gallery(g_pids, g_camids, mode, shot, trial_seed)
        exclude = sysu_exclusion(q_camids, g_camids[cols])
        first, ap, inp = query_metrics(dist[:, cols], q_pids, g_pids[cols], exclude)
        if cmc == "official":  # same queries count (a query has a true match in both forms or in neither)
            first = first_identity_ranks(dist[:, cols], q_pids, g_pids[cols], exclude)
        curve, mAP, mINP = summarize(first, ap, inp, max_rank=max_rank)
        cmcs.append(curve)
        trials.append({**metrics_dict(curve, mAP, mINP), "seed": trial_seed, "gallery_size": int(cols.size)})
    out = {k: float(np.mean([tr[k] for tr in trials])) for k in EVAL_METRICS}
    out.update(cmc=np.mean(cmcs, axis=0), trials=trials, seeds=[tr["seed"] for tr in trials], mode=mode, shot=shot,
               cmc_form=cmc)
    return out


def evaluate_sysu(query_feats, gallery_feats, q_pids, g_pids, q_camids, g_camids, mode: str = "all",
                  shot: str = "single", num_trials: int = 10, seed: int = 0, metric: str = "sqeuclidean",
                  max_rank: int = 50, cmc: str = "standard") -> dict:
    """SYSU-MM01 over ``num_trials`` random galleries (trial ``t`` uses seed ``seed + t``).

    The query is every given (IR) image; ``gallery_feats`` is the whole RGB test pool, from which each trial
    samples. Returns fractions ``rank1, rank5, rank10, rank20, mAP, mINP`` (arithmetic means over trials, as the
    authors average), the mean ``cmc``, the per-trial metrics in ``trials`` and the ``seeds`` used. The default
    metric is squared Euclidean on the features as given (the RGB-IR code does not normalise,
    docs/REPRODUCTION.md §9.4).
    ``cmc``: ``standard`` (per image, the authors' form) or ``official`` (per identity); see the module docstring.
    """
    _check(mode, shot, cmc)
    g_camids_np = as_numpy(g_camids).ravel()
    pool = np.flatnonzero(np.isin(g_camids_np, GALLERY_CAMS[mode]))  # only the mode's cameras are ever drawn
    if hasattr(gallery_feats, "detach"):
        gf = gallery_feats[torch.from_numpy(pool).to(gallery_feats.device)]
    else:
        gf = np.asarray(gallery_feats)[pool]
    dist = pairwise_distance(query_feats, gf, metric=metric)
    return evaluate_sysu_distmat(dist, q_pids, as_numpy(g_pids).ravel()[pool], q_camids, g_camids_np[pool], mode,
                                 shot, num_trials, seed, max_rank, cmc)
