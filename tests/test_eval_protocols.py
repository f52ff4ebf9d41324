"""Distances, SYSU-MM01 and RegDB protocols (core.eval)."""
import importlib.util
import pathlib
import random

import numpy as np
import pytest
import torch

from core.eval import (evaluate_rank, evaluate_regdb, evaluate_regdb_both, evaluate_sysu, evaluate_sysu_distmat,
                       normalize, pairwise_distance, sample_sysu_gallery)

def _load_reference():
    """The plain sort-based reference lives in test_eval_rank.py; load it by path (works in any pytest import mode)."""
    path = pathlib.Path(__file__).with_name("test_eval_rank.py")
    spec = importlib.util.spec_from_file_location("_eval_rank_reference", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.evaluate_rank_reference


evaluate_rank_reference = _load_reference()


# ---------------------------------------------------------------- distances
def _naive(q, g, metric):
    q, g = q.astype(np.float64), g.astype(np.float64)
    if metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        g = g / np.linalg.norm(g, axis=1, keepdims=True)
        return 1.0 - q @ g.T
    sq = ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)
    return np.sqrt(sq) if metric == "euclidean" else sq


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_pairwise_distance_matches_naive(metric):
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(37, 16)).astype(np.float32), rng.normal(size=(23, 16)).astype(np.float32)
    d = pairwise_distance(q, g, metric=metric, chunk_size=5)
    assert d.dtype == np.float32 and d.shape == (37, 23)
    np.testing.assert_allclose(d, _naive(q, g, metric), rtol=1e-4, atol=1e-4)
    # torch input and another chunking agree (up to float32 rounding of differently blocked matmuls)
    np.testing.assert_allclose(d, pairwise_distance(torch.from_numpy(q), torch.from_numpy(g), metric, 1000),
                               rtol=1e-6, atol=1e-6)


def test_pairwise_distance_clamps_and_validates():
    x = np.random.default_rng(1).normal(size=(4, 8)).astype(np.float32) * 100
    assert (pairwise_distance(x, x, "sqeuclidean") >= 0).all()
    assert (pairwise_distance(x, x, "euclidean") >= 0).all()
    with pytest.raises(ValueError, match="metric"):
        pairwise_distance(x, x, "manhattan")
    with pytest.raises(ValueError, match="dims"):
        pairwise_distance(x, x[:, :4])


def test_normalize():
    x = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(normalize(x), [[0.6, 0.8], [0.0, 0.0]])
    t = normalize(torch.from_numpy(x))
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.numpy(), [[0.6, 0.8], [0.0, 0.0]])


# ---------------------------------------------------------------- SYSU gallery sampling
def _pool():
    """pid p, camera c has (p + c) % 13 + 1 images: from 1 to 13, so multi-shot meets groups smaller than 10."""
    pids, cams = [], []
    for p in range(1, 9):
        for c in range(1, 7):
            n = (p + c) % 13 + 1
            pids += [p] * n
            cams += [c] * n
    rng = np.random.default_rng(5)
    order = rng.permutation(len(pids))
    return np.array(pids)[order], np.array(cams)[order]


MODE_CAMS = {"all": (1, 2, 4, 5), "indoor": (1, 2)}


def draw_reference(pids, camids, mode, shot, seed):
    """The documented draw, as a plain loop: the candidates are the mode's cameras in gallery order, each gets the
    key ``default_rng(seed).random(#candidates)[i]``, and each (pid, camera) keeps its 1 (single) or
    ``min(10, n)`` (multi) images with the smallest keys; indices ascending."""
    cand = [i for i in range(len(pids)) if camids[i] in MODE_CAMS[mode]]
    keys = np.random.default_rng(seed).random(len(cand))
    groups = {}
    for i, key in zip(cand, keys):
        groups.setdefault((pids[i], camids[i]), []).append((key, i))
    k = 1 if shot == "single" else 10
    return np.array(sorted(i for members in groups.values() for _, i in sorted(members)[:k]), dtype=np.int64)


def sysu_reference(d, q_pids, g_pids, q_cams, g_cams, mode, shot, num_trials, seed):
    """Per-trial reference metrics over the reference draws, and their means."""
    trials = []
    for t in range(num_trials):
        cols = draw_reference(g_pids, g_cams, mode, shot, seed + t)
        cmc, mAP, mINP = evaluate_rank_reference(d[:, cols], q_pids, g_pids[cols], q_cams, g_cams[cols], rule="sysu")
        trials.append({"rank1": cmc[0], "rank5": cmc[4], "rank10": cmc[9], "rank20": cmc[19], "mAP": mAP,
                       "mINP": mINP})
    return trials, {k: float(np.mean([tr[k] for tr in trials])) for k in trials[0]}


