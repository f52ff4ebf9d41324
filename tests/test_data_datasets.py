"""Dataset parsers on generated layouts, synthetic generation, and the corrupt-image policy."""

import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.data import (DatasetError, ImageRecord, build_splits, ensure_generated, generate_sysu, parse_dukemtmc,
                       parse_market1501, parse_regdb, parse_reid_filename, parse_sysu_mm01, read_image,
                       read_sysu_ids, validate_records, validate_splits)


@pytest.fixture(scope="module")
def sysu_root(tmp_path_factory):
    return ensure_generated("sysu", tmp_path_factory.mktemp("sysu"))


@pytest.fixture(scope="module")
def market_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("market")
    ensure_generated("market", root)
    return root


# ------------------------------------------------------------------------------------------- Market / Duke


def test_parse_reid_filename():
    assert parse_reid_filename("0002_c1s1_000451_03.jpg") == (2, 0)
    assert parse_reid_filename("-1_c3s2_001234_00.jpg") == (-1, 2)
    assert parse_reid_filename("0000_c6s4_000001_01.jpg") == (0, 5)
    assert parse_reid_filename("0001_c8_f0046182.jpg") == (1, 7)
    assert parse_reid_filename("Thumbs.db") is None


def test_market_counts_junk_distractors_relabel(market_root):
    splits = parse_market1501(market_root)
    # generator defaults: 24 train ids, 16 test ids, 3 cams per id, 3 images per cam, 10 junk, 10 distractors
    assert (len(splits.train), len(splits.query), len(splits.gallery)) == (24 * 9, 16 * 3, 16 * 6 + 10)
    assert splits.num_train_pids == 24 and not splits.cross_modal
    assert all(r.pid != -1 for r in splits.train + splits.query + splits.gallery)
    assert sum(r.pid == 0 for r in splits.gallery) == 10
    assert {r.pid for r in splits.train} == set(range(24))
    # relabelling follows sorted original pids: 0002 -> 0, 0005 -> 1, ...
    for r in splits.train:
        original, camid = parse_reid_filename(Path(r.path).name)
        assert r.pid == (original - 2) // 3 and r.camid == camid
    assert {r.camid for r in splits.gallery} <= set(range(6))
    assert all(r.modality == 0 for r in splits.train)
    # query/gallery keep original pids
    assert {r.pid for r in splits.query} == {3 * i + 2 for i in range(24, 40)}
    assert len(list((market_root / "market1501" / "bounding_box_test").glob("-1_*.jpg"))) == 10


def test_market_alternative_roots(market_root, tmp_path):
    direct = parse_market1501(market_root / "market1501")
    assert len(direct.train) == 24 * 9
    shutil.copytree(market_root / "market1501", tmp_path / "Market-1501-v15.09.15")
    assert len(parse_market1501(tmp_path).query) == 48
    assert len(build_splits("market1501", tmp_path).gallery) == 106


def test_market_missing_root_and_folder(tmp_path):
    with pytest.raises(DatasetError, match="does not exist") as err:
        parse_market1501(tmp_path / "nope")
    assert "bounding_box_train" in str(err.value) and "market1501/" in str(err.value)
    (tmp_path / "market1501" / "bounding_box_train").mkdir(parents=True)
    (tmp_path / "market1501" / "bounding_box_test").mkdir()
    with pytest.raises(DatasetError) as err:
        parse_market1501(tmp_path)
    message = str(err.value)
    assert "missing query" in message and "Expected layout" in message


def _touch_jpg(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((8, 4, 3), 128, np.uint8))


def test_duke_layout_and_camids(tmp_path):
    folder = tmp_path / "dukemtmc-reid" / "DukeMTMC-reID"
    for name in ["0001_c2_f0046182.jpg", "0001_c8_f0046183.jpg", "0007_c1_f0000001.jpg"]:
        _touch_jpg(folder / "bounding_box_train" / name)
    _touch_jpg(folder / "query" / "0005_c3_f0000002.jpg")
    _touch_jpg(folder / "bounding_box_test" / "0005_c4_f0000003.jpg")
    _touch_jpg(folder / "bounding_box_test" / "0000_c5_f0000004.jpg")
    splits = build_splits("dukemtmc", tmp_path)
    assert sorted((r.pid, r.camid) for r in splits.train) == [(0, 1), (0, 7), (1, 0)]
    assert [(r.pid, r.camid) for r in splits.query] == [(5, 2)]
    assert sorted(r.pid for r in splits.gallery) == [0, 5]
    assert len(parse_dukemtmc(folder).train) == 3  # root pointing at DukeMTMC-reID directly
    assert len(parse_dukemtmc(tmp_path / "dukemtmc-reid").train) == 3  # DukeMTMC-reID/ below root
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(DatasetError, match="dukemtmc-reid/DukeMTMC-reID"):
        parse_dukemtmc(tmp_path / "elsewhere")


def test_registry_errors(tmp_path):
    with pytest.raises(DatasetError) as err:
        build_splits("market", tmp_path)
    assert "market1501" in str(err.value) and "sysu_mm01" in str(err.value) and "regdb" in str(err.value)
    with pytest.raises(DatasetError, match="train_id"):
        build_splits("sysu_mm01", tmp_path, train_id="train")


