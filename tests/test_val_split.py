"""eval.split=val: selection data the training never sees (SYSU val_id.txt, or a seeded hold-out of train ids)."""
from pathlib import Path

import pytest

from core.config import load_config
from core.data import DatasetSplits, ImageRecord, hold_out_identities, read_sysu_ids
from core.effective import unread_keys
from core.factory import build_dataset, resolve_data_root


def _paths(records):
    return {r.path for r in records}


def test_market_hold_out_is_seeded_disjoint_and_one_query_per_camera():
    base = load_config("quick_market", {"data.synthetic_ids": 16})
    full = build_dataset(base)  # 10 training ids
    val_cfg = load_config("quick_market", {"data.synthetic_ids": 16, "eval.split": "val", "eval.val_fraction": 0.3})
    val = build_dataset(val_cfg)
    assert full.num_train_pids == 10 and val.num_train_pids == 7  # 3 of 10 held out
    held = _paths(full.train) - _paths(val.train)
    assert _paths(val.query) | _paths(val.gallery) == held  # every held-out image, and nothing else
    assert not (_paths(val.query) | _paths(val.gallery)) & (_paths(full.query) | _paths(full.gallery))  # no test
    assert len({r.pid for r in val.query}) == 3
    per_camera = {}
    for r in val.query:
        per_camera[(r.pid, r.camid)] = per_camera.get((r.pid, r.camid), 0) + 1
    assert set(per_camera.values()) == {1}
    assert {(r.pid, r.camid) for r in val.query} == {(r.pid, r.camid) for r in val.query + val.gallery}
    assert _paths(build_dataset(val_cfg).query) == _paths(val.query)  # the same seed, the same split
    other = build_dataset(load_config("quick_market", {"data.synthetic_ids": 16, "eval.split": "val",
                                                       "eval.val_fraction": 0.3, "eval.val_seed": 1}))
    assert _paths(other.query) | _paths(other.gallery) != held


def test_cross_modal_hold_out_queries_ir_against_rgb():
    train = [ImageRecord(f"/x/{pid}_{m}_{i}.jpg", pid, m, m) for pid in range(10) for m in (0, 1) for i in range(2)]
    splits = DatasetSplits("regdb", train, [], [], 10, cross_modal=True)
    val = hold_out_identities(splits, 0.2, seed=3)
    assert val.num_train_pids == 8 and len({r.pid for r in val.query}) == 2
    assert {r.modality for r in val.query} == {1} and {r.modality for r in val.gallery} == {0}
    assert {r.pid for r in val.query} == {r.pid for r in val.gallery} == set(val.info["val_ids"])


def test_sysu_validates_on_val_id_txt_and_trains_on_train_id_txt():
    cfg = load_config("quick", {"data.synthetic_ids": 16, "eval.split": "val"})
    splits = build_dataset(cfg)
    exp = Path(resolve_data_root(cfg)) / "exp"
    val_ids, train_ids = read_sysu_ids(exp / "val_id.txt"), read_sysu_ids(exp / "train_id.txt")
    assert {r.pid for r in splits.query} == {r.pid for r in splits.gallery} == set(val_ids)
    assert splits.num_train_pids == len(train_ids)


def test_split_keys_are_read_only_where_they_matter():
    assert {"eval.val_fraction", "eval.val_seed"} <= set(unread_keys(load_config("quick_market")))
    market_val = unread_keys(load_config("quick_market", {"eval.split": "val"}))
    assert not {"eval.val_fraction", "eval.val_seed"} & set(market_val)
    sysu_val = unread_keys(load_config("quick", {"eval.split": "val"}))
    assert "eval.val_fraction" in sysu_val and "data.sysu_train_ids" in sysu_val
    assert "data.sysu_train_ids" not in unread_keys(load_config("quick"))


def test_too_large_a_hold_out_is_refused_with_the_key():
    from core.data import DatasetError
    with pytest.raises(DatasetError, match="lower eval.val_fraction"):
        build_dataset(load_config("quick_market", {"data.synthetic_ids": 16, "eval.split": "val",
                                                   "eval.val_fraction": 0.9}))


@pytest.mark.parametrize("preset", ["quick", "quick_market"])
def test_a_training_evaluates_on_the_validation_split(preset):
    from core.engine import train
    cfg = load_config(preset, {"data.synthetic_ids": 16, "eval.split": "val", "solver.epochs": 1,
                               "solver.max_steps_per_epoch": 2, "eval.trials": 2, "run.progress": False})
    final = train(cfg, log=lambda s: None).final
    assert 0.0 <= final["rank1"] <= 100.0 and 0.0 <= final["mAP"] <= 100.0