@pytest.mark.parametrize("mode", ["all", "indoor"])
@pytest.mark.parametrize("shot", ["single", "multi"])
@pytest.mark.parametrize("seed", [0, 7])
def test_gallery_sampling_is_the_documented_draw(mode, shot, seed):
    pids, camids = _pool()
    np.testing.assert_array_equal(sample_sysu_gallery(pids, camids, mode, shot, seed),
                                  draw_reference(pids, camids, mode, shot, seed))


@pytest.mark.parametrize("mode,cams", [("all", {1, 2, 4, 5}), ("indoor", {1, 2})])
@pytest.mark.parametrize("shot,k", [("single", 1), ("multi", 10)])
def test_gallery_sampling_counts(mode, cams, shot, k):
    pids, camids = _pool()
    idx = sample_sysu_gallery(pids, camids, mode=mode, shot=shot, seed=3)
    assert np.all(np.diff(idx) > 0)  # ascending, no duplicates
    assert set(camids[idx]) == cams
    for p in range(1, 9):
        for c in cams:
            n = (p + c) % 13 + 1
            assert np.count_nonzero((pids[idx] == p) & (camids[idx] == c)) == min(k, n)


def test_gallery_sampling_deterministic_and_private_rng():
    pids, camids = _pool()
    np_state, py_state = np.random.get_state(), random.getstate()
    a = sample_sysu_gallery(pids, camids, "all", "multi", seed=42)
    np.testing.assert_array_equal(a, sample_sysu_gallery(pids, camids, "all", "multi", seed=42))
    assert not np.array_equal(a, sample_sysu_gallery(pids, camids, "all", "multi", seed=43))
    assert random.getstate() == py_state
    assert all(np.array_equal(x, y) for x, y in zip(np.random.get_state(), np_state))


def test_gallery_sampling_rejects_unknown_mode():
    pids, camids = _pool()
    with pytest.raises(ValueError, match="mode"):
        sample_sysu_gallery(pids, camids, mode="outdoor")
    with pytest.raises(ValueError, match="shot"):
        sample_sysu_gallery(pids, camids, shot="few")


# ---------------------------------------------------------------- SYSU evaluation
# One image per (pid, camera), so every single-shot trial draws the same gallery.
G_PIDS, G_CAMS = np.array([1, 1, 2, 2]), np.array([1, 2, 2, 1])
Q_PIDS, Q_CAMS = np.array([1, 1]), np.array([3, 6])
D = np.array([[0.4, 0.1, 0.2, 0.3],
              [0.4, 0.1, 0.2, 0.3]], dtype=np.float32)
# q0 (cam3) ignores g1, g2 (cam2, whatever the pid): g3 r1, g0 (match) r2 -> first 2, AP 1/2, INP 1/2.
# q1 (cam6) keeps all: g1 (match) r1, g2 r2, g3 r3, g0 (match) r4 -> first 1, AP (1 + 2/4)/2 = 3/4, INP 2/4.


def test_sysu_cam3_excludes_cam2_by_hand():
    res = evaluate_sysu_distmat(D, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, mode="all", shot="single", num_trials=3, seed=5)
    assert res["rank1"] == pytest.approx(0.5)
    assert res["rank5"] == res["rank10"] == res["rank20"] == pytest.approx(1.0)
    assert res["mAP"] == pytest.approx(0.625)
    assert res["mINP"] == pytest.approx(0.5)
    assert res["seeds"] == [5, 6, 7] and [t["seed"] for t in res["trials"]] == [5, 6, 7]
    assert len(res["cmc"]) == 50
    # The Market rule on the same data removes nothing here (no cam-3 gallery): the two must not be mixed up.
    _, mAP_market, _ = evaluate_rank(D, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS)
    assert mAP_market == pytest.approx(0.75)


def test_sysu_indoor_uses_cams_1_2_only():
    # indoor: gallery = g0..g3 (cams 1, 2) plus a cam-4 decoy at distance 0 that all-search would rank first.
    d = np.concatenate([D, np.zeros((2, 1), np.float32)], axis=1)
    gp, gc = np.append(G_PIDS, 2), np.append(G_CAMS, 4)
    indoor = evaluate_sysu_distmat(d, Q_PIDS, gp, Q_CAMS, gc, mode="indoor", num_trials=1)
    assert indoor["mAP"] == pytest.approx(0.625) and indoor["trials"][0]["gallery_size"] == 4
    full = evaluate_sysu_distmat(d, Q_PIDS, gp, Q_CAMS, gc, mode="all", num_trials=1)
    # all: q0 -> decoy r1, g3 r2, g0 r3 (AP 1/3); q1 -> decoy, g1 (match) r2, g2, g3, g0 r5 (AP (1/2 + 2/5)/2).
    assert full["mAP"] == pytest.approx((1 / 3 + 0.45) / 2)


