"""Cross entropy with label smoothing (Szegedy et al. 2016), as used by RSB and the expAT RGB-IR code."""
from __future__ import annotations

import torch
from torch import nn


class CrossEntropyLabelSmooth(nn.Module):
    """``mean_batch sum_k -q_k log p_k`` with ``q = (1 - eps) * onehot + eps / K``.

    Device-agnostic rewrite of the reference (which hard-codes ``.cuda()``); ``epsilon=0`` is plain cross entropy.
    """

    def __init__(self, num_classes: int, epsilon: float = 0.1):
        super().__init__()
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.num_classes = num_classes
        self.epsilon = epsilon

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_probs = torch.log_softmax(logits, dim=1)
        onehot = torch.zeros_like(log_probs).scatter_(1, targets.unsqueeze(1), 1.0)
        q = (1.0 - self.epsilon) * onehot + self.epsilon / self.num_classes
        return (-q * log_probs).mean(0).sum()
