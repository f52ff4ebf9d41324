"""Re-ID model: ResNet backbone -> global average pooling -> neck -> shared ID classifier."""
from __future__ import annotations

from typing import Optional, TypedDict, Union

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import ResNetBackbone, load_pretrained
from .heads import build_head

TEST_FEATURES = ("after", "before")


class ModelOutput(TypedDict):
    """Training output (docs/ARCHITECTURE.md): pre-neck, post-neck (same tensor for neck ``no``), logits."""

    global_feat: torch.Tensor
    neck_feat: torch.Tensor
    logits: torch.Tensor


class ReIDModel(nn.Module):
    """``forward(images, modality=None, bn_groups=None)``.

    Training: :class:`ModelOutput`. Eval: the test feature, post-BN when the neck has a BN and
    ``test_feature == "after"``, else the pooled (pre-BN) feature. ``modality`` (``[N]``, 0 RGB / 1 IR) routes
    rows to their BN with a modality-specific neck; ``None`` means all RGB.

    ``bn_groups=G`` splits the batch into G equal contiguous chunks that go through backbone and neck
    separately, so every BatchNorm sees the statistics of one chunk only. The expAT RGB-IR code runs six calls
    (anchor/positive/negative x RGB/IR) per iteration (docs/REPRODUCTION.md §4.3); with a role-major batch,
    ``bn_groups=6`` reproduces that, and ``None`` is one forward over the whole batch.
    """

    def __init__(
        self,
        arch: str = "resnet50",
        num_classes: int = 751,
        neck: str = "bnneck",
        last_stride: int = 1,
        stem_relu: bool = True,
        pretrained_path: Optional[str] = None,
        num_modalities: int = 1,
        test_feature: str = "after",
        bn_bias_learnable: bool = False,
        modality_specific: Optional[bool] = None,
    ):
        super().__init__()
        if test_feature not in TEST_FEATURES:
            raise ValueError(f"unknown test_feature {test_feature!r}; valid: {', '.join(TEST_FEATURES)}")
        if num_modalities not in (1, 2):
            raise ValueError(f"num_modalities must be 1 or 2, got {num_modalities}")
        self.backbone = ResNetBackbone(arch, last_stride, stem_relu)
        if pretrained_path:
            load_pretrained(self.backbone, pretrained_path)
        self.feat_dim = self.backbone.feat_dim
        self.num_classes = num_classes
        self.test_feature = test_feature
        self.head = build_head(neck, self.feat_dim, num_classes, num_modalities, bn_bias_learnable, modality_specific)

    @property
    def neck(self) -> str:
        return self.head.name

    def forward(
        self, images: torch.Tensor, modality: Optional[torch.Tensor] = None, bn_groups: Optional[int] = None
    ) -> Union[ModelOutput, torch.Tensor]:
        if bn_groups is None or bn_groups == 1:
            out = self._embed(images, modality)
        else:
            out = self._embed_in_groups(images, modality, bn_groups)
        if self.training:
            return out
        return self._test_feature(out)

    def _test_feature(self, out: ModelOutput) -> torch.Tensor:
        use_neck = self.head.neck is not None and self.test_feature == "after"
        return out["neck_feat"] if use_neck else out["global_feat"]

    def test_and_pooled(self, images: torch.Tensor, modality: Optional[torch.Tensor] = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """The test feature and the pre-neck pooled feature of one forward pass (the diagnostics compare their
        norms; call in eval mode, as for the test feature alone)."""
        out = self._embed(images, modality)
        return self._test_feature(out), out["global_feat"]

    def _embed(self, images: torch.Tensor, modality: Optional[torch.Tensor]) -> ModelOutput:
        global_feat = F.adaptive_avg_pool2d(self.backbone(images), 1).flatten(1)
        neck_feat, logits = self.head(global_feat, modality)
        return ModelOutput(global_feat=global_feat, neck_feat=neck_feat, logits=logits)

    def _embed_in_groups(self, images: torch.Tensor, modality: Optional[torch.Tensor], groups: int) -> ModelOutput:
        n = images.shape[0]
        if groups < 1 or n % groups:
            raise ValueError(f"bn_groups={groups} must divide the batch size {n}")
        size = n // groups
        chunks_m = modality.split(size) if modality is not None else [None] * groups
        outs = [self._embed(x, m) for x, m in zip(images.split(size), chunks_m)]
        return ModelOutput(**{key: torch.cat([o[key] for o in outs]) for key in ModelOutput.__annotations__})
