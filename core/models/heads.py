"""Necks (what sits between global pooling and the ID classifier) selected by name.

- ``no``: identity; classifier ``Linear`` with bias, default init (RSB ``softmax_triplet``).
- ``bnneck``: one ``BatchNorm1d`` (weight 1, bias 0 and frozen, "no shift") shared by every modality;
  classifier without bias, ``N(0, 0.001)`` (RSB BNNeck).
- ``csbn``: the same BN, one per modality on a shared backbone (expAT ``feature_embedder_rgb/_ir``); with one
  modality it is a single BN. ``modality_specific=False`` keeps the csbn placement with one shared BN.

The layout of each name is defined once in :mod:`core.necks` (which also says which feature each loss consumes).

The classifier is always shared across modalities. Unknown names raise instead of silently building a BN
(docs/REPRODUCTION.md §9.15).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from core.necks import NECKS, neck_of


class ModalityBatchNorm(nn.Module):
    """One ``BatchNorm1d`` per branch; each row goes through the BN of its modality.

    In a batch mixing modalities every BN normalises (and tracks running statistics of) its own rows only.
    With a single branch all rows share it whatever their modality.
    """

    def __init__(self, feat_dim: int, num_branches: int = 1, bias_learnable: bool = False):
        super().__init__()
        self.bns = nn.ModuleList(nn.BatchNorm1d(feat_dim) for _ in range(num_branches))
        for bn in self.bns:
            nn.init.ones_(bn.weight)
            nn.init.zeros_(bn.bias)
            bn.bias.requires_grad_(bias_learnable)

    def forward(self, feat: torch.Tensor, modality: Optional[torch.Tensor] = None) -> torch.Tensor:
        if len(self.bns) == 1 or modality is None:
            return self.bns[0](feat)
        branches = modality.unique().tolist()
        if min(branches) < 0 or max(branches) >= len(self.bns):
            raise ValueError(f"modality values must be in [0, {len(self.bns)}), got {branches}")
        rows = [(modality == b).nonzero(as_tuple=True)[0] for b in branches]
        parts = [self.bns[b](feat.index_select(0, r)) for b, r in zip(branches, rows)]
        # undo the grouping by modality so row i of the output is row i of the input
        return torch.cat(parts).index_select(0, torch.cat(rows).argsort())


class ReIDHead(nn.Module):
    """Neck + shared ID classifier: ``forward(global_feat, modality) -> (neck_feat, logits)``."""

    def __init__(self, name: str, neck: Optional[ModalityBatchNorm], classifier: nn.Linear):
        super().__init__()
        self.name = name
        self.neck = neck
        self.classifier = classifier

    def forward(
        self, global_feat: torch.Tensor, modality: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        neck_feat = global_feat if self.neck is None else self.neck(global_feat, modality)
        return neck_feat, self.classifier(neck_feat)


def build_head(
    neck: str,
    feat_dim: int,
    num_classes: int,
    num_modalities: int = 1,
    bn_bias_learnable: bool = False,
    modality_specific: Optional[bool] = None,
) -> ReIDHead:
    """Head for neck ``neck`` (one of ``NECKS``). ``modality_specific`` only applies to a per-modality neck
    (``csbn``): ``False`` shares its BN; ``None`` keeps one BN per modality."""
    spec = neck_of(neck)
    if modality_specific is not None and not spec.per_modality:
        raise ValueError(f"modality_specific applies to the csbn neck only, not to {neck!r}")
    if not spec.batch_norm:
        return ReIDHead(neck, None, nn.Linear(feat_dim, num_classes))
    specific = spec.per_modality if modality_specific is None else modality_specific
    bn = ModalityBatchNorm(feat_dim, num_modalities if specific else 1, bn_bias_learnable)
    classifier = nn.Linear(feat_dim, num_classes, bias=False)
    nn.init.normal_(classifier.weight, std=0.001)
    return ReIDHead(neck, bn, classifier)
