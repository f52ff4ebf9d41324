"""The shared on-disk image cache: every image decoded and resized once per machine, then only mapped.

A cache file is a ``.npy`` array ``N x H x W x 3`` uint8 (the output of ``ReidTransform.prepare`` for each image),
opened with ``numpy.load(mmap_mode="r")``. Every trial of a study on one machine, and every DataLoader worker,
maps the same file, so the pages are read from disk once and then shared through the OS page cache: no JPEG is
decoded again after the first trial.

The file name carries a key made of the dataset root (the common folder of the images), the image size, the
number of images, a content hash (sorted relative paths + file sizes + modification times) and the cache format /
OpenCV / Pillow versions (cv2 decodes, PIL resizes); a changed, added or removed file therefore gives a new key and the cache is rebuilt. Rows are in
sorted path order.

Building is safe under concurrency: the builder holds an exclusive file lock (``<name>.lock``; ``fcntl.flock``,
released by the OS if the process dies), writes ``<name>.tmp-<pid>``, flushes it and renames it atomically; the
others wait on the lock, then find the finished file and just map it. A corrupt image stops the build with the
``DatasetError`` of ``core.data.images.read_image``, which names the file.

Location: ``$EXPAT_DATA_CACHE/image_cache`` or ``~/.cache/expat_ablate/image_cache``. Old cache files are never
removed automatically (another trial may still map them); delete the folder to reclaim the space.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np
import PIL

from core.files import cache_base
from core.locks import exclusive_lock

from .images import read_image, validate_splits
from .records import DatasetError, DatasetSplits

CACHE_MODES = ("disk", "memory", "none")
CACHE_FORMAT = 2  # bump when the stored pixels change meaning (resize method, layout); 2: PIL bilinear resize
_BUILD_CHUNK = 256  # images decoded per parallel batch while building


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The image-cache folder: ``image_cache/`` under :func:`cache_base`."""
    return cache_base(cache_dir) / "image_cache"


def _unique_paths(paths: Iterable[str]) -> list[str]:
    return sorted({os.path.abspath(p) for p in paths})


