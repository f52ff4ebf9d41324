"""Embedding diagnostics (core.eval.diagnostics) on features built by hand with known angles, norms and centroids."""
import math

import numpy as np
import pytest
import torch

from core.eval.diagnostics import angle_diagnostics, feature_norms, modality_gap


def at(*degrees, dim=2):
    """Unit rows in the plane of the first two axes, at the given angles from axis 0."""
    out = np.zeros((len(degrees), dim))
    out[:, 0] = np.cos(np.radians(degrees))
    out[:, 1] = np.sin(np.radians(degrees))
    return out


def test_known_angles_give_them_back_and_perfect_separation():
    query = np.array([[1.0, 0.0, 0.0]]) * 3.0  # a norm other than 1: angles are between normalised features
    c20, s20 = math.cos(math.radians(20)), math.sin(math.radians(20))
    c70, s70 = math.cos(math.radians(70)), math.sin(math.radians(70))
    gallery = np.array([[c20, s20, 0], [c20, 0, s20], [c70, s70, 0], [c70, 0, -s70], [c70, -s70, 0]]) * 2.0
    d = angle_diagnostics(query, gallery, [7], [7, 7, 1, 2, 3])
    for key in ("pos_angle_mean", "pos_angle_p5", "pos_angle_p50", "pos_angle_p95"):
        assert d[key] == pytest.approx(20.0, abs=1e-6)
    for key in ("neg_angle_mean", "neg_angle_p5", "neg_angle_p50", "neg_angle_p95"):
        assert d[key] == pytest.approx(70.0, abs=1e-6)
    assert d["angle_auc"] == 1.0
    assert d["separable_fraction"] == 1.0
    assert d["margin_mean"] == pytest.approx(50.0, abs=1e-6)


# One query at 0 degrees; positives at 10, 40, 50 and negatives at 30, 50, 60, 80 degrees.
POS, NEG = (10, 40, 50), (30, 50, 60, 80)


def overlapping():
    return at(0), at(*POS, *NEG), [1], [1, 1, 1, 2, 3, 4, 5]


def test_overlapping_distributions_give_the_pairwise_count_auc_and_numpy_percentiles():
    d = angle_diagnostics(*overlapping())
    # (positive < negative) pairs, ties one half: 10 -> 4, 40 -> 3, 50 -> 2 + 0.5 (tie with 50); 12 pairs
    assert d["angle_auc"] == pytest.approx(9.5 / 12)
    assert d["pos_angle_mean"] == pytest.approx(100 / 3)
    assert d["pos_angle_p5"] == pytest.approx(13.0)  # linear: index 0.1 between 10 and 40
    assert d["pos_angle_p50"] == pytest.approx(40.0)
    assert d["pos_angle_p95"] == pytest.approx(49.0)  # index 1.9 between 40 and 50
    assert d["neg_angle_mean"] == pytest.approx(55.0)
    assert d["neg_angle_p50"] == pytest.approx(55.0)
    assert d["margin_mean"] == pytest.approx(30 - 50)  # smallest negative minus largest positive
    assert d["separable_fraction"] == 0.0


def test_exclusion_decides_which_pairs_count_as_a_mask_or_as_a_callable():
    q, g, qp, gp = overlapping()
    mask = np.zeros((1, 7), dtype=bool)
    mask[0, 2] = mask[0, 3] = True  # drop the positive at 50 and the negative at 30
    d = angle_diagnostics(q, g, qp, gp, exclude=mask)
    assert d["pos_angle_mean"] == pytest.approx(25.0)
    assert d["neg_angle_mean"] == pytest.approx(190 / 3)
    assert d["angle_auc"] == 1.0
    assert d["margin_mean"] == pytest.approx(50 - 40)
    assert d["separable_fraction"] == 1.0
    assert angle_diagnostics(q, g, qp, gp, exclude=lambda rows: mask[rows]) == d


def two_queries():
    """Query 1 (axis 0) sees only its block: positive at 20, negative at 70 (margin +50). Query 2 (axis 2) sees only
    its own: positive at 40, negatives at 30 and 60 (margin -10). The blocks are orthogonal (90 degrees) apart."""
    q = np.zeros((2, 4))
    q[0, 0] = q[1, 2] = 1.0
    g = np.zeros((5, 4))
    g[:2, :2] = at(20, 70)
    g[2:, 2:] = at(40, 30, 60)
    exclude = np.array([[False, False, True, True, True], [True, True, False, False, False]])
    return q, g, [1, 2], [1, 5, 2, 6, 7], exclude


def test_separable_fraction_and_margin_are_per_query():
    q, g, qp, gp, exclude = two_queries()
    d = angle_diagnostics(q, g, qp, gp, exclude=exclude)
    assert d["separable_fraction"] == 0.5
    assert d["margin_mean"] == pytest.approx((50 - 10) / 2)
    assert d["pos_angle_mean"] == pytest.approx(30.0)
    assert d["neg_angle_mean"] == pytest.approx((70 + 30 + 60) / 3)
    # without the exclusion the other block's items count too, at 90 degrees: positives 20 and 40 stay, negatives
    # gain 90s, so both margins are unchanged but the negative mean rises
    full = angle_diagnostics(q, g, qp, gp)
    assert full["neg_angle_mean"] == pytest.approx((70 + 90 + 90 + 90 + 30 + 60 + 90 + 90) / 8)


