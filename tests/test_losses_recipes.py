"""Recipes: parts, weights, which feature each part consumes, and how the criterion combines them."""
import math

import pytest
import torch

from core.config import LossConfig
from core.losses import (
    RECIPES,
    BatchHardExpATLoss,
    BiDirectionalExpATLoss,
    CrossEntropyLabelSmooth,
    TripletLoss,
    build_criterion,
)

C, D = 5, 8


def criterion(loss_type, num_classes, feat_dim, cross_modal=False, neck=None, id_anchors_only=None, **fields):
    """The criterion of a trial whose ``loss`` config has ``loss_type`` and ``fields`` (the schema's defaults else)."""
    return build_criterion(LossConfig(type=loss_type, **fields), num_classes, feat_dim, cross_modal, neck=neck,
                           id_anchors_only=id_anchors_only)


def parts_of(loss_type, cross_modal=False, **kw):
    """(kind, weight, model output read) of each part, with the recipe's reference neck unless ``neck`` is given."""
    crit = criterion(loss_type, C, D, cross_modal, **kw)
    return [(p.kind, p.weight, p.input_key(crit.metric_feature)) for p in crit.parts]


def test_recipe_names():
    from core.necks import RECIPE_NECK
    assert set(RECIPES) == {"triplet", "bnneck", "expat", "expat_center"}
    assert RECIPE_NECK == {"triplet": "no", "bnneck": "bnneck", "expat": "csbn", "expat_center": "csbn"}


def test_single_modality_recipes_match_spec_table():
    assert parts_of("triplet") == [("id", 1.0, "logits"), ("triplet", 1.0, "global_feat")]
    assert parts_of("bnneck") == [("id", 1.0, "logits"), ("triplet", 1.0, "global_feat")]
    assert parts_of("expat") == [("id", 1.0, "logits"), ("expat", 0.1, "neck_feat")]
    assert parts_of("expat_center") == [
        ("id", 1.0, "logits"),
        ("expat", 0.001, "neck_feat"),
        ("center", 0.0005, "neck_feat"),
    ]


def test_cross_modal_recipes():
    assert parts_of("expat", True) == [("id", 1.0, "logits"), ("expat_bidir", 1.0, "neck_feat")]
    assert parts_of("bnneck", True) == [("id", 1.0, "logits"), ("triplet", 1.0, "global_feat")]
    crit = criterion("expat", C, D, cross_modal=True)
    assert crit.parts[0].id_roles == (0, 3)
    assert criterion("bnneck", C, D, cross_modal=True).parts[0].id_roles == ()


def test_weight_overrides_and_ignored_absent_component():
    assert parts_of("expat_center", id_weight=0.5, metric_weight=0.2, center_weight=0.01) == [
        ("id", 0.5, "logits"),
        ("expat", 0.2, "neck_feat"),
        ("center", 0.01, "neck_feat"),
    ]
    assert parts_of("triplet", center_weight=3.0) == parts_of("triplet")


def test_unknown_loss_type_lists_valid_names():
    with pytest.raises(ValueError, match="bnneck.*expat.*expat_center.*triplet"):
        criterion("expAT", C, D)
    with pytest.raises(TypeError):
        criterion("triplet", C, D, not_a_param=1)


def test_loss_params_reach_the_modules():
    crit = criterion(
        "expat", C, D, True, at_margin=0.5, expat_reduction="mean_of_exp", relu_neg=False,
        weight_rgb2ir=0.3, weight_ir2rgb=0.7, label_smoothing=0.2,
    )
    ce, bidir = crit.terms[0].ce, crit.terms[1].loss
    assert ce.epsilon == 0.2 and ce.num_classes == C
    assert isinstance(bidir, BiDirectionalExpATLoss)
    assert (bidir.margin, bidir.reduction, bidir.relu_neg) == (0.5, "mean_of_exp", False)
    assert (bidir.weight_rgb2ir, bidir.weight_ir2rgb) == (0.3, 0.7)
    trip = criterion("bnneck", C, D, margin=0.5, soft_margin=True).terms[1].loss
    assert isinstance(trip, TripletLoss) and trip.margin == 0.5 and trip.soft_margin


def fake_outputs(n, seed=0):
    """Independent leaf tensors so gradients show which output each part consumed."""
    gen = torch.Generator().manual_seed(seed)
    return {
        key: torch.randn(n, dim, generator=gen, dtype=torch.float64).requires_grad_()
        for key, dim in (("global_feat", D), ("neck_feat", D), ("logits", C))
    }


def pk(n_ids=4, k=2):
    return {"pids": torch.arange(n_ids).repeat_interleave(k)}


