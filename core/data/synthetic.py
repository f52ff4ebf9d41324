"""Procedurally generated person images written in the real SYSU-MM01 and Market-1501 layouts.

Purpose: end-to-end runs and tests without the real datasets, through the *real* parsers. Identity is carried by
body shape (garment split height, torso width, trousers vs skirt, a bag blob) and by stripe/check textures;
RGB images add per-identity garment colours, IR images are single-intensity (three equal channels) with a
per-identity "thermal" brightness drawn independently of the colour, so a cross-modal model must match on shape and
texture, not colour. Every image gets random shift/scale, brightness, camera cast, noise and sometimes an
occluding box so the task is not trivial. Everything is a pure function of the seed (identities are drawn from
`[seed, pid]`, images from `[seed, pid, cam, k]`), and files are real JPEGs written by cv2.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core.catalogue import SYSU_IR_CAMS
from core.locks import exclusive_lock

from .records import DatasetError

GENERATOR_VERSION = 1
_SALT_CAMERA, _SALT_JUNK, _SALT_DISTRACTOR = 1_000_003, 1_000_033, 1_000_037


@dataclass(frozen=True)
class Identity:
    """Appearance of one synthetic person; index 0 = upper garment, 1 = lower garment."""

    split: float             # upper/lower boundary, fraction of body height
    half_width: float        # torso half-width, fraction of image width
    skirt: bool              # lower garment: one wide block instead of two legs
    rgb: np.ndarray          # (2, 3) garment colours in [0, 1]
    thermal: np.ndarray      # (2,) IR intensities, independent of the colours
    freq: np.ndarray         # (2,) texture frequency, cycles per body height
    angle: np.ndarray        # (2,) texture orientation (radians)
    amp: np.ndarray          # (2,) texture contrast (0 = plain)
    checker: np.ndarray      # (2,) bool: checks instead of stripes
    blob: np.ndarray         # (3,) bag centre u, v and radius (body units)
    blob_rgb: np.ndarray     # (3,)
    blob_thermal: float


def make_identity(seed: int, pid: int) -> Identity:
    rng = np.random.default_rng([seed, pid])
    return Identity(
        split=rng.uniform(0.4, 0.62), half_width=rng.uniform(0.2, 0.36), skirt=bool(rng.random() < 0.3),
        rgb=rng.uniform(0.05, 0.95, size=(2, 3)), thermal=rng.uniform(0.3, 0.95, size=2),
        freq=rng.uniform(4, 12, size=2), angle=rng.choice([0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4], size=2),
        amp=rng.choice([0.0, 0.35, 0.5], size=2), checker=rng.random(2) < 0.3,
        blob=np.array([rng.choice([-1, 1]) * rng.uniform(0.15, 0.35), rng.uniform(0.3, 0.6), rng.uniform(0.06, 0.12)]),
        blob_rgb=rng.uniform(0, 1, size=3), blob_thermal=float(rng.uniform(0.1, 1.0)))


def _texture(u: np.ndarray, v: np.ndarray, ident: Identity, part: int) -> np.ndarray:
    theta, f = ident.angle[part], ident.freq[part]
    wave = np.sin(2 * np.pi * f * (u * np.cos(theta) + v * np.sin(theta)))
    if ident.checker[part]:
        wave = np.sign(wave * np.sin(2 * np.pi * f * (-u * np.sin(theta) + v * np.cos(theta))))
    return 1.0 - ident.amp[part] * (0.5 + 0.5 * wave)


def render(ident: Identity | None, rng: np.random.Generator, height: int, width: int, infrared: bool,
           camera_gain: np.ndarray) -> np.ndarray:
    """One RGB uint8 image (IR: three equal channels). `ident=None` renders background only (distractor)."""
    scale, dx, dy = rng.uniform(0.85, 1.05), rng.uniform(-0.08, 0.08), rng.uniform(-0.05, 0.05)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    v = (ys / height - 0.5 - dy) / scale + 0.5            # 0 = top of the body, 1 = feet
    u = (xs / width - 0.5 - dx) / scale * (width / height)  # horizontal, in body-height units
    channels = 1 if infrared else 3
    base = rng.uniform(0.05, 0.35) if infrared else rng.uniform(0.2, 0.8, size=3)
    grad = rng.uniform(-0.15, 0.15) * (ys / height - 0.5)
    image = np.broadcast_to(np.atleast_1d(base), (height, width, channels)) + grad[..., None]
    if ident is not None:
        image = image.copy()
        hw = ident.half_width * width / height
        head = (u / (0.6 * hw)) ** 2 + ((v - 0.1) / 0.08) ** 2 < 1
        torso = (v > 0.18) & (v < ident.split) & (np.abs(u) < hw)
        lower = (v >= ident.split) & (v < 0.97)
        lower &= (np.abs(u) < 0.85 * hw) if ident.skirt else (np.abs(np.abs(u) - 0.5 * hw) < 0.4 * hw)
        for part, mask in ((0, torso), (1, lower)):
            colour = ident.thermal[part:part + 1] if infrared else ident.rgb[part]
            image[mask] = colour * _texture(u[mask], v[mask], ident, part)[:, None]
        image[head] = 0.9 if infrared else (0.85, 0.65, 0.5)
        bag = (u - ident.blob[0] * width / height) ** 2 + (v - ident.blob[1]) ** 2 < ident.blob[2] ** 2
        image[bag] = ident.blob_thermal if infrared else ident.blob_rgb
    image = image * camera_gain[:channels] * rng.uniform(0.75, 1.25)
    if rng.random() < 0.3:  # occluding box, 10-25% of the image
        oh, ow = int(height * rng.uniform(0.25, 0.5)), int(width * rng.uniform(0.4, 0.5))
        top, left = rng.integers(0, height - oh + 1), rng.integers(0, width - ow + 1)
        image[top:top + oh, left:left + ow] = rng.uniform(0, 1, size=channels)
    image = image + rng.normal(0, 0.03, size=image.shape)
    out = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    return np.repeat(out, 3, axis=2) if infrared else out


def _camera_gain(seed: int, cam: int) -> np.ndarray:
    return np.random.default_rng([seed, _SALT_CAMERA, cam]).uniform(0.8, 1.2, size=3)


def _write_jpg(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95]):
        raise DatasetError(f"could not write synthetic image '{path}'")


def _person(seed: int, pid: int, cam: int, k: int, height: int, width: int, infrared: bool) -> np.ndarray:
    rng = np.random.default_rng([seed, pid, cam, k])
    return render(make_identity(seed, pid), rng, height, width, infrared, _camera_gain(seed, cam))


def generate_sysu(root, num_ids: int = 40, num_val_ids: int = 4, num_test_ids: int = 12, images_per_cam: int = 4,
                  height: int = 64, width: int = 32, seed: int = 0) -> Path:
    """SYSU-MM01 layout: root/cam{1..6}/{pid:04d}/{k:04d}.jpg (cam3, cam6 IR) and root/exp/*_id.txt.

    Ids 1..num_ids: the first ones are train, then val, then test (each file sorted, one comma-separated line).
    """
    root = Path(root)
    num_train = num_ids - num_val_ids - num_test_ids
    if num_train < 2 or num_test_ids < 1 or num_val_ids < 0:
        raise DatasetError(f"generate_sysu: need >=2 train ids and >=1 test id, got num_ids={num_ids}, "
                           f"num_val_ids={num_val_ids}, num_test_ids={num_test_ids}.")
    ids = list(range(1, num_ids + 1))
    splits = {"train": ids[:num_train], "val": ids[num_train:num_train + num_val_ids],
              "test": ids[num_train + num_val_ids:]}
    (root / "exp").mkdir(parents=True, exist_ok=True)
    for name, members in splits.items():
        (root / "exp" / f"{name}_id.txt").write_text(",".join(map(str, members)) + "\n")
    for pid in ids:
        for cam in range(1, 7):
            for k in range(images_per_cam):
                image = _person(seed, pid, cam, k, height, width, infrared=cam in SYSU_IR_CAMS)
                _write_jpg(root / f"cam{cam}" / f"{pid:04d}" / f"{k + 1:04d}.jpg", image)
    return root


def generate_regdb(root, num_ids: int = 20, num_test_ids: int = 10, images_per_modality: int = 4,
                   num_trials: int = 10, height: int = 64, width: int = 32, seed: int = 0) -> Path:
    """RegDB layout: root/Visible/{pid}/{k}.jpg, root/Thermal/{pid}/{k}.jpg and, for each trial 1..num_trials,
    root/idx/{train,test}_{visible,thermal}_{trial}.txt (lines ``relpath label``).

    As in RegDB each trial is its own random split of the identities into train and test (seeded by ``seed`` and
    the trial), so the trials train and test different models on different people.
    """
    root = Path(root)
    if num_ids - num_test_ids < 2 or num_test_ids < 1 or not 1 <= num_trials <= 10:
        raise DatasetError(f"generate_regdb: need >=2 train ids, >=1 test id and 1..10 trials, got num_ids={num_ids},"
                           f" num_test_ids={num_test_ids}, num_trials={num_trials}.")
    ids = list(range(1, num_ids + 1))
    for pid in ids:
        for folder, infrared in (("Visible", False), ("Thermal", True)):
            for k in range(images_per_modality):
                image = _person(seed, pid, 3 if infrared else 1, k, height, width, infrared=infrared)
                _write_jpg(root / folder / str(pid) / f"{k + 1:04d}.jpg", image)
    (root / "idx").mkdir(parents=True, exist_ok=True)
    for trial in range(1, num_trials + 1):
        test = set(np.random.default_rng([seed, trial]).choice(ids, num_test_ids, replace=False).tolist())
        for split, members in (("train", [p for p in ids if p not in test]), ("test", sorted(test))):
            for folder in ("Visible", "Thermal"):
                lines = [f"{folder}/{pid}/{k + 1:04d}.jpg {pid}" for pid in members
                         for k in range(images_per_modality)]
                (root / "idx" / f"{split}_{folder.lower()}_{trial}.txt").write_text("\n".join(lines) + "\n")
    return root


def generate_market(root, num_train_ids: int = 24, num_test_ids: int = 16, cams_per_id: int = 3,
                    images_per_cam: int = 3, num_junk: int = 10, num_distractors: int = 10, height: int = 64,
                    width: int = 32, seed: int = 0) -> Path:
    """Market-1501 layout under root/market1501/: 6 cameras, each id seen by `cams_per_id` random cameras.

    Pids are 2, 5, 8, ... (non-contiguous, to exercise relabelling); train ids first. For each test id and camera
    the first image is a query, the rest go to the gallery, plus `num_junk` "-1_..." images (partial, shifted
    bodies) and `num_distractors` "0000_..." images (background only, or another person).
    """
    if not 2 <= cams_per_id <= 6 or images_per_cam < 2:
        raise DatasetError("generate_market: cams_per_id must be in 2..6 and images_per_cam >= 2.")
    folder = Path(root) / "market1501"
    pids = [3 * i + 2 for i in range(num_train_ids + num_test_ids)]
    for n, pid in enumerate(pids):
        cams = np.sort(np.random.default_rng([seed, pid, _SALT_CAMERA]).choice(6, cams_per_id, replace=False)) + 1
        for cam in cams:
            for k in range(images_per_cam):
                if n < num_train_ids:
                    sub = "bounding_box_train"
                else:
                    sub = "query" if k == 0 else "bounding_box_test"
                image = _person(seed, pid, int(cam), k, height, width, infrared=False)
                _write_jpg(folder / sub / f"{pid:04d}_c{cam}s1_{k * 25:06d}_{k:02d}.jpg", image)
    for salt, count, label in ((_SALT_JUNK, num_junk, "-1"), (_SALT_DISTRACTOR, num_distractors, "0000")):
        for k in range(count):
            rng = np.random.default_rng([seed, salt, k])
            cam = int(rng.integers(1, 7))
            ident = None if rng.random() < 0.5 else make_identity(seed, 100_000 + salt + k)
            image = render(ident, rng, height, width, False, _camera_gain(seed, cam))
            if label == "-1":  # junk: a bad detection, only part of a body visible
                image = np.roll(image, int(rng.integers(height // 3, 2 * height // 3)), axis=0)
            _write_jpg(folder / "bounding_box_test" / f"{label}_c{cam}s1_{k * 25:06d}_{k:02d}.jpg", image)
    return folder


GENERATORS = {"sysu": generate_sysu, "market": generate_market}
_OWNED = {"sysu": ["exp", *(f"cam{c}" for c in range(1, 7))], "market": ["market1501"]}
_RESULT = {"sysu": ".", "market": "market1501"}


def _params_hash(kind: str, params: dict) -> str:
    text = json.dumps({"kind": kind, "version": GENERATOR_VERSION, "params": params}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _marker_hash(marker: Path) -> str | None:
    try:
        return json.loads(marker.read_text()).get("hash")
    except (OSError, ValueError, AttributeError):
        return None


def ensure_generated(kind: str, root, **params) -> Path:
    """Generate dataset `kind` ("sysu" or "market") under root once, and reuse it afterwards.

    The marker file (params hash) is written last, so an interrupted generation is detected and redone. A file
    lock serialises concurrent callers (e.g. several trials starting at once). Returns the folder to parse.
    """
    if kind not in GENERATORS:
        raise DatasetError(f"unknown synthetic dataset '{kind}'; valid: {', '.join(GENERATORS)}.")
    generator = GENERATORS[kind]
    try:
        bound = inspect.signature(generator).bind(root, **params)
    except TypeError as exc:
        raise DatasetError(f"synthetic '{kind}': {exc}") from None
    bound.apply_defaults()
    resolved = {k: v for k, v in bound.arguments.items() if k != "root"}
    digest = _params_hash(kind, resolved)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    marker = root / f".synthetic_{kind}.json"
    with exclusive_lock(root / f".synthetic_{kind}.lock"):
        if _marker_hash(marker) == digest:
            return root / _RESULT[kind]
        marker.unlink(missing_ok=True)
        for name in _OWNED[kind]:
            shutil.rmtree(root / name, ignore_errors=True)
        generator(root, **resolved)
        tmp = marker.with_name(f"{marker.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps({"kind": kind, "hash": digest, "params": resolved}, sort_keys=True))
        tmp.replace(marker)
    return root / _RESULT[kind]