# ------------------------------------------------------------------------------------------- SYSU-MM01


def test_sysu_splits_cameras_modalities(sysu_root):
    splits = build_splits("sysu_mm01", sysu_root)
    # defaults: 40 ids = 24 train / 4 val / 12 test, 4 images per (id, camera)
    assert splits.cross_modal and splits.num_train_pids == 24
    assert len(splits.train) == 24 * 6 * 4
    assert len(splits.query) == 12 * 2 * 4 and len(splits.gallery) == 12 * 4 * 4
    assert {r.camid for r in splits.query} == {3, 6} and {r.modality for r in splits.query} == {1}
    assert {r.camid for r in splits.gallery} == {1, 2, 4, 5} and {r.modality for r in splits.gallery} == {0}
    assert {r.modality for r in splits.train if r.camid in (3, 6)} == {1}
    assert {r.modality for r in splits.train if r.camid in (1, 2, 4, 5)} == {0}
    assert {r.pid for r in splits.query} == set(range(29, 41))  # original ids kept
    assert {r.pid for r in splits.train} == set(range(24))


def test_sysu_train_val_and_eval_options(sysu_root):
    assert build_splits("sysu_mm01", sysu_root, train_ids="train+val").num_train_pids == 28
    val = parse_sysu_mm01(sysu_root, eval_ids="val")
    assert {r.pid for r in val.query} == {25, 26, 27, 28}
    with pytest.raises(DatasetError, match="overlaps"):
        parse_sysu_mm01(sysu_root, train_ids="train+val", eval_ids="val")
    with pytest.raises(DatasetError, match="train\\+val"):
        parse_sysu_mm01(sysu_root, train_ids="all")


def test_sysu_id_files_and_subfolder(sysu_root, tmp_path):
    (tmp_path / "a.txt").write_text("1,2,3,5\n")
    (tmp_path / "b.txt").write_text("7,3,2")
    (tmp_path / "c.txt").write_text("1,x")
    assert read_sysu_ids(tmp_path / "a.txt") == [1, 2, 3, 5]
    assert read_sysu_ids(tmp_path / "b.txt") == [2, 3, 7]
    with pytest.raises(DatasetError, match="c.txt"):
        read_sysu_ids(tmp_path / "c.txt")
    shutil.copytree(sysu_root / "exp", tmp_path / "SYSU-MM01" / "exp")
    for cam in range(1, 7):
        shutil.copytree(sysu_root / f"cam{cam}", tmp_path / "SYSU-MM01" / f"cam{cam}")
    assert len(parse_sysu_mm01(tmp_path).train) == 576
    (tmp_path / "SYSU-MM01" / "exp" / "val_id.txt").unlink()
    with pytest.raises(DatasetError) as err:
        parse_sysu_mm01(tmp_path)
    assert "exp/val_id.txt" in str(err.value) and "cam1/ .. cam6/" in str(err.value)


# ------------------------------------------------------------------------------------------- RegDB


def test_regdb_index_files(tmp_path):
    idx = tmp_path / "idx"
    idx.mkdir()
    (idx / "train_visible_3.txt").write_text("Visible/10/a.bmp 10\nVisible/4/b.bmp 4\n")
    (idx / "train_thermal_3.txt").write_text("Thermal/10/a.bmp 10\nThermal/4/b.bmp 4\n\n")
    (idx / "test_visible_3.txt").write_text("Visible/7/c.bmp 0\nVisible/9/d.bmp 1\n")
    (idx / "test_thermal_3.txt").write_text("Thermal/7/c.bmp 0\n")
    splits = build_splits("regdb", tmp_path, trial=3)
    assert splits.cross_modal and splits.num_train_pids == 2
    assert [(Path(r.path).name, r.pid, r.camid, r.modality) for r in splits.train] == [
        ("a.bmp", 1, 0, 0), ("b.bmp", 0, 0, 0), ("a.bmp", 1, 1, 1), ("b.bmp", 0, 1, 1)]
    assert splits.train[0].path == str(tmp_path / "Visible/10/a.bmp")
    assert [(r.pid, r.modality) for r in splits.query] == [(0, 1)]  # thermal -> visible (authors)
    assert [(r.pid, r.modality) for r in splits.gallery] == [(0, 0), (1, 0)]
    v2t = parse_regdb(tmp_path, trial=3, mode="v2t")
    assert {r.modality for r in v2t.query} == {0} and {r.modality for r in v2t.gallery} == {1}
    with pytest.raises(DatasetError, match="idx/train_visible_1.txt"):
        parse_regdb(tmp_path, trial=1)
    with pytest.raises(DatasetError, match="1..10"):
        parse_regdb(tmp_path, trial=11)
    (idx / "test_thermal_3.txt").write_text("Thermal/7/c.bmp\n")
    with pytest.raises(DatasetError, match="test_thermal_3.txt:1"):
        parse_regdb(tmp_path, trial=3)


