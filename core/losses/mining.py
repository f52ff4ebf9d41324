"""Distance and batch-hard mining helpers shared by every metric loss.

One implementation of the pairwise distance and of the hardest-positive / hardest-negative search keeps the
triplet loss and both batch-hard expAT variants numerically consistent with each other and with the reference
code (RSB ``euclidean_dist`` / expAT ``square_euclidean_dist`` + ``hard_example_mining``).
"""
from __future__ import annotations

import torch


def l2_normalize(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Unit-length rows, ``x / clamp(||x||, 1e-12)`` as in ``rgb_exp/codes/layers/AT_loss.py``."""
    return x / x.norm(2, dim, keepdim=True).clamp(min=1e-12)


def squared_euclidean(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pairwise ``||x_i - y_j||^2`` as ``||x||^2 + ||y||^2 - 2 x.y``, clamped at 1e-12.

    The expanded form matches the reference rounding; the clamp keeps ``sqrt`` differentiable on the diagonal
    (an anchor compared with itself gets distance ~1e-6, not 0). Computed in at least float32 with autocast
    off: the expanded form cancels catastrophically (and can overflow) in half precision.
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    with torch.autocast(device_type=x.device.type, enabled=False):
        x, y = x.to(dtype), y.to(dtype)
        xx = x.pow(2).sum(1, keepdim=True)
        yy = y.pow(2).sum(1, keepdim=True).t()
        return torch.addmm(xx + yy, x, y.t(), alpha=-2).clamp(min=1e-12)


def label_masks(labels_a: torch.Tensor, labels_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(same, different)`` boolean ``[len(a), len(b)]`` masks of identity agreement."""
    same = labels_a[:, None].eq(labels_b[None, :])
    return same, ~same


def batch_hard(
    dist: torch.Tensor, pos_mask: torch.Tensor, neg_mask: torch.Tensor, with_index: bool = False
) -> tuple[torch.Tensor, ...]:
    """Per row: largest distance over ``pos_mask`` and smallest over ``neg_mask``.

    Masks instead of the reference ``dist[is_pos].view(N, -1)`` so identities may have different numbers of
    images; on P x K batches both give the same values. Returns ``(d_ap, d_an, valid)`` where ``valid`` marks rows
    that have at least one positive and one negative (callers drop the others); with ``with_index`` also the
    column indices of the mined positive and negative.
    """
    ap = dist.masked_fill(~pos_mask, float("-inf")).max(dim=1)
    an = dist.masked_fill(~neg_mask, float("inf")).min(dim=1)
    valid = pos_mask.any(dim=1) & neg_mask.any(dim=1)
    if with_index:
        return ap.values, an.values, valid, ap.indices, an.indices
    return ap.values, an.values, valid


def mean_or_zero(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Mean of ``values``; a graph-connected zero when empty (a batch with nothing to mine adds no loss)."""
    if values.numel() == 0:
        return like.sum() * 0.0
    return values.mean()
