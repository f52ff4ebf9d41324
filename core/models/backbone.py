"""ResNet trunk (torchvision) with a configurable last stride, and loading of local pretrained weights."""
from __future__ import annotations

from pathlib import Path
from typing import Union

import torch
from torch import nn
from torchvision import models
from torchvision.models.resnet import Bottleneck

# arch -> (torchvision constructor, output channels)
ARCHS = {
    "resnet18": (models.resnet18, 512),
    "resnet50": (models.resnet50, 2048),
}


class ResNetBackbone(nn.Module):
    """torchvision ResNet without ``avgpool``/``fc``; returns the layer4 feature map.

    Submodules keep torchvision's names, so an ImageNet state dict (minus ``fc.*``) loads unchanged.
    ``last_stride=1`` (the re-ID default) removes the stride of layer4, doubling the map size (24x8 for 384x128).
    """

    def __init__(self, arch: str = "resnet50", last_stride: int = 1):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(ARCHS)}")
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
        factory, self.feat_dim = ARCHS[arch]
        net = factory(weights=None)
        self.arch = arch
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        _set_first_block_stride(self.layer4, last_stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _set_first_block_stride(layer: nn.Sequential, stride: int) -> None:
    """Set the stride of a stage: it sits on conv2 in torchvision's Bottleneck, conv1 in BasicBlock, and on the
    shortcut's 1x1 conv in both."""
    block = layer[0]
    conv = block.conv2 if isinstance(block, Bottleneck) else block.conv1
    conv.stride = (stride, stride)
    if block.downsample is not None:
        block.downsample[0].stride = (stride, stride)


def load_pretrained(backbone: ResNetBackbone, path: Union[str, Path]) -> None:
    """Load a local ImageNet state dict (``fc.*`` ignored, a ``module.`` prefix stripped).

    Raises ``FileNotFoundError`` if ``path`` is missing and ``ValueError`` (naming the path) if the keys or
    shapes do not match the backbone. ``num_batches_tracked`` buffers may be absent (old torchvision files).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"pretrained weights {path} are not a state dict (got {type(state).__name__})")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    expected = set(backbone.state_dict())
    missing = sorted(k for k in expected - set(state) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"pretrained weights {path} do not match {backbone.arch}: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    try:
        backbone.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatch
        raise ValueError(f"pretrained weights {path} do not match {backbone.arch}: {err}") from err