def test_a_query_without_a_counted_positive_is_left_out_of_the_margin():
    q, g, qp, gp, exclude = two_queries()
    exclude = exclude.copy()
    exclude[1, 2] = True  # query 2 loses its only positive
    d = angle_diagnostics(q, g, qp, gp, exclude=exclude)
    assert d["separable_fraction"] == 1.0 and d["margin_mean"] == pytest.approx(50.0)


def test_max_pairs_samples_whole_queries_with_a_fixed_seed():
    q, g, qp, gp, exclude = two_queries()
    exact = angle_diagnostics(q, g, qp, gp, exclude=exclude, max_pairs=None)
    assert angle_diagnostics(q, g, qp, gp, exclude=exclude, max_pairs=10) == exact  # 10 pairs: everything fits
    one = angle_diagnostics(q, g, qp, gp, exclude=exclude, max_pairs=5, seed=3)  # room for one whole query
    assert (one["margin_mean"], one["separable_fraction"]) in [(pytest.approx(50.0), 1.0), (pytest.approx(-10.0), 0.0)]
    assert one == angle_diagnostics(q, g, qp, gp, exclude=exclude, max_pairs=5, seed=3)


def test_tensors_and_arrays_give_the_same_answer():
    q, g, qp, gp = overlapping()
    d = angle_diagnostics(torch.tensor(q, dtype=torch.float64), torch.tensor(g, dtype=torch.float64),
                          torch.tensor(qp), torch.tensor(gp))
    assert d == angle_diagnostics(q, g, qp, gp)


def test_norms_per_modality():
    feats = np.array([[3.0, 0, 0], [0, 0, 5.0], [0, 2.0, 0], [2.0, 0, 0]])
    norms = feature_norms(torch.tensor(feats), np.array([0, 0, 1, 1]))
    assert norms[0] == pytest.approx((4.0, 1.0))
    assert norms[1] == pytest.approx((2.0, 0.0))
    assert set(feature_norms(feats, [0, 0, 0, 0])) == {0}


def test_modality_gap_is_centroid_distance_over_spread():
    # RGB at (4, +-1): centroid (4, 0); IR at (0, +-1): centroid (0, 0); every feature 1 from its centroid
    feats = np.array([[4.0, 1.0], [4.0, -1.0], [0.0, 1.0], [0.0, -1.0]])
    out = modality_gap(feats, [1, 2, 1, 2], [0, 0, 1, 1])
    assert out["modality_gap"] == pytest.approx(4.0)
    assert math.isnan(out["modality_angle_shift"])  # no identity has two images of one modality


def test_modality_angle_shift_is_cross_minus_within_same_identity_angles():
    # identity 1: RGB at 0 and 10 degrees, IR at 40 and 50 (within 10 and 10; across 40, 50, 30, 40);
    # identity 2 (another plane): RGB at 0, IR at 20 (across 20); a different identity's pairs never count
    feats = np.zeros((7, 4))
    feats[:4, :2] = at(0, 10, 40, 50)
    feats[4:6, 2:] = at(0, 20)
    feats[6, 3] = 1.0  # identity 3, IR only: no same-identity pair at all
    out = modality_gap(feats, [1, 1, 1, 1, 2, 2, 3], [0, 0, 1, 1, 0, 1, 1])
    assert out["modality_angle_shift"] == pytest.approx((40 + 50 + 30 + 40 + 20) / 5 - 10)


def test_modality_gap_needs_both_modalities():
    with pytest.raises(ValueError, match="both modalities"):
        modality_gap(np.eye(2), [1, 2], [0, 0])


def test_angle_auc_equals_the_direct_pairwise_count_with_many_ties():
    from core.eval.diagnostics import angle_auc
    rng = np.random.default_rng(5)
    pos, neg = rng.integers(0, 12, 300).astype(float), rng.integers(4, 20, 500).astype(float)  # whole degrees: ties
    count = (pos[:, None] < neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert angle_auc(pos, neg) == pytest.approx(count / (pos.size * neg.size), abs=1e-12)
    assert math.isnan(angle_auc(pos, np.zeros(0)))


def test_per_identity_sample_keeps_at_most_that_many_rows_per_identity_and_modality():
    from core.eval.diagnostics import per_identity_sample
    pids = np.array([1, 1, 1, 1, 1, 2, 2, 3])
    mods = np.array([0, 0, 0, 1, 1, 0, 1, 1])
    rows = per_identity_sample(pids, mods, 2, seed=4)
    assert list(rows) == sorted(rows)
    kept = [(pids[r], mods[r]) for r in rows]
    assert sorted(kept) == [(1, 0), (1, 0), (1, 1), (1, 1), (2, 0), (2, 1), (3, 1)]  # 3 RGB of identity 1 -> 2
    assert set(rows) >= {3, 4, 5, 6, 7}  # groups within the size keep every row
    assert list(per_identity_sample(pids, mods, 5)) == list(range(8))
    assert list(per_identity_sample(pids, mods, 2, seed=4)) == list(rows)  # fixed seed
