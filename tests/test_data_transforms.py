"""Transforms: shapes, normalisation, flip, pad+crop, random erasing, image reading."""

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from core.data import IMAGENET_MEAN, IMAGENET_STD, build_transforms, read_image
from core.data.transforms import pad_random_crop, random_erasing, resize, to_normalized_tensor


def _image(h=20, w=10):
    return np.random.default_rng(0).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_test_transform_resizes_and_normalises():
    image = _image(40, 20)
    out = build_transforms(32, 16, train=False)(image)
    assert out.shape == (3, 32, 16) and out.dtype == torch.float32
    resized = np.asarray(Image.fromarray(image).resize((16, 32), Image.Resampling.BILINEAR))
    expected = (resized / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert np.allclose(out.numpy(), expected.transpose(2, 0, 1), atol=1e-5)


@pytest.mark.parametrize("size", [(384, 128), (256, 128), (128, 64), (288, 144),  # shrinking: PIL antialiases
                                  (960, 480), (500, 250)])  # enlarging
def test_resize_equals_pils_bilinear(size):
    # Both of the authors' codes resize a PIL image with torchvision's bilinear Resize, i.e. Image.resize(BILINEAR).
    # A noisy 480x240 image is where a plain 2x2 bilinear (cv2 INTER_LINEAR) and PIL's antialiased filter differ most.
    image = np.random.default_rng(3).integers(0, 256, size=(480, 240, 3), dtype=np.uint8)
    height, width = size
    expected = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR)).astype(int)
    out = resize(image, height, width)
    assert out.shape == (height, width, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - expected).max() <= 1


def test_train_transform_shape_and_seeded():
    transform = build_transforms(32, 16, train=True)
    a = transform(_image(), np.random.default_rng(1))
    b = transform(_image(), np.random.default_rng(1))
    assert a.shape == (3, 32, 16) and torch.equal(a, b)
    with pytest.raises(ValueError, match="rng"):
        transform(_image())


def test_flip_is_a_horizontal_mirror():
    image = _image(32, 16)
    plain = build_transforms(32, 16, train=False)(image)
    flipped = build_transforms(32, 16, train=True, flip_prob=1.0, padding=0, erasing_prob=0)(
        image, np.random.default_rng(0))
    kept = build_transforms(32, 16, train=True, flip_prob=0.0, padding=0, erasing_prob=0)(
        image, np.random.default_rng(0))
    assert torch.equal(flipped, plain.flip(-1)) and torch.equal(kept, plain)


def test_pad_random_crop_is_a_shifted_window():
    image = _image(12, 6)
    padded = np.pad(image, ((3, 3), (3, 3), (0, 0)))
    offsets = set()
    for seed in range(30):
        out = pad_random_crop(image, 3, np.random.default_rng(seed))
        assert out.shape == image.shape
        match = [(t, l) for t in range(7) for l in range(7) if np.array_equal(padded[t:t + 12, l:l + 6], out)]
        assert match
        offsets.add(match[0])
    assert len(offsets) > 5  # the window really moves


def test_random_erasing_fills_a_rectangle_with_the_mean():
    base = to_normalized_tensor(np.full((64, 32, 3), 255, np.uint8))
    for seed in range(20):
        out = random_erasing(base.clone(), np.random.default_rng(seed), p=1.0)
        erased = ~torch.isclose(out, base).all(dim=0)
        ys, xs = torch.nonzero(erased, as_tuple=True)
        assert len(ys) > 0
        h, w = int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)
        assert int(erased.sum()) == h * w  # one solid rectangle
        assert 0.02 * 64 * 32 * 0.5 <= h * w <= 0.4 * 64 * 32 * 1.5
        for c, value in enumerate(IMAGENET_MEAN):  # raw mean values written into the normalised tensor
            assert torch.allclose(out[c][erased], torch.tensor(value))
    assert torch.equal(random_erasing(base.clone(), np.random.default_rng(0), p=0.0), base)


def test_read_image_rgb_order_and_grayscale(tmp_path):
    red = np.zeros((8, 4, 3), np.uint8)
    red[..., 2] = 255  # BGR on disk
    cv2.imwrite(str(tmp_path / "red.png"), red)
    rgb = read_image(str(tmp_path / "red.png"))
    assert rgb.shape == (8, 4, 3) and (rgb[..., 0] == 255).all() and (rgb[..., 1:] == 0).all()
    gray = np.random.default_rng(0).integers(0, 256, size=(8, 4), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "gray.jpg"), gray)
    out = read_image(str(tmp_path / "gray.jpg"))
    assert out.shape == (8, 4, 3) and (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
