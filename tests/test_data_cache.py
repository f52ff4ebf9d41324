"""The shared on-disk image cache (core.data.cache) and its use by the loaders."""

import multiprocessing
import os
import pickle
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import core.data.cache as cache_module
import core.data.images as images_module
from core.data import (DatasetError, ReidDataset, build_image_cache, build_splits, build_test_loader,
                       build_train_loader, build_transforms, cache_root, ensure_generated, read_image,
                       set_loader_epoch, validate_splits_cached)
from core.data.transforms import resize

H, W = 48, 24  # not the generated 64x32, so the cache really resizes


@pytest.fixture(autouse=True)
def cache_env(tmp_path, monkeypatch):
    """Every test gets its own cache folder (never ~/.cache)."""
    monkeypatch.setenv("EXPAT_DATA_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def sysu_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("sysu")
    ensure_generated("sysu", root, num_ids=8, num_val_ids=1, num_test_ids=2, images_per_cam=2)
    return root


@pytest.fixture(scope="module")
def splits(sysu_root):
    return build_splits("sysu_mm01", sysu_root)


def _paths(splits):
    return [r.path for r in splits.train]


def _cache_files(folder: Path) -> list[Path]:
    return sorted((folder / "image_cache").glob("*.npy"))


def test_same_pixels_as_decoding_and_resizing(splits, cache_env):
    paths = _paths(splits)
    cache = build_image_cache(paths, H, W)
    assert len(cache) == len(paths) and cache.file.parent == cache_root()
    assert cache.file.parent == cache_env.resolve() / "image_cache"
    for path in paths:
        got = cache[path]
        assert got.dtype == np.uint8 and got.shape == (H, W, 3) and type(got) is np.ndarray
        np.testing.assert_array_equal(got, resize(read_image(path), H, W))
    assert not cache[paths[0]].flags.writeable  # a read-only map: augmentations cannot write into the cache


def test_dataset_items_identical_across_cache_modes(splits):
    transform = build_transforms(H, W, train=True, padding=4, erasing_prob=0.5)
    datasets = {mode: ReidDataset(splits.train, transform, cache=mode) for mode in ("disk", "memory", "none")}
    for index in range(0, len(splits.train), 7):
        key = (index, None, (1, 2, 3, index))
        items = {mode: ds[key] for mode, ds in datasets.items()}
        assert torch.equal(items["disk"]["images"], items["none"]["images"])
        assert torch.equal(items["disk"]["images"], items["memory"]["images"])
        assert items["disk"]["pids"] == splits.train[index].pid
    assert datasets["disk"].cache_mode == "disk" and ReidDataset(splits.train, transform, True).cache_mode == "disk"
    assert ReidDataset(splits.train, transform, False).cache_mode == "none"
    with pytest.raises(DatasetError, match="cache mode"):
        ReidDataset(splits.train, transform, cache="ram")


def test_built_once_then_only_mapped(splits, count_reads, cache_env):
    calls = count_reads(cache_module)
    paths = _paths(splits)
    first = build_image_cache(paths, H, W)
    assert sum(calls.values()) == len(paths) and max(calls.values()) == 1
    mtime = first.file.stat().st_mtime_ns
    calls.clear()
    # A later trial: new loaders (train and test) over the same images decode nothing.
    loader = build_train_loader(splits, H, W, batch_size=8, num_instances=4, sampler="pk", seed=0)
    for _ in loader:
        pass
    assert sum(calls.values()) == 0
    assert first.file.stat().st_mtime_ns == mtime and len(_cache_files(cache_env)) == 1
    # Other record sets or sizes get their own file.
    build_test_loader(splits.query, H, W, batch_size=8)
    build_image_cache(paths, 32, 16)
    assert len(_cache_files(cache_env)) == 3


def test_changed_file_rebuilds(tmp_path, count_reads):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(4):
        path = folder / f"{i}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (20, 10, 3), dtype=np.uint8))
        paths.append(str(path))
    before = build_image_cache(paths, 16, 8)
    new = rng.integers(0, 256, (30, 12, 3), dtype=np.uint8)
    cv2.imwrite(paths[2], new)
    os.utime(paths[2], ns=(time.time_ns(), time.time_ns() + 10**9))  # a new mtime even on coarse clocks
    calls = count_reads(cache_module)
    after = build_image_cache(paths, 16, 8)
    assert after.file != before.file and sum(calls.values()) == len(paths)
    np.testing.assert_array_equal(after[paths[2]], resize(read_image(paths[2]), 16, 8))
    assert not np.array_equal(after[paths[2]], before[paths[2]])
    np.testing.assert_array_equal(after[paths[0]], before[paths[0]])
    # A removed file changes the key too.
    assert build_image_cache(paths[:3], 16, 8).file not in (before.file, after.file)


def _concurrent_builder(index, paths, cache_dir, arrived, queue):
    """Build the cache, but wait at the lock until the other builder has reached it too: both have then seen the
    file missing, so exactly one must build while the other waits and maps the result."""
    decodes = []
    real_read, real_lock = cache_module.read_image, cache_module.exclusive_lock

    def counting(path):
        decodes.append(path)
        return real_read(path)

    def meet_then_lock(path):
        arrived[index].set()
        if not arrived[1 - index].wait(timeout=120):
            raise RuntimeError("the other builder never reached the lock")
        return real_lock(path)

    cache_module.read_image, cache_module.exclusive_lock = counting, meet_then_lock
    cache = build_image_cache(paths, H, W, cache_dir=cache_dir, threads=1)
    queue.put((str(cache.file), len(decodes), int(cache.array.sum())))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_concurrent_builders_end_with_one_valid_cache(splits, tmp_path):
    paths = _paths(splits)[:24]
    ctx = multiprocessing.get_context("fork")
    arrived, queue = [ctx.Event(), ctx.Event()], ctx.Queue()
    procs = [ctx.Process(target=_concurrent_builder, args=(i, paths, str(tmp_path / "shared"), arrived, queue))
             for i in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert all(e.is_set() for e in arrived)  # both builders reached the lock: they overlapped
    files = {r[0] for r in results}
    assert len(files) == 1 and sorted(r[1] for r in results) == [0, len(paths)]  # one built, the other mapped
    assert results[0][2] == results[1][2]
    folder = tmp_path / "shared" / "image_cache"
    assert [p.name for p in folder.glob("*.npy")] == [Path(next(iter(files))).name]
    assert not list(folder.glob("*.tmp-*"))
    cache = build_image_cache(paths, H, W, cache_dir=tmp_path / "shared")
    for path in paths[:5]:
        np.testing.assert_array_equal(cache[path], resize(read_image(path), H, W))


def test_corrupt_image_reported_with_path(splits, tmp_path, cache_env):
    good = Path(_paths(splits)[0])
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    paths = [str(good), str(truncated)]
    with pytest.raises(DatasetError, match="truncated.jpg"):
        build_image_cache(paths, H, W)
    folder = cache_env / "image_cache"
    assert not list(folder.glob("*.npy")) and not list(folder.glob("*.tmp-*"))
    with pytest.raises(DatasetError, match="missing.jpg"):
        build_image_cache([str(good), str(tmp_path / "missing.jpg")], H, W)


def test_works_with_a_worker_process(splits):
    kwargs = dict(batch_size=8, num_instances=4, sampler="pk", seed=3)
    single = build_train_loader(splits, H, W, num_workers=0, **kwargs)
    worker = build_train_loader(splits, H, W, num_workers=1, **kwargs)
    # The dataset pickles without pixels; the worker maps the file itself.
    clone = pickle.loads(pickle.dumps(worker.dataset))
    assert clone.image_cache._array is None and len(pickle.dumps(worker.dataset)) < clone.image_cache.array.nbytes
    for epoch in (0, 1):
        set_loader_epoch(single, epoch)
        set_loader_epoch(worker, epoch)
        batches_single, batches_worker = list(single), list(worker)
        assert len(batches_single) == len(batches_worker) > 0
        for a, b in zip(batches_single, batches_worker):
            assert torch.equal(a["images"], b["images"]) and torch.equal(a["pids"], b["pids"])


def test_empty_record_list(tmp_path):
    cache = build_image_cache([], H, W)
    assert len(cache) == 0 and cache.array.shape == (0, H, W, 3)


def test_validation_remembered_per_machine(splits, count_reads, tmp_path):
    calls = count_reads(images_module)
    assert validate_splits_cached(splits) is not None and sum(calls.values()) > 0
    calls.clear()
    again = validate_splits_cached(splits)
    assert sum(calls.values()) == 0 and len(again.train) == len(splits.train)
    # A corrupt file: reported with its path every time, never remembered.
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    broken = splits.with_records(gallery=[*splits.gallery[:-1], replace(splits.gallery[-1], path=str(bad))])
    for _ in range(2):
        with pytest.raises(DatasetError, match="bad.jpg"):
            validate_splits_cached(broken)


def test_unwritable_cache_folder_falls_back_to_memory(splits, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")  # the cache folder would have to live under a file
    transform = build_transforms(H, W, train=False)
    with pytest.warns(UserWarning, match="image cache unavailable"):
        dataset = ReidDataset(splits.query, transform, cache="disk", cache_dir=str(blocker))
    assert dataset.cache_mode == "memory"
    np.testing.assert_array_equal(dataset.load(splits.query[0].path), resize(read_image(splits.query[0].path), H, W))
