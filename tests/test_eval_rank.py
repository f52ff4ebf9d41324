"""Rank metrics (core.eval.rank): hand-worked cases and a plain sort-based reference."""
import numpy as np
import pytest
import torch

from core.eval import evaluate_rank, metrics_to_percent, query_metrics
from core.eval.rank import evaluate_with_exclusion


def evaluate_rank_reference(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50, rule="market"):
    """The textbook per-query loop (torchreid / AGW style) with a stable sort and CMC padding."""
    order_all = np.argsort(distmat, axis=1, kind="stable")
    cmcs, aps, inps = [], [], []
    for q in range(distmat.shape[0]):
        order = order_all[q]
        if rule == "market":
            remove = (g_pids[order] == q_pids[q]) & (g_camids[order] == q_camids[q])
        else:  # SYSU
            remove = (q_camids[q] == 3) & (g_camids[order] == 2)
        raw = (g_pids[order] == q_pids[q])[~remove].astype(np.int64)
        if not raw.any():
            continue
        cmc = np.minimum(raw.cumsum(), 1)[:max_rank]
        cmcs.append(np.concatenate([cmc, np.full(max_rank - cmc.size, cmc[-1])]))
        aps.append((raw.cumsum() / np.arange(1, raw.size + 1) * raw).sum() / raw.sum())
        inps.append(raw.sum() / (np.flatnonzero(raw).max() + 1.0))
    if not cmcs:
        raise ValueError("no valid query")
    return np.mean(cmcs, axis=0), float(np.mean(aps)), float(np.mean(inps))


# 3 queries x 5 gallery, worked by hand.
Q_PIDS, Q_CAMS = np.array([1, 2, 3]), np.array([0, 0, 1])
G_PIDS, G_CAMS = np.array([1, 1, 2, 3, 1]), np.array([0, 1, 1, 1, 1])
DIST = np.array([
    # q0 (pid 1, cam 0): g0 is the same view -> removed. Kept order: g4 (match) r1, g2 r2, g3 r3, g1 (match) r4.
    [0.1, 0.5, 0.3, 0.3, 0.2],
    # q1 (pid 2, cam 0): g3 r1, then the 0.4 tie by index: g0 r2, g1 r3, g2 (match) r4, g4 r5.
    [0.4, 0.4, 0.4, 0.1, 0.4],
    # q2 (pid 3, cam 1): its only pid-3 image g3 is the same view -> no true match left -> skipped.
    [0.9, 0.8, 0.7, 0.6, 0.5],
], dtype=np.float32)
# q0: first 1, AP = (1/1 + 2/4) / 2 = 0.75, INP = 2/4.  q1: first 4, AP = 1/4, INP = 1/4.


def test_hand_case():
    cmc, mAP, mINP = evaluate_rank(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=5)
    np.testing.assert_array_equal(cmc, [0.5, 0.5, 0.5, 1.0, 1.0])
    assert mAP == pytest.approx(0.5, abs=1e-15)
    assert mINP == pytest.approx(0.375, abs=1e-15)


def test_hand_case_per_query_and_padding():
    same_view = lambda r: (Q_PIDS[r, None] == G_PIDS) & (Q_CAMS[r, None] == G_CAMS)  # noqa: E731
    first, ap, inp = query_metrics(DIST, Q_PIDS, G_PIDS, same_view)
    np.testing.assert_array_equal(first, [1, 4, 0])
    np.testing.assert_allclose(ap[:2], [0.75, 0.25])
    np.testing.assert_allclose(inp[:2], [0.5, 0.25])
    cmc, _, _ = evaluate_rank(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=50)  # only 5 gallery items
    assert cmc.shape == (50,)
    np.testing.assert_array_equal(cmc, [0.5, 0.5, 0.5] + [1.0] * 47)


