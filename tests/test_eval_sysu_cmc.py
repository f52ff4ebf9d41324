"""SYSU-MM01's two CMC forms: per image (the authors' eval.py) and per identity (the official evaluation).

Expected values are worked by hand below, or come from a plain per-query loop written here (sort, drop excluded,
keep each identity's first image), never from the code under test.
"""
import numpy as np
import pytest

from core.eval import evaluate_sysu_distmat
from core.eval.rank import first_identity_ranks


def identity_ranks_by_loop(dist, q_pids, g_pids, excluded=None):
    """The official rule, one query at a time: the ranked gallery (stable sort: ties by lower index) without the
    excluded items, reduced to the first image of each identity; 1-based position of the query's identity."""
    out = []
    for i in range(dist.shape[0]):
        order = [j for j in np.argsort(dist[i], kind="stable") if excluded is None or not excluded[i, j]]
        seen = []
        for j in order:
            if g_pids[j] not in seen:
                seen.append(g_pids[j])
        out.append(seen.index(q_pids[i]) + 1 if q_pids[i] in seen else 0)
    return np.array(out)


def test_identity_ranks_by_hand_with_ties_and_exclusion():
    #            col:   0    1    2    3    4    5
    g_pids = np.array([7,   7,   8,   9,   8,   5])
    dist = np.array([
        [1.0, 2.0, 0.5, 0.5, 3.0, 4.0],  # pid 7: ids by distance 8 (0.5, col 2), 9 (0.5, col 3), 7 -> rank 3
        [2.0, 1.0, 1.0, 0.2, 3.0, 1.0],  # pid 8: 9 (0.2), then 7 (1.0 col 1), 8 (1.0 col 2) tie -> lower col first -> 3
        [0.1, 0.1, 0.1, 0.1, 0.1, 0.1],  # pid 5: all tie; order by column: 7, 8, 9, 5 -> rank 4
        [0.3, 0.9, 0.1, 0.2, 0.1, 0.4],  # pid 9: 8 (0.1), 9 (0.2) -> rank 2 per identity; per image it is rank 3
        [0.3, 0.9, 0.1, 0.2, 0.1, 0.4],  # pid 4: no such identity in the gallery -> 0
    ])
    q_pids = np.array([7, 8, 5, 9, 4])
    assert first_identity_ranks(dist, q_pids, g_pids).tolist() == [3, 3, 4, 2, 0]
    # Excluding both pid-8 images for query 0 lifts 7 to rank 2; excluding query 3's only match leaves it without one.
    excluded = np.zeros(dist.shape, dtype=bool)
    excluded[0, [2, 4]] = True
    excluded[3, 3] = True
    got = first_identity_ranks(dist, q_pids, g_pids, lambda rows: excluded[rows])
    assert got.tolist() == [2, 3, 4, 0, 0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_identity_ranks_match_the_loop_on_random_problems_with_ties(dtype):
    rng = np.random.default_rng(3)
    for trial in range(20):
        q, g = rng.integers(1, 12), rng.integers(1, 40)
        g_pids = rng.integers(0, 8, size=g)
        q_pids = rng.integers(0, 9, size=q)
        dist = rng.integers(0, 5, size=(q, g)).astype(dtype)  # few values: many ties
        if dtype == np.float64:
            dist += rng.integers(0, 2, size=(q, g)) * 1e-12  # values float32 cannot hold
        excluded = rng.random((q, g)) < 0.2
        got = first_identity_ranks(dist, q_pids, g_pids, lambda rows: excluded[rows], chunk_elems=7)
        np.testing.assert_array_equal(got, identity_ranks_by_loop(dist, q_pids, g_pids, excluded), str(trial))


def test_sysu_official_cmc_keeps_rank1_map_minp_and_differs_beyond_rank1():
    """One trial (single-shot gallery of 4 identities x 2 cameras), cam3 queries ignore cam2.

    Per image the query's match is third (two images of pid 2 first); per identity it is second."""
    g_pids = np.array([1, 1, 2, 2, 3, 3, 4, 4])
    g_cams = np.array([1, 4, 1, 4, 1, 4, 1, 4])
    q_pids, q_cams = np.array([1, 3]), np.array([3, 6])
    dist = np.array([[0.3, 0.9, 0.1, 0.2, 0.5, 0.6, 0.7, 0.8],
                     [0.1, 0.2, 0.9, 0.9, 0.3, 0.4, 0.8, 0.8]])
    std = evaluate_sysu_distmat(dist, q_pids, g_pids, q_cams, g_cams, num_trials=1, max_rank=4)
    off = evaluate_sysu_distmat(dist, q_pids, g_pids, q_cams, g_cams, num_trials=1, max_rank=4, cmc="official")
    # query 0 (pid 1): images ranked 2, 2, 1 -> first match at 3; identities 2, 1 -> rank 2.
    # query 1 (pid 3): images 1, 1, 3 -> first match at 3; identities 1, 3 -> rank 2.
    np.testing.assert_allclose(std["cmc"], [0, 0, 1, 1])
    np.testing.assert_allclose(off["cmc"], [0, 1, 1, 1])
    assert off["cmc_form"] == "official" and std["cmc_form"] == "standard"
    for key in ("rank1", "mAP", "mINP"):
        assert off[key] == std[key]
    # AP per image: query 0 matches at 3 and 8 (0.9 is last) -> (1/3 + 2/8) / 2; query 1 at 3 and 4.
    assert std["mAP"] == pytest.approx(((1 / 3 + 2 / 8) / 2 + (1 / 3 + 2 / 4) / 2) / 2)


def test_unknown_cmc_form_is_refused():
    with pytest.raises(ValueError, match="CMC form"):
        evaluate_sysu_distmat(np.zeros((1, 2)), [1], [1, 2], [3], [1, 4], num_trials=1, cmc="matlab")
