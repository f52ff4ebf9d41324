"""Cross entropy with label smoothing (Szegedy et al. 2016), as used by RSB and the expAT RGB-IR code."""
from __future__ import annotations

from torch import nn


class CrossEntropyLabelSmooth(nn.CrossEntropyLoss):
    """``mean_batch sum_k -q_k log p_k`` with ``q = (1 - eps) * onehot + eps / K``: torch's cross entropy with
    ``label_smoothing=eps``, which spreads ``eps`` over all ``K`` classes exactly as the reference does.

    The reference (reid-strong-baseline's ``CrossEntropyLabelSmooth``) hard-codes ``.cuda()``; ``epsilon=0`` is
    plain cross entropy.
    """

    def __init__(self, num_classes: int, epsilon: float = 0.1):
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        super().__init__(label_smoothing=epsilon)
        self.num_classes = num_classes
        self.epsilon = epsilon
