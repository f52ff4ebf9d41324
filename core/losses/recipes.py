"""Loss recipes: the four algorithms of SPEC 4 (and their RGB-IR forms) as data, plus the module that runs one.

A recipe is a tuple of :class:`Part` (loss kind, weight, feature consumed). ``build_criterion`` looks the recipe
up, applies weight overrides and builds one module per part from ``_TERM_BUILDERS``; adding an algorithm means
adding a table entry, not a branch.

Components returned by :class:`Criterion` are the *weighted* contributions, grouped under the metric names of
docs/ARCHITECTURE.md (``loss_id``, ``loss_metric``, ``loss_center``), so they add up to the total loss.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Mapping, Optional

import torch
from torch import nn

from .center import CenterLoss
from .expat import ANCHOR_IR, ANCHOR_RGB, BatchHardExpATLoss, BiDirectionalExpATLoss
from .label_smoothing import CrossEntropyLabelSmooth
from .triplet import TripletLoss

FEATURES = ("global_feat", "neck_feat")
COMPONENTS = ("loss_id", "loss_metric", "loss_center")
# Which reported component each kind of part feeds.
COMPONENT_OF = {
    "id": "loss_id",
    "triplet": "loss_metric",
    "expat": "loss_metric",
    "expat_bidir": "loss_metric",
    "center": "loss_center",
}


@dataclass(frozen=True)
class Part:
    """One weighted loss term.

    ``feature`` names the model output the term works on. The ID part reads ``logits``, which the model computes
    from ``neck_feat`` (equal to ``global_feat`` when the neck is ``no``); its ``feature`` records that.
    ``id_roles``: for the ID part only, when the batch carries ``roles`` the loss is the *sum* of one mean
    cross entropy per listed role (SPEC 3.2: ``CE(anchor_rgb) + CE(anchor_ir)``); empty = whole batch.
    """

    kind: str
    weight: float
    feature: str
    id_roles: tuple[int, ...] = ()

    @property
    def component(self) -> str:
        return COMPONENT_OF[self.kind]

    @property
    def input_key(self) -> str:
        return "logits" if self.kind == "id" else self.feature


@dataclass(frozen=True)
class Recipe:
    """Parts for single-modality and for RGB-IR training; ``neck`` is the neck the reference config pairs with
    the loss (informational, for presets: the criterion does not depend on it)."""

    neck: str
    single: tuple[Part, ...]
    cross_modal: tuple[Part, ...]

    def parts(self, cross_modal: bool) -> tuple[Part, ...]:
        return self.cross_modal if cross_modal else self.single


_ID = Part("id", 1.0, "neck_feat")
_ID_ANCHORS = Part("id", 1.0, "neck_feat", id_roles=(ANCHOR_RGB, ANCHOR_IR))
_TRIPLET_PRE_BN = Part("triplet", 1.0, "global_feat")
_BIDIR = Part("expat_bidir", 1.0, "neck_feat")
_CENTER = Part("center", 0.0005, "neck_feat")

RECIPES: Mapping[str, Recipe] = {
    # RSB softmax_triplet: neck "no", so neck_feat is global_feat; triplet on the GAP feature.
    "triplet": Recipe("no", (_ID, _TRIPLET_PRE_BN), (_ID, _TRIPLET_PRE_BN)),
    # RSB BNNeck: ID on post-BN logits, triplet on the pre-BN feature.
    "bnneck": Recipe("bnneck", (_ID, _TRIPLET_PRE_BN), (_ID, _TRIPLET_PRE_BN)),
    # expAT: ID and expAT both on the post-BN (CS-BN) feature; 0.1 in rgb_exp, 1.0 (bi-directional) in rgbir_exp.
    "expat": Recipe("csbn", (_ID, Part("expat", 0.1, "neck_feat")), (_ID_ANCHORS, _BIDIR)),
    # expAT + center (rgb_exp only); the RGB-IR form is our extension with the RGB-IR expAT weight.
    "expat_center": Recipe(
        "csbn",
        (_ID, Part("expat", 0.001, "neck_feat"), _CENTER),
        (_ID_ANCHORS, _BIDIR, _CENTER),
    ),
}


@dataclass(frozen=True)
class LossParams:
    """Every knob ``build_criterion`` accepts besides the recipe choice (None weight = recipe default)."""

    id_weight: Optional[float] = None
    metric_weight: Optional[float] = None
    center_weight: Optional[float] = None
    label_smoothing: float = 0.1
    margin: Optional[float] = 0.3
    soft_margin: bool = False
    normalize_feature: bool = False
    at_margin: float = 1.0
    expat_reduction: str = "exp_of_mean"
    relu_neg: bool = True
    weight_rgb2ir: float = 1.0
    weight_ir2rgb: float = 1.0
    id_anchors_only: Optional[bool] = None

    def weight_override(self, component: str) -> Optional[float]:
        return {"loss_id": self.id_weight, "loss_metric": self.metric_weight, "loss_center": self.center_weight}[
            component
        ]


class _IdTerm(nn.Module):
    """Label-smoothed CE on logits; per-role sum when the part lists roles and the batch has them."""

    def __init__(self, ce: CrossEntropyLabelSmooth, roles: tuple[int, ...]):
        super().__init__()
        self.ce = ce
        self.roles = roles

    def forward(self, logits: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        pids, roles = batch["pids"], batch.get("roles")
        if not self.roles or roles is None:
            return self.ce(logits, pids)
        return sum(self.ce(logits[roles == r], pids[roles == r]) for r in self.roles)


class _LabelTerm(nn.Module):
    """Adapter for losses called as ``loss(feat, pids)``."""

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, feat: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.loss(feat, batch["pids"])


class _BiDirTerm(nn.Module):
    """Bi-directional expAT: role-major triplets if the batch has ``roles``, else cross-modal batch-hard."""

    def __init__(self, loss: BiDirectionalExpATLoss):
        super().__init__()
        self.loss = loss

    def forward(self, feat: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.loss(feat, batch["pids"], batch.get("modality"), batch.get("roles"))


_TermBuilder = Callable[[Part, LossParams, int, int], nn.Module]
_TERM_BUILDERS: Mapping[str, _TermBuilder] = {
    "id": lambda part, p, num_classes, feat_dim: _IdTerm(
        CrossEntropyLabelSmooth(num_classes, p.label_smoothing), part.id_roles
    ),
    "triplet": lambda part, p, num_classes, feat_dim: _LabelTerm(
        TripletLoss(p.margin, p.soft_margin, p.normalize_feature)
    ),
    "expat": lambda part, p, num_classes, feat_dim: _LabelTerm(
        BatchHardExpATLoss(p.at_margin, p.expat_reduction, p.relu_neg)
    ),
    "expat_bidir": lambda part, p, num_classes, feat_dim: _BiDirTerm(
        BiDirectionalExpATLoss(p.at_margin, p.expat_reduction, p.relu_neg, p.weight_rgb2ir, p.weight_ir2rgb)
    ),
    "center": lambda part, p, num_classes, feat_dim: _LabelTerm(CenterLoss(num_classes, feat_dim)),
}


class Criterion(nn.Module):
    """Runs a resolved recipe: ``forward(outputs, batch) -> (total, {loss_id, loss_metric, loss_center})``.

    ``outputs`` is the model's training dict (``global_feat``, ``neck_feat``, ``logits``); ``batch`` the training
    batch dict (``pids``, optionally ``modality``, ``roles``). Components are detached weighted values; absent
    components are 0. ``center_loss`` / ``center_weight`` let the trainer give the centers their own optimiser.
    """

    def __init__(self, loss_type: str, parts: tuple[Part, ...], terms: list[nn.Module]):
        super().__init__()
        self.loss_type = loss_type
        self.parts = parts
        self.terms = nn.ModuleList(terms)

    @property
    def center_loss(self) -> Optional[CenterLoss]:
        found = [t.loss for part, t in zip(self.parts, self.terms) if part.kind == "center"]
        return found[0] if found else None

    @property
    def center_weight(self) -> float:
        return sum(part.weight for part in self.parts if part.kind == "center")

    def forward(
        self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total = outputs["logits"].new_zeros(())
        components = {name: total.detach().clone() for name in COMPONENTS}
        for part, term in zip(self.parts, self.terms):
            weighted = part.weight * term(outputs[part.input_key], batch)
            total = total + weighted
            components[part.component] = components[part.component] + weighted.detach()
        return total, components

    def extra_repr(self) -> str:
        return f"loss_type={self.loss_type!r}, parts={[(p.kind, p.weight, p.feature) for p in self.parts]}"


def resolve_parts(loss_type: str, cross_modal: bool, params: LossParams) -> tuple[Part, ...]:
    """The recipe's parts with weight / anchors-only overrides applied."""
    if loss_type not in RECIPES:
        raise ValueError(f"unknown loss type {loss_type!r}; valid: {', '.join(sorted(RECIPES))}")
    parts = []
    for part in RECIPES[loss_type].parts(cross_modal):
        weight = params.weight_override(part.component)
        if weight is not None:
            part = dataclasses.replace(part, weight=float(weight))
        if part.kind == "id" and params.id_anchors_only is not None:
            part = dataclasses.replace(part, id_roles=(ANCHOR_RGB, ANCHOR_IR) if params.id_anchors_only else ())
        parts.append(part)
    return tuple(parts)


def build_criterion(
    loss_type: str, num_classes: int, feat_dim: int, cross_modal: bool = False, **loss_params
) -> Criterion:
    """Build the criterion of ``loss_type`` (one of ``RECIPES``); ``loss_params`` are :class:`LossParams` fields.

    Weight overrides for a component the recipe lacks (e.g. ``center_weight`` with ``triplet``) are ignored so a
    study grid can sweep them across loss types.
    """
    params = LossParams(**loss_params)
    parts = resolve_parts(loss_type, cross_modal, params)
    terms = [_TERM_BUILDERS[part.kind](part, params, num_classes, feat_dim) for part in parts]
    return Criterion(loss_type, parts, terms)
