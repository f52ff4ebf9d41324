"""Loss values against hand-computed numbers and naive reference implementations (no call into the code under
test is used to produce an expected value)."""
import math

import numpy as np
import pytest
import torch

from core.losses import (
    BatchHardExpATLoss,
    BiDirectionalExpATLoss,
    CenterLoss,
    CrossEntropyLabelSmooth,
    ExpATLoss,
    TripletLoss,
)

S = 2 ** -0.5  # cos 45 degrees


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def pk_batch(p=4, k=3, dim=8, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    feat = torch.randn(p * k, dim, generator=gen, dtype=dtype)
    labels = torch.arange(p).repeat_interleave(k)
    return feat, labels


# --------------------------------------------------------------------------- label smoothing
def test_label_smoothing_uniform_logits_is_log_k():
    ce = CrossEntropyLabelSmooth(num_classes=5, epsilon=0.1)
    assert ce(torch.zeros(3, 5), torch.tensor([0, 3, 4])).item() == pytest.approx(math.log(5), rel=1e-6)


def test_label_smoothing_hand_value():
    # logits [2,0,0], target 0, K=3, eps=.1: q=[.9+.1/3, .1/3, .1/3]; loss = lse - 2*q_0.
    ce = CrossEntropyLabelSmooth(num_classes=3, epsilon=0.1)
    expected = math.log(math.exp(2) + 2) - 2 * (0.9 + 0.1 / 3)
    assert ce(t([[2.0, 0.0, 0.0]]), torch.tensor([0])).item() == pytest.approx(expected, rel=1e-9)


def test_label_smoothing_matches_formula_and_plain_ce_at_eps0():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 7, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 4, 6])
    lp = logits.numpy() - np.log(np.exp(logits.numpy()).sum(1, keepdims=True))
    q = np.full((6, 7), 0.2 / 7)
    q[np.arange(6), y.numpy()] += 0.8
    expected = (-(q * lp).sum(1)).mean()
    assert CrossEntropyLabelSmooth(7, 0.2)(logits, y).item() == pytest.approx(expected, rel=1e-9)
    plain = torch.nn.functional.cross_entropy(logits, y)
    assert CrossEntropyLabelSmooth(7, 0.0)(logits, y).item() == pytest.approx(plain.item(), rel=1e-9)


def test_label_smoothing_is_the_reference_code_with_its_gradient():
    """reid-strong-baseline's forward (log-softmax, q spread over all K classes), written out, on a SYSU-sized K."""
    gen = torch.Generator().manual_seed(2)
    logits = (3 * torch.randn(64, 395, generator=gen)).requires_grad_()
    y = torch.randint(0, 395, (64,), generator=gen)
    log_probs = torch.log_softmax(logits, dim=1)
    q = 0.9 * torch.zeros_like(log_probs).scatter_(1, y.unsqueeze(1), 1.0) + 0.1 / 395
    reference = (-q * log_probs).mean(0).sum()
    (ref_grad,) = torch.autograd.grad(reference, logits)
    ours = CrossEntropyLabelSmooth(395, 0.1)(logits, y)
    (our_grad,) = torch.autograd.grad(ours, logits)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-6)
    assert torch.allclose(our_grad, ref_grad, rtol=1e-5, atol=1e-8)


# --------------------------------------------------------------------------- triplet
# Points (0,0),(3,0) | (0,2),(5,2): d01=3, d02=2, d03=sqrt29, d12=sqrt13, d13=sqrt8, d23=5.
# d_ap = [3,3,5,5]; d_an = [2, sqrt8, 2, sqrt8].
TRI_FEAT = [[0.0, 0.0], [3.0, 0.0], [0.0, 2.0], [5.0, 2.0]]
TRI_LABELS = [0, 0, 1, 1]
TRI_GAP = [1.0, 3 - 8 ** 0.5, 3.0, 5 - 8 ** 0.5]  # d_ap - d_an


