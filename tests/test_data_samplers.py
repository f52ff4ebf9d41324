"""Sampler invariants (PK, cross-modal PK, authors' triplets) and the loaders built on them."""

from collections import Counter

import numpy as np
import pytest
import torch

import core.data.loaders as loaders_module
from core.data import (ROLES, CrossModalIdentitySampler, DatasetError, RandomBatchSampler, RandomIdentitySampler,
                       TripletSampler, build_splits, build_test_loader, build_train_loader, ensure_generated,
                       set_loader_epoch)

# 10 identities with 1..10 images: exercises sampling with replacement (fewer than K images)
PIDS = [pid for pid in range(10) for _ in range(pid + 1)]


def _pids_of(batch):
    return [PIDS[i] for i in batch]


# ------------------------------------------------------------------------------------------- PK


def test_pk_every_batch_has_p_ids_times_k():
    sampler = RandomIdentitySampler(PIDS, batch_size=12, num_instances=4, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) > 0
    for batch in batches:
        counts = Counter(_pids_of(batch))
        assert len(batch) == 12 and len(counts) == 3 and set(counts.values()) == {4}
        for pid in counts:  # identity-major: the K images of an id are contiguous
            positions = [j for j, i in enumerate(batch) if PIDS[i] == pid]
            assert positions == list(range(positions[0], positions[0] + 4))


def test_pk_small_identities_are_sampled_with_replacement():
    sampler = RandomIdentitySampler(PIDS, batch_size=40, num_instances=4, seed=1)
    batch = next(iter(sampler))  # 10 ids x 4: every id appears, id 0 has a single image
    assert [PIDS[i] for i in batch].count(0) == 4
    assert {i for i in batch if PIDS[i] == 0} == {0}


def test_pk_determinism_and_epochs():
    a = RandomIdentitySampler(PIDS, 8, 4, seed=5)
    b = RandomIdentitySampler(PIDS, 8, 4, seed=5)
    c = RandomIdentitySampler(PIDS, 8, 4, seed=6)
    first = list(a)
    assert first == list(b)
    assert first != list(c)
    second = list(a)  # iterating advances the epoch
    assert second != first and a.epoch == 2
    a.set_epoch(0)
    assert list(a) == first
    b.set_epoch(1)
    assert list(b) == second


def test_pk_errors():
    with pytest.raises(DatasetError, match="multiple of num_instances"):
        RandomIdentitySampler(PIDS, 10, 4, seed=0)
    with pytest.raises(DatasetError, match="only 10 identities"):
        RandomIdentitySampler(PIDS, 64, 4, seed=0)


# ------------------------------------------------------------------------------------------- cross-modal


def _cross_modal_data():
    pids, mods = [], []
    for pid in range(8):
        n_rgb, n_ir = 2 + pid, 1 + pid % 3
        if pid == 7:
            n_ir = 0  # RGB only: must be excluded
        pids += [pid] * (n_rgb + n_ir)
        mods += [0] * n_rgb + [1] * n_ir
    return pids, mods


def test_cross_modal_halves():
    pids, mods = _cross_modal_data()
    with pytest.warns(UserWarning, match="lack RGB or IR"):
        sampler = CrossModalIdentitySampler(pids, mods, batch_size=12, num_instances=4, seed=0)
    batches = list(sampler)
    assert batches
    seen = set()
    for batch in batches:
        assert len(batch) == 12
        for g in range(3):  # per identity: 2 RGB then 2 IR
            group = batch[4 * g:4 * g + 4]
            assert len({pids[i] for i in group}) == 1
            assert [mods[i] for i in group] == [0, 0, 1, 1]
        assert len({pids[i] for i in batch}) == 3
        seen.update(batch)
    assert 7 not in {pids[i] for i in seen}
    sampler.set_epoch(0)
    assert list(sampler) == batches


@pytest.mark.filterwarnings("ignore:cross-modal sampler")
def test_cross_modal_errors():
    pids, mods = _cross_modal_data()
    with pytest.raises(DatasetError, match="even"):
        CrossModalIdentitySampler(pids, mods, batch_size=9, num_instances=3, seed=0)
    with pytest.raises(DatasetError, match="identities"):
        CrossModalIdentitySampler(pids, mods, batch_size=32, num_instances=4, seed=0)


# ------------------------------------------------------------------------------------------- triplets


def _triplet_data():
    pids, mods = [], []
    for pid in range(6):
        n_rgb, n_ir = 3 + pid, 2 + pid % 2
        if pid == 5:
            n_ir = 1  # cannot give a distinct IR positive: excluded
        pids += [pid] * (n_rgb + n_ir)
        mods += [0] * n_rgb + [1] * n_ir
    return pids, mods


def test_triplet_roles_invariants():
    pids, mods = _triplet_data()
    with pytest.warns(UserWarning, match="excluded"):
        sampler = TripletSampler(pids, mods, batch_size=4, seed=0)
    batches = list(sampler)
    eligible_rgb = sum(1 for p, m in zip(pids, mods) if m == 0 and p != 5)
    assert len(batches) == eligible_rgb // 4
    for batch in batches:
        assert len(batch) == 24
        roles = [r for _, r in batch]
        assert roles == [r for r in range(6) for _ in range(4)]  # role-major
        idx = np.array([i for i, _ in batch]).reshape(6, 4)
        pid = np.array(pids)[idx]
        mod = np.array(mods)[idx]
        assert (mod == np.array([0, 0, 0, 1, 1, 1])[:, None]).all()
        assert (pid[1] == pid[0]).all() and (pid[4] == pid[3]).all() and (pid[3] == pid[0]).all()
        assert (idx[1] != idx[0]).all() and (idx[4] != idx[3]).all()
        assert (pid[2] != pid[0]).all() and (pid[5] != pid[3]).all()
        assert 5 not in pid
    assert len(ROLES) == 6 and ROLES[0] == "anchor_rgb" and ROLES[5] == "negative_ir"