@pytest.mark.parametrize(
    "loss_type, metric_feature",
    [("triplet", "global_feat"), ("bnneck", "global_feat"), ("expat", "neck_feat"), ("expat_center", "neck_feat")],
)
def test_gradients_flow_to_the_consumed_feature(loss_type, metric_feature):
    out, batch = fake_outputs(8), pk()
    crit = criterion(loss_type, C, D)
    total, _ = crit(out, batch)
    total.backward()
    other = "neck_feat" if metric_feature == "global_feat" else "global_feat"
    assert out["logits"].grad is not None and out["logits"].grad.abs().sum() > 0
    assert out[metric_feature].grad is not None and out[metric_feature].grad.abs().sum() > 0
    assert out[other].grad is None


@pytest.mark.parametrize("loss_type", ["triplet", "bnneck", "expat", "expat_center"])
def test_total_is_weighted_sum_and_components_are_named(loss_type):
    out, batch = fake_outputs(8, seed=1), pk()
    crit = criterion(loss_type, C, D)
    total, comps = crit(out, batch)
    assert set(comps) == {"loss_id", "loss_metric", "loss_center"}
    assert all(not v.requires_grad for v in comps.values())
    assert total.item() == pytest.approx(sum(v.item() for v in comps.values()), rel=1e-12)

    pids = batch["pids"]
    loss_id = CrossEntropyLabelSmooth(C, 0.1)(out["logits"], pids).item()
    assert comps["loss_id"].item() == pytest.approx(loss_id, rel=1e-12)
    if loss_type in ("triplet", "bnneck"):
        metric = TripletLoss(0.3)(out["global_feat"], pids).item()
    else:
        weight = 0.1 if loss_type == "expat" else 0.001
        metric = weight * BatchHardExpATLoss()(out["neck_feat"], pids).item()
    assert comps["loss_metric"].item() == pytest.approx(metric, rel=1e-12)
    if loss_type == "expat_center":
        centers = crit.center_loss.centers.detach().double()
        expected = ((out["neck_feat"].detach() - centers[pids]) ** 2).sum(1).mean().item()
        assert comps["loss_center"].item() == pytest.approx(0.0005 * expected, rel=1e-6)
        assert crit.center_weight == 0.0005
    else:
        assert comps["loss_center"].item() == 0.0
        assert crit.center_loss is None and crit.center_weight == 0.0


def test_center_part_exposes_centers_with_gradient():
    crit = criterion("expat_center", C, D).double()
    out, batch = fake_outputs(8, seed=2), pk()
    crit(out, batch)[0].backward()
    assert crit.center_loss.centers.shape == (C, D)
    assert crit.center_loss.centers.grad.abs().sum() > 0


def role_major(b=2, seed=3):
    out = fake_outputs(6 * b, seed=seed)
    roles = torch.arange(6).repeat_interleave(b)
    gen = torch.Generator().manual_seed(seed)
    anchor_ids = torch.randint(0, C, (b,), generator=gen)
    pids = torch.cat([anchor_ids, anchor_ids, (anchor_ids + 1) % C] * 2)
    modality = (roles >= 3).long()
    return out, {"pids": pids, "roles": roles, "modality": modality}


def test_cross_modal_expat_with_roles_uses_anchor_id_loss_and_triplets():
    out, batch = role_major()
    crit = criterion("expat", C, D, cross_modal=True)
    total, comps = crit(out, batch)
    ce = CrossEntropyLabelSmooth(C, 0.1)
    logits, pids, roles = out["logits"], batch["pids"], batch["roles"]
    expected_id = ce(logits[roles == 0], pids[roles == 0]) + ce(logits[roles == 3], pids[roles == 3])
    assert comps["loss_id"].item() == pytest.approx(expected_id.item(), rel=1e-12)
    expected_at = BiDirectionalExpATLoss().from_triplets(out["neck_feat"], roles)
    assert comps["loss_metric"].item() == pytest.approx(expected_at.item(), rel=1e-12)
    total.backward()
    # positives / negatives get no ID gradient
    assert out["logits"].grad[(roles != 0) & (roles != 3)].abs().sum() == 0
    assert out["logits"].grad[roles == 0].abs().sum() > 0


def test_cross_modal_expat_anchor_only_switch():
    out, batch = role_major()
    crit = criterion("expat", C, D, cross_modal=True, id_anchors_only=False)
    _, comps = crit(out, batch)
    expected = CrossEntropyLabelSmooth(C, 0.1)(out["logits"], batch["pids"])
    assert comps["loss_id"].item() == pytest.approx(expected.item(), rel=1e-12)


def test_cross_modal_expat_without_roles_uses_batch_hard():
    out = fake_outputs(8, seed=4)
    batch = {"pids": torch.tensor([0, 0, 1, 1, 0, 0, 1, 1]), "modality": torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])}
    _, comps = criterion("expat", C, D, cross_modal=True)(out, batch)
    expected = BiDirectionalExpATLoss().from_batch(out["neck_feat"], batch["pids"], batch["modality"])
    assert comps["loss_metric"].item() == pytest.approx(expected.item(), rel=1e-12)
    assert comps["loss_id"].item() == pytest.approx(
        CrossEntropyLabelSmooth(C, 0.1)(out["logits"], batch["pids"]).item(), rel=1e-12
    )