def test_triplet_hand_value_hinge():
    loss = TripletLoss(margin=0.3)(t(TRI_FEAT), torch.tensor(TRI_LABELS))
    expected = sum(max(0.0, g + 0.3) for g in TRI_GAP) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # a negative margin makes the hinge zero out the two anchors with gap < 1.5
    loss0 = TripletLoss(margin=-1.5)(t(TRI_FEAT), torch.tensor(TRI_LABELS))
    assert loss0.item() == pytest.approx(sum(max(0.0, g - 1.5) for g in TRI_GAP) / 4, rel=1e-6)


def test_triplet_hand_value_soft_margin():
    expected = sum(math.log1p(math.exp(g)) for g in TRI_GAP) / 4
    for loss_fn in (TripletLoss(soft_margin=True), TripletLoss(margin=None)):
        assert loss_fn(t(TRI_FEAT), torch.tensor(TRI_LABELS)).item() == pytest.approx(expected, rel=1e-6)


def test_triplet_mine_returns_hardest_distances():
    d_ap, d_an = TripletLoss().mine(t(TRI_FEAT), torch.tensor(TRI_LABELS))
    np.testing.assert_allclose(d_ap.numpy(), [3, 3, 5, 5], rtol=1e-9)
    np.testing.assert_allclose(d_an.numpy(), [2, 8 ** 0.5, 2, 8 ** 0.5], rtol=1e-9)


def naive_triplet(feat, labels, margin, soft=False):
    """Per-anchor loop with explicit distances (self-distance clamped as the reference)."""
    x = feat.numpy()
    y = labels.numpy()
    losses = []
    for i in range(len(x)):
        d = np.sqrt(np.maximum(((x - x[i]) ** 2).sum(1), 1e-12))
        ap, an = d[y == y[i]].max(), d[y != y[i]].min()
        losses.append(np.log1p(np.exp(ap - an)) if soft else max(0.0, ap - an + margin))
    return float(np.mean(losses))


def rsb_triplet(feat, labels, margin):
    """reid-strong-baseline's view(N, -1) mining, valid only for equal K per identity."""
    n = feat.shape[0]
    d = torch.cdist(feat, feat).pow(2).clamp(min=1e-12).sqrt()
    is_pos = labels[:, None] == labels[None, :]
    d_ap = d[is_pos].view(n, -1).max(1).values
    d_an = d[~is_pos].view(n, -1).min(1).values
    return torch.relu(d_ap - d_an + margin).mean().item()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_triplet_equals_naive_loop_and_rsb_on_pk_batches(seed):
    feat, labels = pk_batch(seed=seed)
    loss = TripletLoss(margin=0.3)(feat, labels).item()
    assert loss == pytest.approx(naive_triplet(feat, labels, 0.3), rel=1e-6)
    assert loss == pytest.approx(rsb_triplet(feat, labels, 0.3), rel=1e-6)
    soft = TripletLoss(soft_margin=True)(feat, labels).item()
    assert soft == pytest.approx(naive_triplet(feat, labels, None, soft=True), rel=1e-6)


def test_triplet_unequal_k_per_identity():
    gen = torch.Generator().manual_seed(3)
    feat = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3])  # K = 3, 2, 1, 1
    assert TripletLoss(margin=0.3)(feat, labels).item() == pytest.approx(naive_triplet(feat, labels, 0.3), rel=1e-6)


def test_triplet_gradient_is_finite_with_duplicate_points():
    feat = t([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]).requires_grad_()
    TripletLoss(0.3)(feat, torch.tensor([0, 0, 1, 1])).backward()
    assert torch.isfinite(feat.grad).all()


