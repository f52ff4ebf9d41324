"""Exponential angular triplet loss (expAT, Ye et al., "Bi-directional Exponential Angular Triplet Loss for
RGB-Infrared Person Re-Identification").

Per triplet ``i``: ``h_i = max(0, [cos(a_i, n_i)]_+ - cos(a_i, p_i) + margin)``. Two reductions
(docs/REPRODUCTION.md §2.2):

- ``"exp_of_mean"`` (released code, default): ``exp(mean_i h_i``), i.e. ``exp(MarginRankingLoss(...))`` with a
  1-D target (the code's ``[N,1]`` target fails on current torch and had the same mean on old torch).
- ``"mean_of_exp"`` (paper Eq. 10): ``mean_i exp(h_i)``; by Jensen it is >= the code form, equal when all
  ``h_i`` are equal.

The paper has no hinge; we keep ``max(0, .)`` in both forms so they differ only in the reduction. With
``relu_neg=True`` and ``margin=1`` the exponent is always >= 0, so the hinge never fires and the paper form is
reproduced exactly; it only matters for ablations with a smaller margin or ``relu_neg=False``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .hinge_stats import HingeStats
from .mining import batch_hard, l2_normalize, label_masks, squared_euclidean

REDUCTIONS = ("exp_of_mean", "mean_of_exp")

# Values of ``batch["roles"]`` from the authors' random-triplet sampler (docs/ARCHITECTURE.md).
ANCHOR_RGB, POSITIVE_RGB, NEGATIVE_RGB, ANCHOR_IR, POSITIVE_IR, NEGATIVE_IR = range(6)
RGB, IR = 0, 1


class _ExpATBase(nn.Module):
    """Holds the options shared by every expAT variant and the one place the per-triplet terms are reduced."""

    def __init__(self, margin: float = 1.0, reduction: str = "exp_of_mean", relu_neg: bool = True):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"unknown expAT reduction {reduction!r}; valid: {', '.join(REDUCTIONS)}")
        self.margin = margin
        self.reduction = reduction
        self.relu_neg = relu_neg
        self.hinge_stats: Optional[HingeStats] = None  # set by the trainer when diagnostics are on

    def reduce(self, cos_p: torch.Tensor, cos_n: torch.Tensor) -> torch.Tensor:
        """expAT value of a set of (cos to positive, cos to negative) pairs; 0 for an empty set (no term)."""
        cos_n_raw = cos_n
        if self.relu_neg:
            cos_n = F.relu(cos_n)
        h = F.relu(cos_n - cos_p + self.margin)
        if self.hinge_stats is not None:
            self.hinge_stats.add(h.detach() > 0, cos_p.detach(), cos_n_raw.detach())
        if h.numel() == 0:
            return h.sum() * 0.0
        if self.reduction == "exp_of_mean":
            return torch.exp(h.mean())
        return torch.exp(h).mean()

    def extra_repr(self) -> str:
        return f"margin={self.margin}, reduction={self.reduction!r}, relu_neg={self.relu_neg}"


class ExpATLoss(_ExpATBase):
    """expAT on explicit triplets (``rgbir_exp/codes/criterions.py``): row ``i`` of the three inputs is one
    triplet; cosines are ``F.cosine_similarity`` of the raw (un-normalised) features. No mining."""

    def forward(self, anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        if not anchor.shape == positive.shape == negative.shape:
            raise ValueError(
                f"anchor/positive/negative shapes differ: {tuple(anchor.shape)}, "
                f"{tuple(positive.shape)}, {tuple(negative.shape)}"
            )
        return self.reduce(F.cosine_similarity(anchor, positive), F.cosine_similarity(anchor, negative))


class BatchHardExpATLoss(_ExpATBase):
    """Batch-hard expAT of the single-modality code (``rgb_exp/codes/layers/AT_loss.py``).

    Rows are L2-normalised, ``cos = (2 - d2) / 2`` with ``d2`` the clamped squared distance; the hardest positive
    is the smallest cosine to the same identity (the anchor itself included, cos ~1) and the hardest negative
    the largest cosine to another identity. Mining is done on ``d2`` exactly like the reference (``cos`` is a
    decreasing function of it), with masks so identities need not have equal counts. Anchors without a positive
    or a negative among the candidates are skipped.
    """

    def forward(self, feat: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.cross(feat, labels, feat, labels)

    def cross(
        self,
        anchor_feat: torch.Tensor,
        anchor_labels: torch.Tensor,
        cand_feat: torch.Tensor,
        cand_labels: torch.Tensor,
    ) -> torch.Tensor:
        """Anchors mine their hardest positive / negative among a separate candidate set (cross-modal use)."""
        d2 = squared_euclidean(l2_normalize(anchor_feat), l2_normalize(cand_feat))
        d_ap, d_an, valid = batch_hard(d2, *label_masks(anchor_labels, cand_labels))
        return self.reduce((2 - d_ap[valid]) / 2, (2 - d_an[valid]) / 2)


class BiDirectionalExpATLoss(_ExpATBase):
    """``weight_rgb2ir * L(RGB anchors -> IR) + weight_ir2rgb * L(IR anchors -> RGB)``.

    The direction weights are the paper's alpha / beta of Eq. 10. Beware the naming clash (docs/REPRODUCTION.md §2.4):
    in the released ``settings.py`` ``alpha`` scales the whole expAT sum and ``beta`` the ID loss; those are the
    recipe's ``metric_weight`` / ``id_weight``, not these. Both default to 1 as in the code.

    Two sources of triplets:

    - :meth:`from_triplets`: the authors' role-major random-triplet batch (``roles`` 0..5); ``at_rgb =
      L(anchor_rgb, positive_ir, negative_ir)``, ``at_ir = L(anchor_ir, positive_rgb, negative_rgb)``.
    - :meth:`from_batch`: a P x K batch mixing modalities; each RGB anchor mines its hardest IR positive /
      negative (batch-hard, as :class:`BatchHardExpATLoss`) and vice versa (our cross-modal extension).
    """

    def __init__(
        self,
        margin: float = 1.0,
        reduction: str = "exp_of_mean",
        relu_neg: bool = True,
        weight_rgb2ir: float = 1.0,
        weight_ir2rgb: float = 1.0,
    ):
        super().__init__(margin, reduction, relu_neg)
        self.weight_rgb2ir = weight_rgb2ir
        self.weight_ir2rgb = weight_ir2rgb
        self.triplet = ExpATLoss(margin, reduction, relu_neg)
        self.batch_hard = BatchHardExpATLoss(margin, reduction, relu_neg)

    def directions_from_triplets(self, feat: torch.Tensor, roles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(at_rgb, at_ir)`` from explicit triplets; rows of each role keep their batch order."""
        by_role = [feat[roles == r] for r in range(6)]
        at_rgb = self.triplet(by_role[ANCHOR_RGB], by_role[POSITIVE_IR], by_role[NEGATIVE_IR])
        at_ir = self.triplet(by_role[ANCHOR_IR], by_role[POSITIVE_RGB], by_role[NEGATIVE_RGB])
        return at_rgb, at_ir

    def directions_from_batch(
        self, feat: torch.Tensor, labels: torch.Tensor, modality: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rgb2ir, ir2rgb)`` by cross-modal batch-hard mining."""
        rgb, ir = modality == RGB, modality == IR
        rgb2ir = self.batch_hard.cross(feat[rgb], labels[rgb], feat[ir], labels[ir])
        ir2rgb = self.batch_hard.cross(feat[ir], labels[ir], feat[rgb], labels[rgb])
        return rgb2ir, ir2rgb

    def from_triplets(self, feat: torch.Tensor, roles: torch.Tensor) -> torch.Tensor:
        return self._combine(*self.directions_from_triplets(feat, roles))

    def from_batch(self, feat: torch.Tensor, labels: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        return self._combine(*self.directions_from_batch(feat, labels, modality))

    def forward(
        self,
        feat: torch.Tensor,
        labels: Optional[torch.Tensor] = None,
        modality: Optional[torch.Tensor] = None,
        roles: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Explicit triplets when ``roles`` is given, otherwise cross-modal batch-hard on ``labels``/``modality``."""
        if roles is not None:
            return self.from_triplets(feat, roles)
        if labels is None or modality is None:
            raise ValueError("BiDirectionalExpATLoss needs either roles or (labels, modality)")
        return self.from_batch(feat, labels, modality)

    def _combine(self, rgb_dir: torch.Tensor, ir_dir: torch.Tensor) -> torch.Tensor:
        return self.weight_rgb2ir * rgb_dir + self.weight_ir2rgb * ir_dir

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weight_rgb2ir={self.weight_rgb2ir}, weight_ir2rgb={self.weight_ir2rgb}"
