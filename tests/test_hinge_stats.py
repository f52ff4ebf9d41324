"""Training-side diagnostics (core.losses.hinge_stats): active-hinge fraction and mined-pair angles of hand-built
batches whose hardest positives and negatives, and which anchors violate the margin, are worked out by hand."""
import numpy as np
import pytest
import torch

from core.config import LossConfig
from core.losses import BatchHardExpATLoss, BiDirectionalExpATLoss, TripletLoss, build_criterion
from core.losses.hinge_stats import HingeStats, attach


def circle(*degrees):
    r = np.radians(degrees)
    return torch.tensor(np.stack([np.cos(r), np.sin(r)], axis=1), dtype=torch.float32)


# Identity 0 at 0 and 20 degrees, identity 1 at 30 and 90, on the unit circle (chord = 2 sin(angle / 2) grows with
# the angle, so Euclidean and angular mining agree). Hardest positive / negative per anchor:
#   0: pos 20 (chord .347), neg 30 (.518)    20: pos 20 (.347), neg 10 (.174)
#  30: pos 60 (1.0),       neg 10 (.174)     90: pos 60 (1.0),  neg 70 (1.147)
FEAT, LABELS = circle(0, 20, 30, 90), torch.tensor([0, 0, 1, 1])
AP_MEAN, AN_MEAN = (20 + 20 + 60 + 60) / 4, (30 + 10 + 10 + 70) / 4


def stats_of(loss, *args):
    stats = HingeStats()
    assert attach(loss, stats)
    loss(*args)
    return stats.pop()


@pytest.mark.parametrize("margin, active", [(0.1, 2 / 4), (0.3, 4 / 4), (0.0, 2 / 4)])
def test_triplet_active_fraction_and_mined_angles(margin, active):
    # margin 0.1: anchor 0 has .347 - .518 + .1 < 0 and anchor 90 has 1.0 - 1.147 + .1 < 0; the other two violate
    got = stats_of(TripletLoss(margin=margin), FEAT, LABELS)
    assert got["active_hinge"] == pytest.approx(active)
    assert got["ap_angle"] == pytest.approx(AP_MEAN, abs=1e-3)
    assert got["an_angle"] == pytest.approx(AN_MEAN, abs=1e-3)


def test_triplet_angles_ignore_magnitudes():
    scaled = FEAT * torch.tensor([[1.0], [3.0], [0.5], [2.0]])  # other norms, the same directions
    got = stats_of(TripletLoss(margin=0.1, normalize_feature=True), scaled, LABELS)
    assert got["ap_angle"] == pytest.approx(AP_MEAN, abs=1e-3) and got["an_angle"] == pytest.approx(AN_MEAN, abs=1e-3)


def test_batch_hard_expat_active_fraction():
    # h = relu(cos_n - cos_p + 0.05): anchor 0: cos30 - cos20 = -.074 (inactive); 20: cos10 - cos20 > 0 (active);
    # 30: cos10 - cos60 > 0 (active); 90: cos70 - cos60 = -.158 (inactive)
    got = stats_of(BatchHardExpATLoss(margin=0.05), FEAT, LABELS)
    assert got == pytest.approx({"active_hinge": 0.5, "ap_angle": AP_MEAN, "an_angle": AN_MEAN}, abs=1e-3)


def test_bidirectional_triplets_share_one_counter_across_directions():
    # role-major, one triplet per direction: RGB anchor 0 -> IR positive 20, IR negative 70: cos70 - cos20 + .5 < 0;
    # IR anchor 0 -> RGB positive 50, RGB negative 40: cos40 - cos50 + .5 > 0. One of two anchors active.
    feat, roles = circle(0, 50, 40, 0, 20, 100), torch.arange(6)
    got = stats_of(BiDirectionalExpATLoss(margin=0.5), feat, None, None, roles)
    assert got == pytest.approx({"active_hinge": 0.5, "ap_angle": (20 + 50) / 2, "an_angle": (100 + 40) / 2}, abs=1e-3)


def test_criterion_accumulates_over_steps_names_each_term_and_leaves_the_loss_alone():
    crit = build_criterion(LossConfig(type="triplet", margin=0.1), num_classes=2, feat_dim=2, neck="no")
    outputs = {"global_feat": FEAT, "neck_feat": FEAT, "logits": torch.zeros(4, 2)}
    batch = {"pids": LABELS}
    before, _ = crit(outputs, batch)
    assert crit.pop_diagnostics() == {}  # off until the trainer turns it on
    crit.enable_diagnostics()
    after, _ = crit(outputs, batch)
    assert after == before
    # a second step where every anchor violates (identities swapped: each anchor's positive is far, negative near)
    crit(outputs, {"pids": torch.tensor([0, 1, 0, 1])})
    got = crit.pop_diagnostics()
    assert set(got) == {"train.active_hinge_triplet", "train.ap_angle_triplet", "train.an_angle_triplet"}
    assert got["train.active_hinge_triplet"] == pytest.approx((2 + 4) / 8)
    assert crit.pop_diagnostics() == {}  # read once per epoch, then start over


def test_anchors_without_a_negative_are_not_counted():
    stats = HingeStats()
    loss = TripletLoss(margin=0.1)
    attach(loss, stats)
    loss(FEAT, torch.zeros(4, dtype=torch.long))  # one identity: no anchor has a negative, no triplet
    assert stats.pop() is None
    loss(FEAT, torch.zeros(4, dtype=torch.long))
    loss(FEAT, LABELS)  # the hand-worked batch: only its 4 anchors count
    assert stats.pop() == pytest.approx({"active_hinge": 0.5, "ap_angle": AP_MEAN, "an_angle": AN_MEAN}, abs=1e-3)