def test_triplet_no_negative_gives_zero_connected_loss():
    feat = torch.randn(4, 3, requires_grad=True)
    loss = TripletLoss()(feat, torch.zeros(4, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0 and feat.grad is not None


# --------------------------------------------------------------------------- expAT on explicit triplets
# triplet 1: a=(1,0), p=(1,0), n=(0,1)   -> cos_p=1, cos_n=0       -> h = 0 - 1 + m
# triplet 2: a=(1,0), p=(0,1), n=(1,1)   -> cos_p=0, cos_n=1/sqrt2 -> h = S + m
EXP_A, EXP_P, EXP_N = t([[1, 0], [1, 0]]), t([[1, 0], [0, 1]]), t([[0, 1], [1, 1]])


def test_expat_code_and_paper_forms_hand_values():
    code = ExpATLoss(margin=1.0, reduction="exp_of_mean")(EXP_A, EXP_P, EXP_N)
    paper = ExpATLoss(margin=1.0, reduction="mean_of_exp")(EXP_A, EXP_P, EXP_N)
    assert code.item() == pytest.approx(math.exp((0 + (S + 1)) / 2), rel=1e-9)
    assert paper.item() == pytest.approx((math.exp(0) + math.exp(S + 1)) / 2, rel=1e-9)


def test_expat_hinge_with_small_margin():
    # margin .5: triplet 1 gives h = -0.5 -> hinged to 0.
    code = ExpATLoss(margin=0.5)(EXP_A, EXP_P, EXP_N)
    assert code.item() == pytest.approx(math.exp((0 + S + 0.5) / 2), rel=1e-9)


def test_expat_relu_on_negative_cosine_is_switchable():
    a, p, n = t([[1, 0]]), t([[1, 1]]), t([[-1, 0]])  # cos_p = S, cos_n = -1
    assert ExpATLoss(1.0)(a, p, n).item() == pytest.approx(math.exp(0 - S + 1), rel=1e-9)
    assert ExpATLoss(1.0, relu_neg=False)(a, p, n).item() == pytest.approx(math.exp(max(0, -1 - S + 1)), rel=1e-9)


def random_triplets(n=10, dim=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, dim, generator=gen, dtype=torch.float64) for _ in range(3)]


def np_cos(x, y):
    x, y = x.numpy(), y.numpy()
    return (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))


@pytest.mark.parametrize("seed", [0, 1])
def test_expat_margin_one_identity(seed):
    a, p, n = random_triplets(seed=seed)
    expected = math.exp(1 + np.maximum(np_cos(a, n), 0).mean() - np_cos(a, p).mean())
    assert ExpATLoss(1.0)(a, p, n).item() == pytest.approx(expected, rel=1e-9)