# ------------------------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic(tmp_path):
    params = dict(num_ids=6, num_val_ids=1, num_test_ids=2, images_per_cam=2)
    a, b, c = (generate_sysu(tmp_path / n, seed=s, **params) for n, s in (("a", 3), ("b", 3), ("c", 4)))
    rel = "cam3/0002/0002.jpg"
    assert (a / rel).read_bytes() == (b / rel).read_bytes()
    assert (a / rel).read_bytes() != (c / rel).read_bytes()
    assert (a / "exp" / "test_id.txt").read_text().strip() == "5,6"


def test_synthetic_rgb_vs_ir(sysu_root):
    ir = read_image(str(sysu_root / "cam3" / "0001" / "0001.jpg")).astype(int)
    rgb = read_image(str(sysu_root / "cam1" / "0001" / "0001.jpg")).astype(int)
    assert ir.shape == rgb.shape == (64, 32, 3)
    assert np.array_equal(ir[..., 0], ir[..., 1]) and np.array_equal(ir[..., 1], ir[..., 2])
    assert np.abs(rgb[..., 0] - rgb[..., 1]).mean() > 10 or np.abs(rgb[..., 1] - rgb[..., 2]).mean() > 10
    assert (sysu_root / "cam1" / "0001" / "0001.jpg").read_bytes()[:2] == b"\xff\xd8"  # real JPEG


def test_ensure_generated_reuses_and_regenerates(tmp_path):
    params = dict(num_ids=5, num_val_ids=1, num_test_ids=1, images_per_cam=1)
    root = ensure_generated("sysu", tmp_path, **params)
    image = root / "cam1" / "0001" / "0001.jpg"
    stamp = image.stat().st_mtime_ns
    image.write_bytes(b"tampered")
    ensure_generated("sysu", tmp_path, **params)
    assert image.read_bytes() == b"tampered"  # reused, not regenerated
    (tmp_path / ".synthetic_sysu.json").unlink()  # as if generation was interrupted before the marker
    ensure_generated("sysu", tmp_path, **params)
    assert image.read_bytes()[:2] == b"\xff\xd8" and image.stat().st_mtime_ns >= stamp
    ensure_generated("sysu", tmp_path, **{**params, "num_ids": 6})  # new params -> new data
    assert (tmp_path / "cam1" / "0006").is_dir()
    with pytest.raises(DatasetError, match="num_idz"):
        ensure_generated("sysu", tmp_path, num_idz=3)
    splits = build_splits("synthetic_sysu", tmp_path, train_ids="train+val", **{**params, "num_ids": 6})
    assert splits.name == "synthetic_sysu" and splits.num_train_pids == 5


# ------------------------------------------------------------------------------------------- corrupt images


def _records_with_bad_files(tmp_path, sysu_root):
    good = ImageRecord(str(sysu_root / "cam1" / "0001" / "0001.jpg"), 0, 1, 0)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not a jpeg at all" * 10)
    truncated = tmp_path / "truncated.jpg"
    data = Path(good.path).read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    return good, [ImageRecord(str(p), 0, 1, 0) for p in (garbage, truncated, tmp_path / "missing.jpg")]


def test_read_image_errors_name_the_file(tmp_path, sysu_root):
    _, bad = _records_with_bad_files(tmp_path, sysu_root)
    for record in bad:
        with pytest.raises(DatasetError) as err:
            read_image(record.path)
        assert record.path in str(err.value)


def test_jpeg_with_trailing_bytes_is_accepted(tmp_path, sysu_root):
    padded = tmp_path / "padded.jpg"
    padded.write_bytes((sysu_root / "cam1" / "0001" / "0001.jpg").read_bytes() + b"\x00" * 100 + b"junk")
    assert read_image(str(padded)).shape == (64, 32, 3)


def test_validate_records_stop_and_skip(tmp_path, sysu_root):
    good, bad = _records_with_bad_files(tmp_path, sysu_root)
    assert validate_records([good]) == [good]
    with pytest.raises(DatasetError) as err:
        validate_records([good, bad[0]], on_corrupt="stop")
    assert bad[0].path in str(err.value) and "data.on_corrupt=skip" in str(err.value)
    with pytest.warns(UserWarning) as caught:
        kept = validate_records([good, *bad], on_corrupt="skip")
    assert kept == [good]
    assert all(r.path in str(caught[0].message) for r in bad)
    with pytest.raises(DatasetError, match="stop"):
        validate_records([good], on_corrupt="ignore")


def test_validate_splits_relabels_after_skip(tmp_path, sysu_root):
    splits = parse_sysu_mm01(sysu_root)
    first_id = [r for r in splits.train if r.pid == 0]
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    # every image of train id 0 replaced by an unreadable file
    broken = [ImageRecord(str(bad_dir / f"{i}.jpg"), 0, r.camid, r.modality) for i, r in enumerate(first_id)]
    for r in broken:
        Path(r.path).write_bytes(b"\x00" * 10)
    rest = [r for r in splits.train if r.pid != 0]
    mixed = splits.with_records(train=broken + rest)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cleaned = validate_splits(mixed, on_corrupt="skip")
    assert cleaned.num_train_pids == 23 and {r.pid for r in cleaned.train} == set(range(23))
    assert len(cleaned.query) == len(splits.query)