def test_triplet_negatives_are_independent_and_anchor_index_mode():
    pids, mods = _triplet_data()
    with pytest.warns(UserWarning):
        sampler = TripletSampler(pids, mods, batch_size=2, seed=3, anchor="index")
    anchors, differ = [], 0
    for batch in sampler:
        idx = np.array([i for i, _ in batch]).reshape(6, 2)
        anchors += idx[0].tolist()
        differ += int((np.array(pids)[idx[2]] != np.array(pids)[idx[5]]).sum())
    rgb = [i for i, (p, m) in enumerate(zip(pids, mods)) if m == 0 and p != 5]
    assert set(anchors) <= set(rgb)
    assert len(set(anchors)) == len(anchors) == len(rgb) - len(rgb) % 2  # each RGB image anchors once
    assert differ > 0  # the IR negative id is drawn independently of the RGB one


def test_random_batch_sampler():
    sampler = RandomBatchSampler(10, 4, seed=0)
    batches = list(sampler)
    assert [len(b) for b in batches] == [4, 4] and len(set(sum(batches, []))) == 8


# ------------------------------------------------------------------------------------------- loaders


@pytest.fixture(scope="module")
def sysu_splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("sysu")
    ensure_generated("sysu", root, num_ids=14, num_val_ids=2, num_test_ids=4, images_per_cam=2)
    return build_splits("sysu_mm01", root)


def _first_batch(loader):
    return next(iter(loader))


def test_train_loader_batches(sysu_splits):
    loader = build_train_loader(sysu_splits, 32, 16, batch_size=8, num_instances=4, sampler="cross_modal", seed=0)
    batch = _first_batch(loader)
    assert set(batch) == {"images", "pids", "camids", "modality"}
    assert batch["images"].shape == (8, 3, 32, 16) and batch["images"].dtype == torch.float32
    for key in ("pids", "camids", "modality"):
        assert batch[key].dtype == torch.long and batch[key].shape == (8,)
    assert batch["modality"].tolist() == [0, 0, 1, 1, 0, 0, 1, 1]
    assert int(batch["pids"].max()) < sysu_splits.num_train_pids


def test_triplet_loader_has_roles(sysu_splits):
    loader = build_train_loader(sysu_splits, 32, 16, batch_size=3, sampler="triplets", seed=0)
    batch = _first_batch(loader)
    assert batch["images"].shape[0] == 18
    assert batch["roles"].tolist() == [r for r in range(6) for _ in range(3)]
    assert batch["modality"].tolist() == [0] * 9 + [1] * 9
    assert (batch["pids"][3:6] == batch["pids"][:3]).all() and (batch["pids"][6:9] != batch["pids"][:3]).all()


def test_loader_determinism_and_epochs(sysu_splits):
    def make():
        return build_train_loader(sysu_splits, 32, 16, batch_size=8, num_instances=4, sampler="pk", seed=7)

    a, b = make(), make()
    first = _first_batch(a)
    assert torch.equal(first["images"], _first_batch(b)["images"])
    set_loader_epoch(a, 1)
    other = _first_batch(a)
    assert not torch.equal(first["images"], other["images"])
    set_loader_epoch(a, 0)
    assert torch.equal(_first_batch(a)["images"], first["images"])


def test_loader_same_with_worker_process(sysu_splits):
    kwargs = dict(batch_size=8, num_instances=4, sampler="pk", seed=3)
    single = _first_batch(build_train_loader(sysu_splits, 32, 16, num_workers=0, **kwargs))
    worker = _first_batch(build_train_loader(sysu_splits, 32, 16, num_workers=1, **kwargs))
    assert torch.equal(single["images"], worker["images"]) and torch.equal(single["pids"], worker["pids"])


def test_cache_avoids_second_decode(sysu_splits, count_reads):
    calls = count_reads(loaders_module)
    loader = build_train_loader(sysu_splits, 32, 16, batch_size=8, num_instances=4, sampler="random", seed=0,
                                cache="memory")
    for _ in range(2):
        for _batch in loader:
            pass
    assert calls and max(calls.values()) == 1
    assert len(loader.dataset.cache) == len(calls)


def test_sampler_needs_cross_modal_dataset(tmp_path):
    root = tmp_path / "m"
    ensure_generated("market", root, num_train_ids=4, num_test_ids=2, num_junk=1, num_distractors=1)
    splits = build_splits("market1501", root)
    with pytest.raises(DatasetError, match="single-modality"):
        build_train_loader(splits, 32, 16, batch_size=8, sampler="triplets")
    with pytest.raises(DatasetError, match="valid: pk"):
        build_train_loader(splits, 32, 16, batch_size=8, sampler="softmax")


def test_test_loader_keeps_record_order(sysu_splits):
    loader = build_test_loader(sysu_splits.query, 32, 16, batch_size=5)
    pids, camids, mods = [], [], []
    for batch in loader:
        assert set(batch) == {"images", "pids", "camids", "modality"}
        pids += batch["pids"].tolist()
        camids += batch["camids"].tolist()
        mods += batch["modality"].tolist()
    assert pids == [r.pid for r in sysu_splits.query] and camids == [r.camid for r in sysu_splits.query]
    assert set(mods) == {1}
    again = _first_batch(loader)["images"]
    assert torch.equal(again, _first_batch(loader)["images"])  # no randomness at test time
