"""Loss recipes: the four algorithms of docs/REPRODUCTION.md §5 (and their RGB-IR forms) as data, plus the module
that runs one.

A recipe is a tuple of :class:`Part` (loss kind, weight). ``build_criterion`` takes the trial's ``LossConfig`` as it
is, looks the recipe of its ``type`` up, applies weight overrides and builds one module per part from ``TERMS``;
adding an algorithm means adding a table entry, not a branch. Which model output a part consumes is the neck's
decision (:mod:`core.necks`): the ID part reads the logits, the metric and center parts the neck's
``metric_feature``.

Each kind of part declares the ``loss.*`` fields it reads (``Term.reads``): its builder is handed exactly those,
so the declaration is what the part uses, and the effective configuration (:mod:`core.effective`) can tell which
``loss.*`` keys a trial reads. Defaults live in the schema (``core.config.LossConfig``) only.

Components returned by :class:`Criterion` are the *weighted* contributions, grouped under the metric names of
docs/ARCHITECTURE.md (``loss_id``, ``loss_metric``, ``loss_center``), so they add up to the total loss.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Mapping, Optional

import torch
from torch import nn

from core.config import LossConfig
from core.names import train_metric
from core.necks import RECIPE_NECK, neck_of

from .center import CenterLoss
from .hinge_stats import HingeStats, attach
from .expat import ANCHOR_IR, ANCHOR_RGB, BatchHardExpATLoss, BiDirectionalExpATLoss
from .label_smoothing import CrossEntropyLabelSmooth
from .triplet import TripletLoss

COMPONENTS = ("loss_id", "loss_metric", "loss_center")
# Which reported component each kind of part feeds, and the loss.* field that overrides its weight.
COMPONENT_OF = {
    "id": "loss_id",
    "triplet": "loss_metric",
    "expat": "loss_metric",
    "expat_bidir": "loss_metric",
    "center": "loss_center",
}
WEIGHT_FIELD = {"loss_id": "id_weight", "loss_metric": "metric_weight", "loss_center": "center_weight"}


@dataclass(frozen=True)
class Part:
    """One weighted loss term.

    ``id_roles``: for the ID part only, when the batch carries ``roles`` the loss is the *sum* of one mean
    cross entropy per listed role (docs/REPRODUCTION.md §7.3: ``CE(anchor_rgb) + CE(anchor_ir)``); empty = whole batch.
    """

    kind: str
    weight: float
    id_roles: tuple[int, ...] = ()

    @property
    def component(self) -> str:
        return COMPONENT_OF[self.kind]

    def input_key(self, metric_feature: str) -> str:
        return "logits" if self.kind == "id" else metric_feature

    @property
    def reads(self) -> tuple[str, ...]:
        """The ``loss.*`` fields this part reads: its term's fields and its component's weight override."""
        return (*TERMS[self.kind].reads, WEIGHT_FIELD[self.component])


@dataclass(frozen=True)
class Recipe:
    """Parts for single-modality and for RGB-IR training (the neck is ``core.necks.RECIPE_NECK``)."""

    single: tuple[Part, ...]
    cross_modal: tuple[Part, ...]

    def parts(self, cross_modal: bool) -> tuple[Part, ...]:
        return self.cross_modal if cross_modal else self.single


_ID = Part("id", 1.0)
_ID_ANCHORS = Part("id", 1.0, id_roles=(ANCHOR_RGB, ANCHOR_IR))
_TRIPLET = Part("triplet", 1.0)
_BIDIR = Part("expat_bidir", 1.0)
_CENTER = Part("center", 0.0005)

RECIPES: Mapping[str, Recipe] = {
    # RSB softmax_triplet (reference neck "no"): ID + batch-hard triplet.
    "triplet": Recipe((_ID, _TRIPLET), (_ID, _TRIPLET)),
    # RSB BNNeck: the same parts; the bnneck neck puts the triplet on the pre-BN feature.
    "bnneck": Recipe((_ID, _TRIPLET), (_ID, _TRIPLET)),
    # expAT: 0.1 in rgb_exp, 1.0 (bi-directional) in rgbir_exp; the csbn neck puts both on the post-BN feature.
    "expat": Recipe((_ID, Part("expat", 0.1)), (_ID_ANCHORS, _BIDIR)),
    # expAT + center (rgb_exp only); the RGB-IR form is our extension with the RGB-IR expAT weight.
    "expat_center": Recipe((_ID, Part("expat", 0.001), _CENTER), (_ID_ANCHORS, _BIDIR, _CENTER)),
}
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


@dataclass(frozen=True)
class Term:
    """One kind of part: the ``loss.*`` fields it reads and its builder ``build(part, num_classes, feat_dim,
    **those fields)``."""

    reads: tuple[str, ...]
    build: Callable[..., nn.Module]


TERMS: Mapping[str, Term] = {
    "id": Term(("label_smoothing",), lambda part, num_classes, feat_dim, label_smoothing: _IdTerm(
        CrossEntropyLabelSmooth(num_classes, label_smoothing), part.id_roles)),
    "triplet": Term(("margin", "soft_margin"), lambda part, num_classes, feat_dim, margin, soft_margin: _LabelTerm(
        TripletLoss(margin, soft_margin))),
    "expat": Term(("at_margin", "expat_reduction", "relu_neg"),
                  lambda part, num_classes, feat_dim, at_margin, expat_reduction, relu_neg: _LabelTerm(
                      BatchHardExpATLoss(at_margin, expat_reduction, relu_neg))),
    "expat_bidir": Term(("at_margin", "expat_reduction", "relu_neg", "weight_rgb2ir", "weight_ir2rgb"),
                        lambda part, num_classes, feat_dim, at_margin, expat_reduction, relu_neg, weight_rgb2ir,
                        weight_ir2rgb: _BiDirTerm(BiDirectionalExpATLoss(at_margin, expat_reduction, relu_neg,
                                                                          weight_rgb2ir, weight_ir2rgb))),
    # center_lr is the step size of the centers' own optimiser, which the trainer builds for this part.
    "center": Term(("center_lr",), lambda part, num_classes, feat_dim, center_lr: _LabelTerm(
        CenterLoss(num_classes, feat_dim))),
}


class Criterion(nn.Module):
    """Runs a resolved recipe: ``forward(outputs, batch) -> (total, {loss_id, loss_metric, loss_center})``.

    ``outputs`` is the model's training dict (``global_feat``, ``neck_feat``, ``logits``); ``batch`` the training
    batch dict (``pids``, optionally ``modality``, ``roles``). The ID part reads ``logits``, every other part
    ``metric_feature`` (the neck's choice). Components are detached weighted values; absent components are 0.
    ``center_loss`` / ``center_weight`` let the trainer give the centers their own optimiser.
    """

    def __init__(self, loss_type: str, parts: tuple[Part, ...], terms: list[nn.Module], metric_feature: str):
        super().__init__()
        self.loss_type = loss_type
        self.parts = parts
        self.terms = nn.ModuleList(terms)
        self.metric_feature = metric_feature

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
            weighted = part.weight * term(outputs[part.input_key(self.metric_feature)], batch)
            total = total + weighted
            components[part.component] = components[part.component] + weighted.detach()
        return total, components

    def enable_diagnostics(self) -> None:
        """Count active hinges and mined-pair angles in every term that mines triplets (one
        :class:`HingeStats` per term), read per epoch by :meth:`pop_diagnostics`."""
        self._hinge_stats = {}
        for part, term in zip(self.parts, self.terms):
            stats = HingeStats()
            if attach(term, stats):
                self._hinge_stats[part.kind] = stats

    def pop_diagnostics(self) -> dict[str, float]:
        """``train.<stat>_<term>`` (core.names) over the steps since the last call; empty when diagnostics are off
        or nothing was mined."""
        out = {}
        for kind, stats in getattr(self, "_hinge_stats", {}).items():
            for stat, value in (stats.pop() or {}).items():
                out[train_metric(stat, kind)] = value
        return out

    def extra_repr(self) -> str:
        return (f"loss_type={self.loss_type!r}, metric_feature={self.metric_feature!r}, "
                f"parts={[(p.kind, p.weight) for p in self.parts]}")


def check_loss_type(loss_type: str) -> None:
    if loss_type not in RECIPES:
        raise ValueError(f"unknown loss type {loss_type!r}; valid: {', '.join(sorted(RECIPES))}")


def resolve_parts(loss_type: str, cross_modal: bool, loss: Optional[LossConfig] = None,
                  id_anchors_only: Optional[bool] = None) -> tuple[Part, ...]:
    """The recipe's parts with the weight overrides of ``loss`` (None = the schema's defaults: the recipe's
    weights) and the anchors-only switch applied."""
    check_loss_type(loss_type)
    loss = loss or LossConfig(type=loss_type)
    parts = []
    for part in RECIPES[loss_type].parts(cross_modal):
        weight = getattr(loss, WEIGHT_FIELD[part.component])
        if weight is not None:
            part = dataclasses.replace(part, weight=float(weight))
        if part.kind == "id" and id_anchors_only is not None:
            part = dataclasses.replace(part, id_roles=(ANCHOR_RGB, ANCHOR_IR) if id_anchors_only else ())
        parts.append(part)
    return tuple(parts)


def recipe_reads(loss_type: str, cross_modal: bool) -> tuple[str, ...]:
    """The ``loss.*`` fields a trial of ``loss_type`` reads (``type`` included), in schema order."""
    check_loss_type(loss_type)
    read = {"type"} | {f for part in RECIPES[loss_type].parts(cross_modal) for f in part.reads}
    return tuple(f.name for f in dataclasses.fields(LossConfig) if f.name in read)


def build_criterion(
    loss: LossConfig, num_classes: int, feat_dim: int, cross_modal: bool = False, neck: Optional[str] = None,
    id_anchors_only: Optional[bool] = None
) -> Criterion:
    """Build the criterion of the trial's ``loss`` config (``loss.type`` one of ``RECIPES``) for ``neck`` (None =
    the recipe's reference neck); each part's builder gets the fields it declares (``TERMS[kind].reads``).

    Weight overrides for a component the recipe lacks (e.g. ``center_weight`` with ``triplet``) do nothing here;
    the effective configuration refuses a study that sets them for such a trial.
    """
    parts = resolve_parts(loss.type, cross_modal, loss, id_anchors_only)
    terms = [TERMS[p.kind].build(p, num_classes, feat_dim, **{f: getattr(loss, f) for f in TERMS[p.kind].reads})
             for p in parts]
    return Criterion(loss.type, parts, terms, neck_of(neck or RECIPE_NECK[loss.type]).metric_feature)