def test_expat_code_form_is_margin_ranking_loss_with_1d_target():
    a, p, n = random_triplets(seed=4)
    cos_p = torch.nn.functional.cosine_similarity(a, p)
    cos_n = torch.relu(torch.nn.functional.cosine_similarity(a, n))
    for m in (1.0, 0.2):
        ref = torch.exp(torch.nn.MarginRankingLoss(margin=m)(cos_p, cos_n, torch.ones(len(a), dtype=a.dtype)))
        assert ExpATLoss(m)(a, p, n).item() == pytest.approx(ref.item(), rel=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_expat_paper_form_dominates_code_form(seed):
    a, p, n = random_triplets(seed=seed)
    code = ExpATLoss(reduction="exp_of_mean")(a, p, n).item()
    paper = ExpATLoss(reduction="mean_of_exp")(a, p, n).item()
    assert paper >= code
    # equality when every triplet has the same exponent: repeat one triplet
    a1, p1, n1 = (x[:1].repeat(5, 1) for x in (a, p, n))
    assert ExpATLoss(reduction="mean_of_exp")(a1, p1, n1).item() == pytest.approx(
        ExpATLoss(reduction="exp_of_mean")(a1, p1, n1).item(), rel=1e-12
    )


def test_expat_rejects_unknown_reduction_and_mismatched_shapes():
    with pytest.raises(ValueError, match="exp_of_mean"):
        ExpATLoss(reduction="sum")
    with pytest.raises(ValueError):
        ExpATLoss()(torch.randn(3, 2), torch.randn(3, 2), torch.randn(2, 2))


# --------------------------------------------------------------------------- batch-hard expAT
def test_batch_hard_expat_self_is_the_only_positive():
    # one image per identity: hardest positive is the anchor itself (cos 1) so h = relu(max cos to others).
    # (1,0),(0,1),(1,1): every row's hardest negative has cos 1/sqrt2.
    feat = t([[1, 0], [0, 1], [1, 1]])
    loss = BatchHardExpATLoss()(feat, torch.tensor([0, 1, 2]))
    assert loss.item() == pytest.approx(math.exp(S), rel=1e-6)


def test_batch_hard_expat_hand_value_two_ids():
    # f0=(1,0), f1=(0,1) id 0; f2=(1,1), f3=(-1,0) id 1.
    # rows: cos_ap = [0, 0, -S, -S], cos_an = [S, S, S, 0] -> h = [1+S, 1+S, 1+2S, 1+S], mean = 1 + 1.25 S.
    feat = t([[1, 0], [0, 1], [1, 1], [-1, 0]])
    labels = torch.tensor([0, 0, 1, 1])
    code = BatchHardExpATLoss()(feat, labels).item()
    paper = BatchHardExpATLoss(reduction="mean_of_exp")(feat, labels).item()
    assert code == pytest.approx(math.exp(1 + 1.25 * S), rel=1e-6)
    assert paper == pytest.approx((3 * math.exp(1 + S) + math.exp(1 + 2 * S)) / 4, rel=1e-6)


def naive_batch_hard_expat(feat, labels, margin=1.0, reduction="exp_of_mean", cand=None, cand_labels=None):
    x = feat.numpy() / np.linalg.norm(feat.numpy(), axis=1, keepdims=True)
    c = x if cand is None else cand.numpy() / np.linalg.norm(cand.numpy(), axis=1, keepdims=True)
    y, yc = labels.numpy(), (labels if cand_labels is None else cand_labels).numpy()
    h = []
    for i in range(len(x)):
        cos = c @ x[i]
        if not (yc == y[i]).any() or not (yc != y[i]).any():
            continue
        cos_ap, cos_an = cos[yc == y[i]].min(), cos[yc != y[i]].max()
        h.append(max(0.0, max(cos_an, 0.0) - cos_ap + margin))
    h = np.array(h)
    return float(np.exp(h.mean()) if reduction == "exp_of_mean" else np.exp(h).mean())


@pytest.mark.parametrize("labels", [[0, 0, 0, 1, 1, 1, 2, 2, 2], [0, 0, 0, 0, 1, 1, 2, 3, 3]])
@pytest.mark.parametrize("reduction", ["exp_of_mean", "mean_of_exp"])
def test_batch_hard_expat_equals_naive_loop(labels, reduction):
    gen = torch.Generator().manual_seed(5)
    feat = torch.randn(len(labels), 6, generator=gen, dtype=torch.float64)
    labels = torch.tensor(labels)
    got = BatchHardExpATLoss(reduction=reduction)(feat, labels).item()
    assert got == pytest.approx(naive_batch_hard_expat(feat, labels, reduction=reduction), rel=1e-6)


def test_batch_hard_expat_is_scale_invariant():
    feat, labels = pk_batch(seed=6)
    loss = BatchHardExpATLoss()
    assert loss(feat, labels).item() == pytest.approx(loss(feat * 7.5, labels).item(), rel=1e-9)


# --------------------------------------------------------------------------- bi-directional expAT
def role_major_batch(b=3, dim=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    feat = torch.randn(6 * b, dim, generator=gen, dtype=torch.float64)
    roles = torch.arange(6).repeat_interleave(b)
    return feat, roles


@pytest.mark.parametrize("reduction", ["exp_of_mean", "mean_of_exp"])
def test_bidirectional_from_triplets_is_weighted_sum_of_directions(reduction):
    feat, roles = role_major_batch()
    a_rgb, p_rgb, n_rgb, a_ir, p_ir, n_ir = feat.split(3)

    def direction(a, p, n):  # independent numpy expAT
        h = np.maximum(np.maximum(np_cos(a, n), 0) - np_cos(a, p) + 1.0, 0)
        return np.exp(h.mean()) if reduction == "exp_of_mean" else np.exp(h).mean()

    rgb, ir = direction(a_rgb, p_ir, n_ir), direction(a_ir, p_rgb, n_rgb)
    loss = BiDirectionalExpATLoss(reduction=reduction, weight_rgb2ir=0.7, weight_ir2rgb=0.2)
    assert loss(feat, roles=roles).item() == pytest.approx(0.7 * rgb + 0.2 * ir, rel=1e-9)
    got_rgb, got_ir = loss.directions_from_triplets(feat, roles)
    assert (got_rgb.item(), got_ir.item()) == pytest.approx((rgb, ir), rel=1e-9)
    assert BiDirectionalExpATLoss(reduction=reduction)(feat, roles=roles).item() == pytest.approx(rgb + ir, rel=1e-9)


def test_bidirectional_cross_modal_batch_hard_equals_naive():
    gen = torch.Generator().manual_seed(8)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 3, 3])
    modality = torch.tensor([0] * 6 + [1] * 6)
    feat = torch.randn(12, 6, generator=gen, dtype=torch.float64)
    rgb, ir = modality == 0, modality == 1
    # id 2 has no IR image and id 3 no RGB image: those anchors have no cross-modal positive and are skipped.
    expected_rgb = naive_batch_hard_expat(feat[rgb], labels[rgb], cand=feat[ir], cand_labels=labels[ir])
    expected_ir = naive_batch_hard_expat(feat[ir], labels[ir], cand=feat[rgb], cand_labels=labels[rgb])
    loss = BiDirectionalExpATLoss(weight_rgb2ir=2.0, weight_ir2rgb=0.5)
    got = loss(feat, labels, modality).item()
    assert got == pytest.approx(2.0 * expected_rgb + 0.5 * expected_ir, rel=1e-6)