def test_metrics_to_percent():
    cmc, mAP, mINP = evaluate_rank(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=50)
    assert metrics_to_percent(cmc, mAP, mINP) == pytest.approx(
        {"rank1": 50.0, "rank5": 100.0, "rank10": 100.0, "rank20": 100.0, "mAP": 50.0, "mINP": 37.5})
    # A CMC shorter than 20 counts as padded with its last value.
    assert metrics_to_percent(np.array([0.25, 0.5]), 0.1, 0.2)["rank20"] == pytest.approx(50.0)


def test_all_queries_skipped_raises():
    with pytest.raises(ValueError, match="no query has a true match"):
        evaluate_rank(DIST[2:], Q_PIDS[2:], G_PIDS, Q_CAMS[2:], G_CAMS)


def test_tie_rules_and_signed_zero():
    # Match at index 1 ties with a non-match at index 0 (stable order: the non-match first), including -0.0 == 0.0.
    for row in ([0.0, -0.0], [-0.0, 0.0], [1.0, 1.0]):
        cmc, mAP, mINP = evaluate_rank(np.array([row], np.float32), np.array([1]), np.array([2, 1]),
                                       np.array([0]), np.array([1, 1]), max_rank=2)
        np.testing.assert_array_equal(cmc, [0.0, 1.0])
        assert mAP == 0.5 and mINP == 0.5
    # Match at the lower index wins the tie.
    cmc, mAP, _ = evaluate_rank(np.array([[1.0, 1.0]]), np.array([1]), np.array([1, 2]), np.array([0]),
                                np.array([1, 1]), max_rank=2)
    np.testing.assert_array_equal(cmc, [1.0, 1.0])
    assert mAP == 1.0