def test_cross_modal_triplet_is_batch_hard_over_whole_batch():
    out, batch = role_major(seed=5)
    _, comps = criterion("bnneck", C, D, cross_modal=True)(out, batch)
    expected = TripletLoss(0.3)(out["global_feat"], batch["pids"])
    assert comps["loss_metric"].item() == pytest.approx(expected.item(), rel=1e-12)


def test_margin_one_expat_criterion_value_by_hand():
    # 2 ids x 2 images, unit vectors: (1,0),(0,1) id 0; (1,1),(-1,0) id 1 -> mean h = 1 + 1.25/sqrt2.
    feat = torch.tensor([[1.0, 0], [0, 1], [1, 1], [-1, 0]], dtype=torch.float64)
    out = {"global_feat": feat * 0, "neck_feat": feat, "logits": torch.zeros(4, C, dtype=torch.float64)}
    _, comps = criterion("expat", C, 2)(out, {"pids": torch.tensor([0, 0, 1, 1])})
    assert comps["loss_metric"].item() == pytest.approx(0.1 * math.exp(1 + 1.25 * 2 ** -0.5), rel=1e-6)
    assert comps["loss_id"].item() == pytest.approx(math.log(C), rel=1e-9)


@pytest.mark.parametrize("loss_type", ["triplet", "bnneck", "expat", "expat_center"])
@pytest.mark.parametrize("neck, metric_feature", [("no", "global_feat"), ("bnneck", "global_feat"),
                                                   ("csbn", "neck_feat")])
def test_the_neck_decides_which_feature_every_loss_consumes(loss_type, neck, metric_feature):
    """docs/REPRODUCTION.md §4 / RSB: bnneck puts metric (and center) losses before the BN, csbn after it; the ID loss
    always reads the classifier's logits. Any loss type on any neck follows the neck, not its own reference neck."""
    out, batch = fake_outputs(8, seed=6), pk()
    crit = criterion(loss_type, C, D, neck=neck)
    _, comps = crit(out, batch)
    crit(out, batch)[0].backward()
    other = "neck_feat" if metric_feature == "global_feat" else "global_feat"
    assert out[metric_feature].grad.abs().sum() > 0 and out[other].grad is None
    pids = batch["pids"]
    if loss_type in ("triplet", "bnneck"):
        expected = TripletLoss(0.3)(out[metric_feature], pids).item()
    else:
        expected = (0.1 if loss_type == "expat" else 0.001) * BatchHardExpATLoss()(out[metric_feature], pids).item()
    assert comps["loss_metric"].item() == pytest.approx(expected, rel=1e-12)


def _changed(value):
    """A different valid value of a LossConfig field."""
    if isinstance(value, bool):
        return not value
    if value is None:
        return 0.7
    if value == "exp_of_mean":
        return "mean_of_exp"
    return value * 2 + 0.3


@pytest.mark.parametrize("cross_modal", [False, True])
@pytest.mark.parametrize("loss_type", ["triplet", "bnneck", "expat", "expat_center"])
def test_declared_loss_reads_are_exactly_the_fields_that_change_the_loss(loss_type, cross_modal):
    """Each field a recipe declares it reads changes the loss value when changed; every other field does not.
    (loss.center_lr is the centers' optimiser step, read by the trainer, so it is checked there.)"""
    import dataclasses

    from core.config import LossConfig
    from core.losses import recipe_reads
    out, batch = role_major(b=8, seed=7) if cross_modal else (fake_outputs(12, seed=7), pk(4, 3))
    batch = dict(batch, pids=batch["pids"] % 3)  # three ids: triplet hinges away from zero on random features

    def value(**fields):
        torch.manual_seed(0)  # the same centers every time
        crit = criterion(loss_type, C, D, cross_modal, **fields).double()
        return crit(out, batch)[0].item()

    reference = value()
    reads = set(recipe_reads(loss_type, cross_modal))
    for f in dataclasses.fields(LossConfig):
        if f.name in ("type", "center_lr"):
            continue
        moved = value(**{f.name: _changed(getattr(LossConfig(), f.name))})
        assert (moved != reference) == (f.name in reads), f.name
    assert ("center_lr" in reads) == (loss_type == "expat_center")


def test_the_trials_loss_config_reaches_the_modules_through_the_factory():
    """``core.factory.build_loss`` hands the trial's ``cfg.loss`` itself to ``build_criterion``: a value set for
    the trial (not the schema's default) is what the loss module holds."""
    from core.config import load_config
    from core.factory import build_loss
    cfg = load_config("quick", {"loss.type": "expat", "loss.at_margin": 0.5, "loss.expat_reduction": "mean_of_exp",
                                "loss.label_smoothing": 0.2, "loss.metric_weight": 0.3})
    crit = build_loss(cfg, C, D)
    ce, metric = crit.terms[0].ce, crit.terms[1].loss
    assert ce.epsilon == 0.2 and (metric.margin, metric.reduction) == (0.5, "mean_of_exp")
    assert crit.parts[1].weight == 0.3