def test_sysu_trials_are_reference_evaluations_and_mean():
    rng = np.random.default_rng(0)
    pids, camids = _pool()
    nq = 40
    q_pids, q_cams = rng.integers(1, 9, nq), rng.choice([3, 6], nq)
    d = rng.integers(0, 20, (nq, pids.size)).astype(np.float32)  # ties on purpose
    for shot in ("single", "multi"):
        res = evaluate_sysu_distmat(d, q_pids, pids, q_cams, camids, "all", shot, num_trials=4, seed=10)
        ref_trials, ref = sysu_reference(d, q_pids, pids, q_cams, camids, "all", shot, num_trials=4, seed=10)
        assert [tr["seed"] for tr in res["trials"]] == [10, 11, 12, 13]
        for tr, expected in zip(res["trials"], ref_trials, strict=True):
            for key in expected:
                assert tr[key] == pytest.approx(expected[key], abs=1e-12), key
        for key in ref:
            assert res[key] == pytest.approx(ref[key], abs=1e-12), key
        # The trials differ (single-shot), so the mean is over genuinely different galleries.
        if shot == "single":
            assert len({tr["mAP"] for tr in ref_trials}) > 1
        again = evaluate_sysu_distmat(d, q_pids, pids, q_cams, camids, "all", shot, num_trials=4, seed=10)
        assert again["mAP"] == res["mAP"]


def test_evaluate_sysu_from_features():
    rng = np.random.default_rng(1)
    pids, camids = _pool()
    qf, gf = rng.normal(size=(12, 8)).astype(np.float32), rng.normal(size=(pids.size, 8)).astype(np.float32)
    q_pids, q_cams = rng.integers(1, 9, 12), rng.choice([3, 6], 12)
    for mode, shot in (("indoor", "multi"), ("all", "single")):
        res = evaluate_sysu(torch.from_numpy(qf), torch.from_numpy(gf), q_pids, pids, q_cams, camids,
                            mode=mode, shot=shot, num_trials=2, seed=0)
        # The pool is the mode's cameras in gallery order; the draw and the rule apply to it.
        pool = np.flatnonzero(np.isin(camids, MODE_CAMS[mode]))
        _, ref = sysu_reference(_naive(qf, gf[pool], "sqeuclidean"), q_pids, pids[pool], q_cams, camids[pool],
                                mode, shot, num_trials=2, seed=0)
        for key in ("rank1", "rank20", "mAP", "mINP"):
            assert res[key] == pytest.approx(ref[key], abs=1e-9), (mode, shot, key)


# ---------------------------------------------------------------- RegDB
# 1-D features: visible v0 = 0 (pid 1), v1 = 5 (pid 2); thermal t0 = 4 (pid 1), t1 = 6 (pid 2), t2 = 1 (pid 2).
FV, PV = np.array([[0.0], [5.0]], np.float32), np.array([1, 2])
FT, PT = np.array([[4.0], [6.0], [1.0]], np.float32), np.array([1, 2, 2])
# visible->thermal, squared distances: v0 [16, 36, 1]: t2 r1, t0 (match) r2 -> AP 1/2, INP 1/2.
#   v1 [1, 1, 16]: tie -> t0 r1, t1 (match) r2, t2 (match) r3 -> AP (1/2 + 2/3)/2 = 7/12, INP 2/3.
V2T = {"rank1": 0.0, "rank5": 1.0, "mAP": 13 / 24, "mINP": 7 / 12}
# thermal->visible: t0 [16, 1]: AP 1/2; t1 [36, 1]: AP 1; t2 [1, 16]: AP 1/2; INP the same.
T2V = {"rank1": 1 / 3, "rank5": 1.0, "mAP": 2 / 3, "mINP": 2 / 3}


def _check(res, expected):
    for key, val in expected.items():
        assert res[key] == pytest.approx(val, abs=1e-12), key


def test_regdb_both_directions_by_hand():
    _check(evaluate_regdb(FV, FT, PV, PT, direction="v2t"), V2T)
    _check(evaluate_regdb(FV, FT, PV, PT, direction="t2v"), T2V)
    both = evaluate_regdb_both(torch.from_numpy(FV), torch.from_numpy(FT), PV, PT)
    _check(both["v2t"], V2T)
    _check(both["t2v"], T2V)
    with pytest.raises(ValueError, match="direction"):
        evaluate_regdb(FV, FT, PV, PT, direction="rgb2ir")


def test_regdb_has_no_camera_exclusion():
    # Market-style same-camera removal would drop matches; RegDB must keep every gallery item.
    rng = np.random.default_rng(2)
    fv, ft = rng.normal(size=(10, 4)).astype(np.float32), rng.normal(size=(15, 4)).astype(np.float32)
    pv, pt = rng.integers(0, 4, 10), rng.integers(0, 4, 15)
    res = evaluate_regdb(fv, ft, pv, pt, metric="cosine")
    ref = evaluate_rank_reference(pairwise_distance(fv, ft, "cosine"), pv, pt, np.zeros(10), np.ones(15))
    assert res["mAP"] == pytest.approx(ref[1], abs=1e-12) and res["rank1"] == pytest.approx(ref[0][0], abs=1e-12)
