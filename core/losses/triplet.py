"""Batch-hard triplet loss of reid-strong-baseline (Hermans et al. 2017), Euclidean on raw features."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .hinge_stats import HingeStats
from .mining import batch_hard, l2_normalize, label_masks, mean_or_zero, squared_euclidean


class TripletLoss(nn.Module):
    """``mean max(0, d_ap - d_an + margin)`` or, with ``soft_margin`` (or ``margin=None`` as in RSB),
    ``mean softplus(d_ap - d_an)``.

    ``d_ap`` is the largest distance to a same-identity sample (the anchor itself included, distance ~1e-6) and
    ``d_an`` the smallest distance to another identity. Distances are ``sqrt(clamp(d2, 1e-12))`` on the raw
    feature unless ``normalize_feature``. Anchors without a negative are skipped.
    """

    def __init__(self, margin: Optional[float] = 0.3, soft_margin: bool = False, normalize_feature: bool = False):
        super().__init__()
        self.soft_margin = soft_margin or margin is None
        self.margin = margin
        self.normalize_feature = normalize_feature
        self.hinge_stats: Optional[HingeStats] = None  # set by the trainer when diagnostics are on

    def _mine(self, feat: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.normalize_feature:
            feat = l2_normalize(feat)
        dist = squared_euclidean(feat, feat).sqrt()
        return batch_hard(dist, *label_masks(labels, labels), with_index=True)

    def mine(self, feat: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hardest ``(d_ap, d_an)`` for every anchor that has both a positive and a negative."""
        d_ap, d_an, valid, _, _ = self._mine(feat, labels)
        return d_ap[valid], d_an[valid]

    def forward(self, feat: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        d_ap, d_an, valid, i_ap, i_an = self._mine(feat, labels)
        # Every row first (an anchor without a positive or negative gets -inf, so 0), then the valid ones: the
        # diagnostics weigh the rows by ``valid`` instead of selecting them, which would wait for the device.
        if self.soft_margin:
            per_anchor = F.softplus(d_ap - d_an)
        else:
            per_anchor = F.relu(d_ap - d_an + self.margin)
        if self.hinge_stats is not None:  # the mined pairs' angles, whatever distance mined them
            f = feat.detach()
            self.hinge_stats.add(per_anchor.detach() > 0, F.cosine_similarity(f, f[i_ap]),
                                 F.cosine_similarity(f, f[i_an]), weight=valid)
        return mean_or_zero(per_anchor[valid], feat)
