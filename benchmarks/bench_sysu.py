"""SYSU-MM01 protocol, SYSU-sized: ``core.eval.evaluate_sysu_distmat`` vs the per-query loop of the AGW evaluator.

Sizes are those of the SYSU-MM01 test split in "all search": 96 test identities, 3803 IR queries (cameras 3 and 6),
an RGB pool of 6775 images (cameras 1, 2, 4, 5) from which each trial draws a single-shot gallery of 301 images
(one per identity and camera), 10 trials, 2048-d float32 features. The features are synthetic: an identity
centre, a modality offset, a camera offset and noise.

The reference is written here, as the common AGW / DDAG ``eval_sysu`` does it: per trial an ``np.argsort`` of the
query x gallery matrix, then a Python loop over queries with the camera-3 / camera-2 removal, ``np.unique`` plus a
list comprehension (the identity-deduplicated CMC AGW returns) and the cumulative-sum CMC / AP / INP of that
query. Both sides get the same gallery columns per trial (``core.eval.sample_sysu_gallery``), so the metrics must
agree: rank-1/5/10/20, mAP and mINP of every trial are asserted equal (to 1e-12; the reference sums in another
order). The loop computes both CMC forms: the standard first-match CMC (``all_cmc`` in AGW's code), compared with
``cmc="standard"``, and the identity-deduplicated CMC AGW returns, compared with ``cmc="official"`` (rank-1/5/10/20
of every trial equal); both figures use the loop's one timing as the reference.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from benchmarks.common import Figure, best_time

NAME = "sysu"

FULL = dict(num_query=3803, pool=6775, num_ids=96, gallery_pairs=301, dim=2048, trials=10)
QUICK = dict(num_query=1000, pool=2000, num_ids=96, gallery_pairs=301, dim=256, trials=3)
RGB_CAMS, IR_CAMS = (1, 2, 4, 5), (3, 6)


def sizes(quick: bool) -> dict:
    base = dict(QUICK if quick else FULL)
    s = float(os.environ.get("EXPAT_BENCH_SCALE", "1"))
    if s != 1:
        base["num_query"] = max(50, int(round(base["num_query"] * s)))
        base["pool"] = max(base["gallery_pairs"] * 2, int(round(base["pool"] * s)))
        base["dim"] = max(32, int(round(base["dim"] * min(1.0, s * 2))))
        base["trials"] = min(base["trials"], 2)
    return base


def make_sysu_features(num_query: int, pool: int, num_ids: int, gallery_pairs: int, dim: int, seed: int = 0,
                       **_):
    """``(qf, gf, q_pids, g_pids, q_cams, g_cams)`` with ``gallery_pairs`` (identity, RGB camera) pairs in the pool."""
    rng = np.random.default_rng(seed)
    pids = np.arange(1, num_ids + 1) * 3  # SYSU-like non-contiguous ids
    # (identity, camera) pairs present in the RGB pool: every identity in >= 1 camera, gallery_pairs in total.
    pairs = [(p, rng.choice(RGB_CAMS)) for p in pids]
    rest = [(p, c) for p in pids for c in RGB_CAMS if (p, c) not in set(pairs)]
    extra = rng.choice(len(rest), gallery_pairs - num_ids, replace=False)
    pairs = np.array(pairs + [rest[i] for i in extra])
    take = np.concatenate([np.arange(len(pairs)), rng.integers(0, len(pairs), pool - len(pairs))])
    g_pids, g_cams = pairs[take, 0], pairs[take, 1]
    q_pids = pids[np.concatenate([np.arange(num_ids), rng.integers(0, num_ids, num_query - num_ids)])]
    q_cams = rng.choice(IR_CAMS, num_query)

    centres = rng.standard_normal((pids.max() + 1, dim), dtype=np.float32)
    cam_off = rng.standard_normal((7, dim), dtype=np.float32)
    modality = rng.standard_normal((2, dim), dtype=np.float32)
    a = 0.3 * (2048 / dim) ** 0.25  # cross-modal: harder than the Market benchmark

    def feats(p, c, m):
        f = a * centres[p] + 0.5 * a * cam_off[c] + 0.8 * a * modality[m]
        f += rng.standard_normal(f.shape, dtype=np.float32)
        return f

    return (feats(q_pids, q_cams, 1), feats(g_pids, g_cams, 0), q_pids, g_pids, q_cams, g_cams)


def agw_eval_sysu(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 20):
    """The AGW ``eval_sysu`` loop (one trial), returning its deduplicated CMC and the standard one.

    Differences from AGW: a stable argsort (ties by gallery index, the project's rule) and float64 sums.
    """
    num_q, num_g = distmat.shape
    max_rank = min(max_rank, num_g)
    indices = np.argsort(distmat, axis=1, kind="stable")
    pred_label = g_pids[indices]
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    new_all_cmc, all_cmc, all_AP, all_INP = [], [], [], []
    num_valid_q = 0.0
    for q_idx in range(num_q):
        q_pid, q_camid = q_pids[q_idx], q_camids[q_idx]
        order = indices[q_idx]
        remove = (q_camid == 3) & (g_camids[order] == 2)
        keep = np.invert(remove)
        new_cmc = pred_label[q_idx][keep]
        new_index = np.unique(new_cmc, return_index=True)[1]
        new_cmc = [new_cmc[index] for index in sorted(new_index)]
        new_match = (np.asarray(new_cmc) == q_pid).astype(np.int32)
        new_all_cmc.append(new_match.cumsum()[:max_rank])
        orig_cmc = matches[q_idx][keep]
        if not np.any(orig_cmc):
            continue
        cmc = orig_cmc.cumsum()
        pos_max_idx = np.max(np.where(orig_cmc == 1))
        all_INP.append(cmc[pos_max_idx] / (pos_max_idx + 1.0))
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        num_valid_q += 1.0
        num_rel = orig_cmc.sum()
        tmp_cmc = orig_cmc.cumsum()
        tmp_cmc = [x / (i + 1.0) for i, x in enumerate(tmp_cmc)]
        tmp_cmc = np.asarray(tmp_cmc) * orig_cmc
        all_AP.append(tmp_cmc.sum() / num_rel)
    assert num_valid_q > 0
    cmc = np.asarray(all_cmc, dtype=np.float64).sum(0) / num_valid_q
    new_cmc = np.asarray([np.pad(c, (0, max_rank - len(c)), mode="edge") for c in new_all_cmc],
                         dtype=np.float64).sum(0) / num_valid_q
    return cmc, new_cmc, float(np.mean(all_AP)), float(np.mean(all_INP))


def reference(distmat, q_pids, g_pids, q_cams, g_cams, cols_per_trial):
    """Ten AGW evaluations, one per trial gallery; per-trial rank-k / mAP / mINP like ``evaluate_sysu_distmat``."""
    trials = []
    for cols in cols_per_trial:
        cmc, dedup, mAP, mINP = agw_eval_sysu(distmat[:, cols], q_pids, g_pids[cols], q_cams, g_cams[cols])
        trials.append({"standard": {"rank1": cmc[0], "rank5": cmc[4], "rank10": cmc[9], "rank20": cmc[19],
                                    "mAP": mAP, "mINP": mINP},
                       "official": {"rank1": dedup[0], "rank5": dedup[4], "rank10": dedup[9], "rank20": dedup[19]}})
    return trials


def run(quick: bool) -> list[Figure]:
    import torch
    from core.eval import evaluate_sysu_distmat, pairwise_distance, sample_sysu_gallery
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    sz = sizes(quick)
    qf, gf, q_pids, g_pids, q_cams, g_cams = make_sysu_features(**sz)
    dist = pairwise_distance(qf, gf)  # the pool: evaluate_sysu computes it once for all trials
    trials = sz["trials"]
    cols = [sample_sysu_gallery(g_pids, g_cams, "all", "single", seed=t) for t in range(trials)]
    assert all(c.size == sz["gallery_pairs"] for c in cols)

    start = time.perf_counter()
    ref = reference(dist, q_pids, g_pids, q_cams, g_cams, cols)  # slow: timed once, and checked
    t_ref = time.perf_counter() - start
    label = f"{sz['num_query']} IR queries x {sz['gallery_pairs']} single-shot gallery, {trials} trials"
    figures = []
    for form, what in (("standard", "rank-1/5/10/20, mAP, mINP"), ("official", "identity-deduplicated rank-1/5/10/20")):
        ours = evaluate_sysu_distmat(dist, q_pids, g_pids, q_cams, g_cams, "all", "single", num_trials=trials,
                                     seed=0, cmc=form)
        max_diff = max(abs(mine[k] - v) for mine, theirs in zip(ours["trials"], ref) for k, v in theirs[form].items())
        assert max_diff < 1e-12, f"evaluate_sysu_distmat(cmc={form!r}) differs from the AGW loop by {max_diff}"
        t_ours = best_time(lambda form=form: evaluate_sysu_distmat(dist, q_pids, g_pids, q_cams, g_cams, "all",
                                                                   "single", num_trials=trials, seed=0, cmc=form),
                           repeat=3, warmup=1)
        figures.append(Figure(
            f"evaluate_sysu_distmat, cmc={form} ({label})", t_ours, "s",
            "AGW eval_sysu per-query loop (np.unique + list comprehension; both CMC forms), same galleries", t_ref,
            "ratio <= 0.1 (>= 10x faster)",
            notes=f"{t_ref / t_ours:.0f}x faster; every trial's {what} equal to the loop's (max abs diff "
                  f"{max_diff:.1e}); rank1 {ours['rank1'] * 100:.2f}%, rank5 {ours['rank5'] * 100:.2f}%, "
                  f"mAP {ours['mAP'] * 100:.2f}%",
            extra={"speedup": t_ref / t_ours, "max_abs_diff": max_diff, "pool": sz["pool"],
                   "rank1": ours["rank1"] * 100, "rank5": ours["rank5"] * 100, "mAP": ours["mAP"] * 100,
                   "mINP": ours["mINP"] * 100}))
    return figures


if __name__ == "__main__":
    start = time.perf_counter()
    for f in run(quick="--quick" in sys.argv):
        print(f, f.ratio)
    print(f"{time.perf_counter() - start:.1f} s")