def content_hash(paths: Sequence[str], root: str) -> str:
    """sha256 over the sorted relative paths, sizes and modification times (ns) of ``paths`` (absolute, sorted)."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            st = os.stat(path)
        except OSError as exc:
            raise DatasetError(f"cannot read image file '{path}': {exc.strerror or exc}") from None
        digest.update(f"{os.path.relpath(path, root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _common_root(paths: Sequence[str]) -> str:
    root = os.path.commonpath(paths)
    return root if os.path.isdir(root) else os.path.dirname(root)


class ImageCache:
    """Read-only view of a built cache file: ``cache[path]`` -> ``H x W x 3`` uint8 array (a view of the map).

    The memory map is opened lazily in each process (and dropped when pickled), so DataLoader workers, forked or
    spawned, each map the file themselves instead of receiving a copy of the pixels.
    """

    def __init__(self, file: Path | None, paths: Sequence[str], height: int, width: int):
        self.file = Path(file) if file is not None else None
        self.height, self.width = int(height), int(width)
        self.index = {p: i for i, p in enumerate(paths)}
        self._array: np.ndarray | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, path: str) -> bool:
        return os.path.abspath(path) in self.index

    @property
    def array(self) -> np.ndarray:
        if self._array is None or self._pid != os.getpid():
            if self.file is None:
                self._array = np.zeros((0, self.height, self.width, 3), np.uint8)
            else:
                self._array = np.load(self.file, mmap_mode="r")
            self._pid = os.getpid()
        return self._array

    def __getitem__(self, path: str) -> np.ndarray:
        try:
            row = self.index[path]
        except KeyError:
            row = self.index.get(os.path.abspath(path))
            if row is None:
                raise KeyError(f"'{path}' is not in the image cache {self.file}") from None
        return np.asarray(self.array[row])

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_array"], state["_pid"] = None, None
        return state


def _keyed_file(paths: Sequence[str], tag: str, suffix: str,
                cache_dir: str | os.PathLike | None) -> tuple[Path, list[str], str]:
    """(file named by root + tag + content hash, sorted absolute paths, root)."""
    unique = _unique_paths(paths)
    root = _common_root(unique)
    key = hashlib.sha256(f"format{CACHE_FORMAT}|cv2 {cv2.__version__}|PIL {PIL.__version__}|{tag}|{root}|"
                         f"{content_hash(unique, root)}".encode()).hexdigest()[:20]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.basename(root) or "root")[:60]
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", tag)
    return cache_root(cache_dir) / f"{slug}-{tag}-n{len(unique)}-{key}{suffix}", unique, root


def cache_file_for(paths: Sequence[str], height: int, width: int, cache_dir: str | os.PathLike | None = None,
                   variant: str = "bilinear") -> tuple[Path, list[str], str]:
    """(cache file, sorted absolute paths, root) for these images at this size; the file may not exist yet."""
    tag = f"{int(height)}x{int(width)}" + ("" if variant == "bilinear" else f"-{variant}")
    return _keyed_file(paths, tag, ".npy", cache_dir)


def build_image_cache(paths: Sequence[str], height: int, width: int,
                      prepare: Callable[[np.ndarray], np.ndarray] | None = None,
                      cache_dir: str | os.PathLike | None = None, threads: int | None = None,
                      log: Callable[[str], None] | None = None, variant: str = "bilinear") -> ImageCache:
    """The cache of ``paths`` resized to ``height x width``: mapped if it exists, else built once (under a lock).

    ``prepare`` turns a decoded RGB image into the stored ``height x width x 3`` uint8 array (default: the
    bilinear resize of ``core.data.transforms``); the key cannot see the function, so a different ``prepare``
    needs its own ``variant`` name. ``threads`` decode in parallel while building (default: torch's
    intra-op thread count, i.e. the trial's CPU share).
    """
    height, width = int(height), int(width)
    if prepare is None:
        from .transforms import resize

        def prepare(image: np.ndarray) -> np.ndarray:
            return resize(image, height, width)

    if not paths:
        return ImageCache(None, [], height, width)
    file, unique, root = cache_file_for(paths, height, width, cache_dir, variant)
    if not file.exists():
        file.parent.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(file.with_suffix(".lock")):
            if not file.exists():  # nobody built it while we waited for the lock
                _build(file, unique, root, height, width, prepare, threads, log)
    cache = ImageCache(file, unique, height, width)
    shape = cache.array.shape
    if shape != (len(unique), height, width, 3):
        raise DatasetError(f"image cache {file} holds an array of shape {shape}, expected "
                           f"{(len(unique), height, width, 3)}; delete it to rebuild")
    return cache


def _build(file: Path, paths: list[str], root: str, height: int, width: int, prepare: Callable, threads: int | None,
           log: Callable[[str], None] | None) -> None:
    for stale in file.parent.glob(file.name + ".tmp-*"):  # left by a builder that died (we hold the lock)
        stale.unlink(missing_ok=True)
    tmp = file.with_name(f"{file.name}.tmp-{os.getpid()}")
    start = time.perf_counter()
    if threads is None:
        import torch
        threads = torch.get_num_threads()
    threads = max(1, min(int(threads), os.cpu_count() or 1))

    def load(path: str) -> np.ndarray:
        image = prepare(read_image(path))
        if image.shape != (height, width, 3) or image.dtype != np.uint8:
            raise DatasetError(f"prepare() turned '{path}' into {image.dtype} {image.shape}, expected uint8 "
                               f"{(height, width, 3)}")
        return image

    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), height, width, 3))
    try:
        if threads == 1:
            for i, path in enumerate(paths):
                out[i] = load(path)
        else:  # cv2 releases the GIL while decoding and resizing; chunks stop soon after a corrupt file
            with ThreadPoolExecutor(threads) as pool:
                for first in range(0, len(paths), _BUILD_CHUNK):
                    for i, image in enumerate(pool.map(load, paths[first:first + _BUILD_CHUNK]), first):
                        out[i] = image
        out.flush()
        del out
        meta = {"format": CACHE_FORMAT, "root": root, "count": len(paths), "height": height, "width": width,
                "created": time.strftime("%Y-%m-%d %H:%M:%S")}
        file.with_suffix(".json").write_text(json.dumps(meta, indent=1))
        os.replace(tmp, file)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if log:
        log(f"image cache: decoded {len(paths)} images into {file} in {time.perf_counter() - start:.1f}s")


def validate_splits_cached(splits: DatasetSplits, on_corrupt: str = "stop",
                           cache_dir: str | os.PathLike | None = None) -> DatasetSplits:
    """``core.data.images.validate_splits``, remembered per machine: once every file of the splits has decoded,
    a marker keyed by their content hash lets later trials skip the decoding pass. Splits with an unreadable file
    get no marker, so they are checked (and reported with the file's path) every time."""
    records = splits.train + splits.query + splits.gallery
    if not records:
        return validate_splits(splits, on_corrupt)
    marker, _, _ = _keyed_file([r.path for r in records], "decodes", ".ok", cache_dir)
    if marker.exists():
        return splits
    checked = validate_splits(splits, on_corrupt)
    if len(checked.train) + len(checked.query) + len(checked.gallery) == len(records):
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    return checked
