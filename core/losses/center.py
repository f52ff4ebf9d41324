"""Center loss (Wen et al. 2016) as in reid-strong-baseline."""
from __future__ import annotations

import torch
from torch import nn


class CenterLoss(nn.Module):
    """``mean_i clamp(||x_i - c_{y_i}||^2, 1e-12, 1e12)``.

    ``centers`` (``randn(num_classes, feat_dim)``) is a parameter that the trainer optimises with its own SGD
    (RSB: lr 0.5, gradients rescaled by ``1 / center_weight`` first), so it must not be handed to the model
    optimiser. The distance is computed directly as ``(x - c)^2`` rather than the reference's expanded form; the
    values agree to float rounding.
    """

    def __init__(self, num_classes: int, feat_dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.feat_dim = feat_dim
        self.centers = nn.Parameter(torch.randn(num_classes, feat_dim))

    def forward(self, feat: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        dist = (feat - self.centers[labels]).pow(2).sum(dim=1)
        return dist.clamp(min=1e-12, max=1e12).mean()
