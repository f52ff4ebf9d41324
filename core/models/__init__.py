"""Re-ID models: ResNet backbone, named necks (no / bnneck / csbn) and the assembled model. No Ray/MLflow."""
from .backbone import ARCHS, ResNetBackbone, load_pretrained
from .heads import NECKS, ModalityBatchNorm, ReIDHead, build_head
from .model import TEST_FEATURES, ModelOutput, ReIDModel

__all__ = [
    "ARCHS",
    "ModalityBatchNorm",
    "ModelOutput",
    "NECKS",
    "ReIDHead",
    "ReIDModel",
    "ResNetBackbone",
    "TEST_FEATURES",
    "build_head",
    "load_pretrained",
]