def test_nan_rejected():
    d = DIST.copy()
    d[0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate_rank(d, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS)
    with pytest.raises(ValueError, match="NaN"):
        evaluate_rank(d.astype(np.float64), Q_PIDS, G_PIDS, Q_CAMS, G_CAMS)


def test_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        evaluate_rank(DIST[:, :4], Q_PIDS, G_PIDS, Q_CAMS, G_CAMS)


def _random_problem(rng, kind, nq, ng, npid, ncam):
    qp, gp = rng.integers(0, npid, nq), rng.integers(0, npid, ng)
    qc, gc = rng.integers(0, ncam, nq), rng.integers(0, ncam, ng)
    if kind == "f32":
        d = rng.random((nq, ng), dtype=np.float32)
    elif kind == "f32_signed_inf":
        d = rng.normal(size=(nq, ng)).astype(np.float32)
        d[rng.random((nq, ng)) < 0.05] = np.inf
        d[rng.random((nq, ng)) < 0.05] = -np.inf
    elif kind == "int_ties":  # ties everywhere
        d = rng.integers(0, 4, (nq, ng))
    elif kind == "f32_ties":
        d = rng.integers(-3, 3, (nq, ng)).astype(np.float32)
    elif kind == "f64":
        d = rng.random((nq, ng))
    else:  # "f64_ties": float64 values float32 cannot hold, with ties (the two-pass path)
        d = rng.choice([0.1, 0.2, 0.3, 1 / 3], size=(nq, ng))
    return d, qp, gp, qc, gc


KINDS = ["f32", "f32_signed_inf", "int_ties", "f32_ties", "f64", "f64_ties"]


@pytest.mark.parametrize("kind", KINDS)
def test_random_against_reference(kind):
    """40 random problems: each is either compared with the reference or, when no query keeps a true match, refused
    by both; most are compared (a run that refused everything would prove nothing)."""
    rng = np.random.default_rng(KINDS.index(kind))
    compared = 0
    for _ in range(40):
        nq, ng = int(rng.integers(1, 30)), int(rng.integers(1, 80))
        d, qp, gp, qc, gc = _random_problem(rng, kind, nq, ng, int(rng.integers(1, 8)), int(rng.integers(1, 4)))
        has_valid_query = any(((gp == qp[i]) & (gc != qc[i])).any() for i in range(nq))
        if not has_valid_query:
            with pytest.raises(ValueError, match="no query has a true match"):
                evaluate_rank(d, qp, gp, qc, gc, max_rank=20)
            continue
        ref = evaluate_rank_reference(d, qp, gp, qc, gc, max_rank=20)
        cmc, mAP, mINP = evaluate_rank(d, qp, gp, qc, gc, max_rank=20)
        np.testing.assert_array_equal(cmc, ref[0])
        np.testing.assert_allclose([mAP, mINP], ref[1:], rtol=0, atol=1e-12)
        compared += 1
    assert compared >= 20, compared


def test_market_sized_shape_against_reference():
    """A bigger problem (several chunks, many matches per query) with heavy ties."""
    rng = np.random.default_rng(7)
    nq, ng = 120, 3000
    gp = rng.integers(0, 60, ng)
    qp, qc, gc = rng.integers(0, 60, nq), rng.integers(0, 6, nq), rng.integers(0, 6, ng)
    d = rng.integers(0, 500, (nq, ng)).astype(np.float32)
    ref = evaluate_rank_reference(d, qp, gp, qc, gc)
    cmc, mAP, mINP = evaluate_rank(d, qp, gp, qc, gc)
    np.testing.assert_array_equal(cmc, ref[0])
    np.testing.assert_allclose([mAP, mINP], ref[1:], rtol=0, atol=1e-12)


@pytest.mark.parametrize("chunk_elems", [1, 7, 100, 1 << 20])
def test_chunking_does_not_change_results(chunk_elems):
    rng = np.random.default_rng(3)
    d, qp, gp, qc, gc = _random_problem(rng, "f32_ties", 50, 40, 5, 3)
    ex = lambda r: (qp[r, None] == gp) & (qc[r, None] == gc)  # noqa: E731
    base = query_metrics(d, qp, gp, ex)
    for a, b in zip(base, query_metrics(d, qp, gp, ex, chunk_elems=chunk_elems)):
        np.testing.assert_array_equal(a, b)


def test_torch_inputs():
    cmc, mAP, mINP = evaluate_rank(torch.from_numpy(DIST), torch.from_numpy(Q_PIDS), torch.from_numpy(G_PIDS),
                                   torch.from_numpy(Q_CAMS), torch.from_numpy(G_CAMS), max_rank=5)
    np.testing.assert_array_equal(cmc, [0.5, 0.5, 0.5, 1.0, 1.0])
    assert mAP == pytest.approx(0.5)


def test_sysu_rule_against_reference():
    rng = np.random.default_rng(11)
    compared = 0
    for _ in range(30):
        nq, ng = int(rng.integers(1, 30)), int(rng.integers(1, 60))
        qp, gp = rng.integers(0, 5, nq), rng.integers(0, 5, ng)
        qc, gc = rng.choice([3, 6], nq), rng.choice([1, 2, 4, 5], ng)
        d = rng.integers(0, 6, (nq, ng)).astype(np.float32)
        exclude = lambda r: (qc[r] == 3)[:, None] & (gc == 2)[None, :]  # noqa: E731
        has_valid_query = any(((gp == qp[i]) & ~((qc[i] == 3) & (gc == 2))).any() for i in range(nq))
        if not has_valid_query:
            with pytest.raises(ValueError, match="no query has a true match"):
                evaluate_with_exclusion(d, qp, gp, exclude, max_rank=10)
            continue
        ref = evaluate_rank_reference(d, qp, gp, qc, gc, max_rank=10, rule="sysu")
        out = evaluate_with_exclusion(d, qp, gp, exclude, max_rank=10)
        np.testing.assert_array_equal(out[0], ref[0])
        np.testing.assert_allclose(out[1:], ref[1:], rtol=0, atol=1e-12)
        compared += 1
    assert compared >= 20, compared
