"""ResNet trunk with a configurable last stride, and loading of local pretrained (torchvision) weights.

The network is defined here rather than taken from torchvision: importing torchvision also imports its detection
ops and ``torch._dynamo`` (about 1.7 s per process on a 2-core CPU), which every study trial's fresh worker would
pay. Module names, shapes and initialisation follow torchvision's ResNet, so its ImageNet state dicts load
unchanged (``tests/test_models.py`` checks the two networks give the same output on the same weights).
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import torch
from torch import nn


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34); the stride sits on conv1."""
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1, self.bn1 = _conv3x3(cin, width, stride), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = _conv3x3(width, width), nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    """1x1 - 3x3 - 1x1 convs (ResNet-50/101, torchvision's "v1.5"): the stride sits on the 3x3 conv2."""
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1, self.bn1 = _conv1x1(cin, width), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = _conv3x3(width, width, stride), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = _conv1x1(width, width * 4), nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


# arch -> (block, blocks per stage)
ARCHS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


class ResNetBackbone(nn.Module):
    """ResNet without ``avgpool``/``fc``; returns the layer4 feature map.

    Submodules carry torchvision's names, so an ImageNet state dict (minus ``fc.*``) loads unchanged.
    ``last_stride=1`` (the re-ID default) removes the stride of layer4, doubling the map size (24x8 for 384x128).
    ``stem_relu=False`` skips the ReLU after the stem's BN (conv1 -> bn1 -> maxpool), as the expAT authors' RGB code
    (a reid-strong-baseline fork) does; the weights are the same either way.
    """

    def __init__(self, arch: str = "resnet50", last_stride: int = 1, stem_relu: bool = True):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(ARCHS)}")
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
        block, depths = ARCHS[arch]
        self.arch = arch
        self.feat_dim = 512 * block.expansion
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True) if stem_relu else nn.Identity()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = 64
        stages = []
        for width, depth, stride in zip((64, 128, 256, 512), depths, (1, 2, 2, last_stride)):
            stage, cin = _make_stage(block, cin, width, depth, stride)
            stages.append(stage)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        _init_like_torchvision(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _make_stage(block, cin: int, width: int, depth: int, stride: int) -> tuple[nn.Sequential, int]:
    """A stage of ``depth`` blocks; the first changes the stride/width, with a 1x1 conv + BN shortcut if needed."""
    cout = width * block.expansion
    downsample = None
    if stride != 1 or cin != cout:
        downsample = nn.Sequential(_conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))
    blocks = [block(cin, width, stride, downsample)] + [block(cout, width) for _ in range(depth - 1)]
    return nn.Sequential(*blocks), cout


def _init_like_torchvision(net: nn.Module) -> None:
    """Kaiming-normal (fan_out) convs, BN weight 1 / bias 0: torchvision's ResNet initialisation."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


def _expected_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of ``arch``'s backbone state dict (built on the meta device: no memory, no initialisation)."""
    if arch not in _SHAPES:
        with torch.device("meta"):
            _SHAPES[arch] = {k: tuple(v.shape) for k, v in ResNetBackbone(arch).state_dict().items()}
    return _SHAPES[arch]


_SHAPES: dict[str, dict[str, tuple[int, ...]]] = {}


class PretrainedError(ValueError):
    """A pretrained weights file that cannot be loaded; ``problem`` is the phrase after the file's name."""

    def __init__(self, path: Union[str, Path], problem: str):
        super().__init__(f"pretrained weights file {path} {problem}")
        self.problem = problem


def read_pretrained(path: Union[str, Path], arch: str) -> dict[str, torch.Tensor]:
    """The backbone part of the local ImageNet state dict ``path`` (``fc.*`` dropped, a ``module.`` prefix stripped,
    a ``{"state_dict": ...}`` wrapper opened), checked against ``arch``'s keys and shapes.

    Raises ``FileNotFoundError`` if ``path`` is missing and :class:`PretrainedError` (a ``ValueError`` naming the
    file and the problem) for a file torch cannot read (random bytes, a truncated download, text), one that holds no
    state dict, or another network's keys or shapes. ``num_batches_tracked`` buffers may be absent (old torchvision
    files).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as exc:  # truncated archive, random bytes, a text file, a pickle of arbitrary objects
        first = " ".join(str(exc).split()).split(". ")[0][:120]
        raise PretrainedError(path, f"is not a PyTorch checkpoint torch.load can read ({type(exc).__name__}: "
                                    f"{first})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise PretrainedError(path, f"holds a {type(state).__name__}, not a state dict")
    other = [k for k, v in state.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if other:
        raise PretrainedError(path, f"is not a state dict: {len(other)} of its entries are not named tensors "
                                    f"(e.g. {[str(k) for k in other[:3]]})")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    expected = _expected_shapes(arch)
    missing = sorted(k for k in expected.keys() - state.keys() if not k.endswith("num_batches_tracked"))
    unexpected = sorted(state.keys() - expected.keys())
    if missing or unexpected:
        parts = ([f"{len(missing)} {arch} key(s) missing (e.g. {missing[:3]})"] if missing else []) + \
            ([f"{len(unexpected)} unexpected key(s) (e.g. {unexpected[:3]})"] if unexpected else [])
        raise PretrainedError(path, f"does not match {arch}: {', '.join(parts)}")
    wrong = [f"{k} {tuple(v.shape)} instead of {expected[k]}" for k, v in state.items()
             if tuple(v.shape) != expected[k]]
    if wrong:
        raise PretrainedError(path, f"does not match {arch}: {len(wrong)} shape(s) differ "
                                    f"(e.g. {', '.join(wrong[:2])})")
    return state


def load_pretrained(backbone: ResNetBackbone, path: Union[str, Path]) -> None:
    """Load a local ImageNet state dict into ``backbone`` (checked by :func:`read_pretrained`, whose errors it
    raises)."""
    state = read_pretrained(path, backbone.arch)
    try:
        backbone.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatch
        raise ValueError(f"pretrained weights {path} do not match {backbone.arch}: {err}") from err