def test_bidirectional_needs_roles_or_labels():
    with pytest.raises(ValueError):
        BiDirectionalExpATLoss()(torch.randn(4, 3))


# --------------------------------------------------------------------------- center loss
def test_center_loss_value_and_gradients():
    loss_fn = CenterLoss(num_classes=2, feat_dim=2)
    assert loss_fn.centers.shape == (2, 2) and loss_fn.centers.requires_grad
    with torch.no_grad():
        loss_fn.centers.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    x = torch.tensor([[3.0, 4.0], [1.0, 2.0]], requires_grad=True)
    loss = loss_fn(x, torch.tensor([0, 1]))
    assert loss.item() == pytest.approx((25 + 1) / 2)
    loss.backward()
    # d/dx = 2 (x - c) / B: descending moves features toward their center, centers toward their features.
    np.testing.assert_allclose(x.grad.numpy(), [[3.0, 4.0], [0.0, 1.0]])
    np.testing.assert_allclose(loss_fn.centers.grad.numpy(), [[-3.0, -4.0], [0.0, -1.0]])


def test_center_loss_clamps_at_1e_12():
    loss_fn = CenterLoss(num_classes=3, feat_dim=4)
    x = loss_fn.centers.detach()[[2, 0]].clone()
    assert loss_fn(x, torch.tensor([2, 0])).item() == pytest.approx(1e-12)


def test_distances_are_computed_in_float32_under_autocast():
    feat, labels = pk_batch(seed=9, dtype=torch.float32)
    feat = (feat * 10).to(torch.bfloat16).float()  # exactly representable in bfloat16
    expected = naive_triplet(feat.double(), labels, 0.3)  # float64 loop: what float32 distances approach
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        got = TripletLoss(0.3)(feat.to(torch.bfloat16), labels)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(expected, rel=1e-5)  # far tighter than bfloat16 resolution
