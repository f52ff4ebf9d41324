"""OpenCV/numpy re-implementation of the RSB / authors' transforms (docs/REPRODUCTION.md §8.1).

Train: RectScale(h,w) bilinear -> RandomHorizontalFlip(p) -> Pad(N, zeros) -> RandomCrop(h,w) -> ToTensor ->
Normalize(ImageNet) -> RandomErasing(p, sl, sh, r1) filled with 0.485/0.456/0.406 written into the *normalised*
tensor (the authors' quirk). Test: RectScale -> ToTensor -> Normalize.

The pipeline is split into `prepare` (the deterministic resize, cacheable as uint8) and `augment` (random part),
so the dataset can keep resized images in memory and never decode a JPEG twice. Randomness comes only from the
numpy Generator passed in, which makes every augmentation reproducible from a seed.
The resize is PIL's own bilinear filter, as both of the authors' codes call it: it antialiases when it shrinks an
image (its support widens with the scale), which cv2 INTER_LINEAR does not (2-9 grey levels apart on average).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """PIL's bilinear resize (torchvision's Resize on a PIL image) of an HxWx3 uint8 image to (height, width)."""
    if image.shape[:2] == (height, width):
        return image
    return np.array(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def random_flip(image: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """Horizontal flip with probability p."""
    return image[:, ::-1] if rng.random() < p else image


def pad_random_crop(image: np.ndarray, padding: int, rng: np.random.Generator) -> np.ndarray:
    """Zero-pad every side by `padding`, then crop a random window of the original size (torchvision Pad+RandomCrop)."""
    if padding <= 0:
        return image
    h, w = image.shape[:2]
    padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
    top, left = rng.integers(0, 2 * padding + 1, size=2)
    return padded[top:top + h, left:left + w]


def to_normalized_tensor(image: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 HxWx3 -> float32 3xHxW, scaled to [0,1] then normalised with mean/std."""
    array = (image.astype(np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def random_erasing(tensor: torch.Tensor, rng: np.random.Generator, p: float = 0.5, sl: float = 0.02,
                   sh: float = 0.4, r1: float = 0.3, fill=IMAGENET_MEAN) -> torch.Tensor:
    """RSB RandomErasing (Zhong et al.): up to 100 attempts to erase a rectangle of area in [sl,sh] and aspect in
    [r1, 1/r1]; the rectangle is filled with `fill` per channel, in place."""
    if rng.random() >= p:
        return tensor
    _, height, width = tensor.shape
    for _ in range(100):
        area = rng.uniform(sl, sh) * height * width
        aspect = rng.uniform(r1, 1.0 / r1)
        h = int(round(math.sqrt(area * aspect)))
        w = int(round(math.sqrt(area / aspect)))
        if w < width and h < height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            tensor[:, top:top + h, left:left + w] = torch.tensor(fill, dtype=tensor.dtype).view(-1, 1, 1)
            return tensor
    return tensor


@dataclass(frozen=True)
class ReidTransform:
    """Resize (`prepare`, deterministic) followed by the random augmentation (`augment`)."""

    height: int
    width: int
    train: bool
    flip_prob: float = 0.5
    padding: int = 10
    erasing_prob: float = 0.5

    def prepare(self, image: np.ndarray) -> np.ndarray:
        return resize(image, self.height, self.width)

    def augment(self, image: np.ndarray, rng: np.random.Generator | None) -> torch.Tensor:
        if not self.train:
            return to_normalized_tensor(image)
        if rng is None:
            raise ValueError("a training transform needs a numpy Generator (rng) for its random parts")
        image = random_flip(image, self.flip_prob, rng)
        image = pad_random_crop(image, self.padding, rng)
        tensor = to_normalized_tensor(image)
        return random_erasing(tensor, rng, p=self.erasing_prob) if self.erasing_prob > 0 else tensor

    def __call__(self, image: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
        return self.augment(self.prepare(image), rng)


def build_transforms(height: int, width: int, train: bool, flip_prob: float = 0.5, padding: int = 10,
                     erasing_prob: float = 0.5) -> ReidTransform:
    """Train or test transform for images of (height, width); see the module docstring for the steps."""
    return ReidTransform(int(height), int(width), bool(train), float(flip_prob), int(padding), float(erasing_prob))
