"""The trainer evaluates each dataset under its own protocol, with the configured settings.

A short training run reports its metrics; the test then extracts the features itself from the trained model
(eval mode, each image through its own modality) and recomputes the metrics with a plain numpy reference: a stable
argsort per query, the protocol's excluded gallery items removed, CMC / AP / INP counted by hand. The trainer's
numbers must equal the reference's, and the reference under a wrong setting (another rule, seed, normalisation or
modality) must differ, so each setting is shown to matter in the case tested.
"""
from pathlib import Path

import numpy as np
import pytest
import torch

from core.config import load_config
from core.engine import Trainer

# On the CPU: the reference features are computed here from CPU tensors (on a GPU machine run.device=auto would put
# the model on the GPU).
TINY = {"data.synthetic_ids": 16, "solver.epochs": 1, "solver.max_steps_per_epoch": 2, "data.batch_size": 16,
        "run.progress": False, "data.height": 32, "data.width": 16, "run.device": "cpu"}
KEYS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")


def _trained(preset: str, overrides: dict) -> tuple[Trainer, dict]:
    trainer = Trainer(load_config(preset, {**TINY, **overrides}), log=lambda s: None)
    return trainer, trainer.fit().final


@torch.no_grad()
def _features(model, loader, records) -> np.ndarray:
    """float64 features in record order, each image through the BN of the modality its record names."""
    model.eval()
    batches = list(loader)
    images = torch.cat([b["images"] for b in batches])
    assert torch.cat([b["pids"] for b in batches]).tolist() == [r.pid for r in records]  # record order
    mods = torch.tensor([r.modality for r in records])
    feats = torch.empty(len(records), model.feat_dim, dtype=torch.float64)
    for m in mods.unique():
        rows = (mods == m).nonzero().flatten()
        feats[rows] = model(images[rows], modality=torch.full((len(rows),), int(m))).double()
    return feats.numpy()


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _sqdist(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    return ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)


def _reference(dist: np.ndarray, q_pids, g_pids, keep: np.ndarray) -> dict:
    """Percent metrics from ``dist`` with ``keep[i, j]`` false for gallery items query ``i`` must ignore; queries
    without a kept true match are left out (as every re-id evaluation does)."""
    firsts, aps, inps = [], [], []
    for i in range(dist.shape[0]):
        order = [j for j in np.argsort(dist[i], kind="stable") if keep[i, j]]
        hits = [pos for pos, j in enumerate(order) if g_pids[j] == q_pids[i]]  # 0-based positions of true matches
        if not hits:
            continue
        firsts.append(hits[0] + 1)
        aps.append(np.mean([(k + 1) / (pos + 1) for k, pos in enumerate(hits)]))
        inps.append(len(hits) / (hits[-1] + 1))
    assert firsts, "no query has a true match"
    firsts = np.array(firsts)
    out = {f"rank{k}": 100.0 * np.mean(firsts <= k) for k in (1, 5, 10, 20)}
    out.update(mAP=100.0 * np.mean(aps), mINP=100.0 * np.mean(inps))
    return out


def _assert_metrics(got: dict, expected: dict):
    for k in KEYS:
        assert got[k] == pytest.approx(expected[k], abs=1e-4), (k, got, expected)


def _differs(a: dict, b: dict) -> bool:
    return any(abs(a[k] - b[k]) > 1e-3 for k in KEYS)


# --- SYSU-MM01 ------------------------------------------------------------------------------------------------
SYSU_CAMS = {"all": (1, 2, 4, 5), "indoor": (1, 2)}


def _sysu_gallery(g_pids, g_cams, mode: str, shot: str, seed: int) -> np.ndarray:
    """Gallery indices of one trial, drawn as ``core.eval.sysu`` documents: over the pool of the mode's cameras
    (in gallery order), ``default_rng(seed).random(pool size)`` gives each image a key; each (pid, camera) keeps
    its image with the smallest key (single-shot) or all of its <= 10 images (multi-shot)."""
    pool = [j for j in range(len(g_pids)) if g_cams[j] in SYSU_CAMS[mode]]
    u = np.random.default_rng(seed).random(len(pool))
    groups: dict = {}
    for j, key in zip(pool, u):
        groups.setdefault((g_pids[j], g_cams[j]), []).append((key, j))
    chosen = []
    for members in groups.values():
        if shot == "single":
            chosen.append(min(members)[1])
        else:
            assert len(members) <= 10  # multi-shot then keeps every image: the draw cannot matter
            chosen.extend(j for _, j in members)
    return np.array(sorted(chosen))


def _sysu_reference(qf, gf, q_pids, g_pids, q_cams, g_cams, mode, shot, trials, seed, cam3_ignores_cam2=True):
    per_trial = []
    for t in range(trials):
        cols = _sysu_gallery(g_pids, g_cams, mode, shot, seed + t)
        keep = np.ones((len(q_pids), len(cols)), dtype=bool)
        if cam3_ignores_cam2:
            keep &= ~((q_cams[:, None] == 3) & (g_cams[cols][None, :] == 2))
        per_trial.append(_reference(_sqdist(qf, gf[cols]), q_pids, g_pids[cols], keep))
    return {k: float(np.mean([m[k] for m in per_trial])) for k in KEYS}


def _arrays(records):
    return (np.array([r.pid for r in records]), np.array([r.camid for r in records]),
            np.array([r.modality for r in records]))


@pytest.mark.parametrize("settings", [
    {"eval.sysu_mode": "all", "eval.sysu_shot": "single", "eval.trials": 3, "eval.trial_seed": 7,
     "eval.feat_norm": True},
    {"eval.sysu_mode": "indoor", "eval.sysu_shot": "multi", "eval.trials": 2, "eval.trial_seed": 0,
     "eval.feat_norm": False},
], ids=["all-single-3trials-norm", "indoor-multi-nonorm"])
def test_sysu_layout_is_evaluated_with_the_sysu_rule_and_the_configured_settings(settings):
    trainer, metrics = _trained("quick", {**settings, "eval.metric": "sqeuclidean"})
    e = trainer.cfg.eval
    q_recs, g_recs = trainer.splits.query, trainer.splits.gallery
    q_pids, q_cams, q_mods = _arrays(q_recs)
    g_pids, g_cams, g_mods = _arrays(g_recs)
    assert set(q_cams) == {3, 6} and set(q_mods) == {1} and set(g_mods) == {0}  # IR query, RGB gallery
    assert set(g_cams) == {1, 2, 4, 5}
    raw_q = _features(trainer.model, trainer.query_loader, q_recs)
    raw_g = _features(trainer.model, trainer.gallery_loader, g_recs)
    norm = (lambda x: _l2(x)) if e.feat_norm else (lambda x: x)
    qf, gf = norm(raw_q), norm(raw_g)
    ref = lambda **kw: _sysu_reference(**{"qf": qf, "gf": gf, "q_pids": q_pids, "g_pids": g_pids,  # noqa: E731
                                          "q_cams": q_cams, "g_cams": g_cams, "mode": e.sysu_mode,
                                          "shot": e.sysu_shot, "trials": e.trials, "seed": e.trial_seed, **kw})
    expected = ref()
    _assert_metrics(metrics, expected)

    # Each setting matters here, so the equality above would catch its loss.
    assert _differs(expected, ref(cam3_ignores_cam2=False))  # the camera-3 / camera-2 rule
    assert _differs(expected, ref(mode="indoor" if e.sysu_mode == "all" else "all"))
    other_norm = (lambda x: x) if e.feat_norm else _l2
    assert _differs(expected, ref(qf=other_norm(raw_q), gf=other_norm(raw_g)))
    # IR queries through the RGB BN (a model evaluated without each image's modality)
    rgb_bn_q = _features(trainer.model, trainer.query_loader, [_as_rgb(r) for r in q_recs])
    assert _differs(expected, ref(qf=norm(rgb_bn_q)))
    if e.sysu_shot == "single":
        assert _differs(expected, ref(seed=e.trial_seed + 1))
        assert _differs(expected, ref(trials=1))
    # The Market rule (same pid and camera removed, whole gallery, no draw) gives other numbers.
    market_keep = ~((q_pids[:, None] == g_pids[None, :]) & (q_cams[:, None] == g_cams[None, :]))
    assert _differs(expected, _reference(_sqdist(qf, gf), q_pids, g_pids, market_keep))


def test_sysu_all_settings_logs_rank1_and_map_of_each_of_the_four_settings():
    """eval.sysu_all_settings=true: rank1_<mode>_<shot> and mAP_<mode>_<shot> of all four SYSU-MM01 settings, each
    equal to the reference evaluation of that setting; the main metrics stay those of the configured setting."""
    trainer, metrics = _trained("quick", {"eval.sysu_all_settings": True, "eval.sysu_mode": "indoor",
                                          "eval.sysu_shot": "single", "eval.trials": 2, "eval.trial_seed": 3,
                                          "eval.feat_norm": True, "eval.metric": "sqeuclidean"})
    q_recs, g_recs = trainer.splits.query, trainer.splits.gallery
    q_pids, q_cams, _ = _arrays(q_recs)
    g_pids, g_cams, _ = _arrays(g_recs)
    qf = _l2(_features(trainer.model, trainer.query_loader, q_recs))
    gf = _l2(_features(trainer.model, trainer.gallery_loader, g_recs))
    expected = {(mode, shot): _sysu_reference(qf, gf, q_pids, g_pids, q_cams, g_cams, mode, shot, 2, 3)
                for mode in SYSU_CAMS for shot in ("single", "multi")}
    for (mode, shot), ref in expected.items():
        assert metrics[f"rank1_{mode}_{shot}"] == pytest.approx(ref["rank1"], abs=1e-4), (mode, shot)
        assert metrics[f"mAP_{mode}_{shot}"] == pytest.approx(ref["mAP"], abs=1e-4), (mode, shot)
    _assert_metrics(metrics, expected["indoor", "single"])
    assert _differs(expected["all", "single"], expected["indoor", "single"])  # the settings are told apart here


def _as_rgb(record):
    from dataclasses import replace
    return replace(record, modality=0)


# --- RegDB ----------------------------------------------------------------------------------------------------
def _regdb_from_generated(root: Path, sysu_root: Path) -> None:
    """A RegDB layout (idx/*.txt + image folders) made of generated SYSU images: visible = cam1, thermal = cam3."""
    ids = sorted(p.name for p in (sysu_root / "cam1").iterdir())
    half = len(ids) // 2
    (root / "idx").mkdir(parents=True)
    for split, chosen in (("train", ids[:half]), ("test", ids[half:])):
        for name, cam in (("visible", 1), ("thermal", 3)):
            lines = []
            for pid in chosen:
                folder = root / name / pid
                folder.mkdir(parents=True, exist_ok=True)
                for img in sorted((sysu_root / f"cam{cam}" / pid).glob("*.jpg")):
                    (folder / img.name).write_bytes(img.read_bytes())
                    lines.append(f"{name}/{pid}/{img.name} {int(pid)}")
            (root / "idx" / f"{split}_{name}_1.txt").write_text("\n".join(lines) + "\n")


def test_regdb_layout_is_evaluated_in_both_directions_without_exclusion(tmp_path):
    from core.factory import build_dataset
    sysu = build_dataset(load_config("quick", {"data.synthetic_ids": 16}))
    _regdb_from_generated(tmp_path / "RegDB", Path(sysu.query[0].path).parents[2])
    trainer, m = _trained("quick", {"data.dataset": "regdb", "data.root": str(tmp_path / "RegDB"),
                                    "eval.regdb_direction": "t2v", "eval.feat_norm": True})
    recs = list(trainer.splits.query) + list(trainer.splits.gallery)
    feats = np.concatenate([_features(trainer.model, trainer.query_loader, trainer.splits.query),
                            _features(trainer.model, trainer.gallery_loader, trainer.splits.gallery)])
    feats = _l2(feats)
    pids, _, mods = _arrays(recs)
    vis, the = mods == 0, mods == 1
    assert vis.any() and the.any()
    v2t = _reference(_sqdist(feats[vis], feats[the]), pids[vis], pids[the],
                     np.ones((vis.sum(), the.sum()), dtype=bool))
    t2v = _reference(_sqdist(feats[the], feats[vis]), pids[the], pids[vis],
                     np.ones((the.sum(), vis.sum()), dtype=bool))
    _assert_metrics(m, t2v)  # the configured direction gives the main metrics
    for name, ref in (("v2t", v2t), ("t2v", t2v)):
        assert m[f"rank1_{name}"] == pytest.approx(ref["rank1"], abs=1e-4)
        assert m[f"mAP_{name}"] == pytest.approx(ref["mAP"], abs=1e-4)
    assert _differs(v2t, t2v)  # the two directions are not the same numbers


# --- Market-1501 ----------------------------------------------------------------------------------------------
def test_market_layout_removes_same_pid_same_camera_and_keeps_distractors():
    trainer, m = _trained("quick_market", {"eval.feat_norm": True, "eval.metric": "sqeuclidean"})
    q_recs, g_recs = trainer.splits.query, trainer.splits.gallery
    q_pids, q_cams, _ = _arrays(q_recs)
    g_pids, g_cams, _ = _arrays(g_recs)
    assert (g_pids == 0).any() and not (g_pids == -1).any()  # distractors kept, junk dropped by the parser
    qf = _l2(_features(trainer.model, trainer.query_loader, q_recs))
    gf = _l2(_features(trainer.model, trainer.gallery_loader, g_recs))
    same_view = (q_pids[:, None] == g_pids[None, :]) & (q_cams[:, None] == g_cams[None, :])
    assert same_view.any()  # the rule has something to remove in this data
    expected = _reference(_sqdist(qf, gf), q_pids, g_pids, ~same_view)
    _assert_metrics(m, expected)
    assert _differs(expected, _reference(_sqdist(qf, gf), q_pids, g_pids, np.ones_like(same_view)))


# --- embedding diagnostics (diag.*) -----------------------------------------------------------------------------
def _angle_reference(qf, gf, q_pids, g_pids, keep) -> dict:
    """The diag angle metrics of the pairs ``keep`` by hand: degrees between L2-normalised rows, the AUC as a direct
    count over every (positive, negative) pair (ties one half), the margins query by query."""
    angle = np.degrees(np.arccos(np.clip(_l2(qf) @ _l2(gf).T, -1.0, 1.0)))
    same = q_pids[:, None] == g_pids[None, :]
    pos, neg = angle[same & keep], angle[~same & keep]
    auc = ((pos[:, None] < neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (pos.size * neg.size)
    margins = np.array([angle[i][~same[i] & keep[i]].min() - angle[i][same[i] & keep[i]].max()
                        for i in range(len(q_pids)) if (same[i] & keep[i]).any() and (~same[i] & keep[i]).any()])
    return {"diag.pos_angle_mean": pos.mean(), "diag.pos_angle_p50": np.median(pos), "diag.neg_angle_mean": neg.mean(),
            "diag.neg_angle_p95": np.percentile(neg, 95), "diag.angle_auc": auc,
            "diag.separable_fraction": np.mean(margins > 0), "diag.margin_mean": margins.mean()}


def _assert_diag(got: dict, expected: dict):
    for k, v in expected.items():
        assert got[k] == pytest.approx(v, abs=1e-3), (k, got[k], v)


@torch.no_grad()
def _pooled(model, loader) -> np.ndarray:
    """The pre-neck feature by hand: the backbone's map, average-pooled (no neck, so no modality)."""
    model.eval()
    images = torch.cat([b["images"] for b in loader])
    return torch.nn.functional.adaptive_avg_pool2d(model.backbone(images), 1).flatten(1).double().numpy()


def _norms(feats, mods, m) -> tuple:
    n = np.linalg.norm(feats[mods == m], axis=1)
    return n.mean(), n.std()


def test_sysu_diagnostics_pair_ir_queries_with_the_modes_rgb_cameras_under_the_camera_rule():
    from core.eval.diagnostics import EVAL_MAX_PAIRS
    trainer, m = _trained("quick", {"eval.sysu_mode": "indoor", "eval.feat_norm": False, "eval.trials": 1})
    q_recs, g_recs = trainer.splits.query, trainer.splits.gallery
    q_pids, q_cams, q_mods = _arrays(q_recs)
    g_pids, g_cams, g_mods = _arrays(g_recs)
    assert len(q_recs) * len(g_recs) <= EVAL_MAX_PAIRS  # every pair counts: no sampling in this test
    qf = _features(trainer.model, trainer.query_loader, q_recs)
    gf = _features(trainer.model, trainer.gallery_loader, g_recs)
    in_mode = np.isin(g_cams, SYSU_CAMS["indoor"])[None, :]
    cam_rule = (q_cams[:, None] == 3) & (g_cams[None, :] == 2)
    expected = _angle_reference(qf, gf, q_pids, g_pids, in_mode & ~cam_rule)
    _assert_diag(m, expected)
    # both parts of the pair rule change the numbers here, so the equality above would catch the loss of either
    for other in (in_mode & np.ones_like(cam_rule), np.ones_like(cam_rule) & ~cam_rule):
        assert abs(_angle_reference(qf, gf, q_pids, g_pids, other)["diag.neg_angle_mean"]
                   - expected["diag.neg_angle_mean"]) > 1e-3
    # norms per modality: the test feature (no eval.feat_norm here) and the pooled pre-neck feature
    feats, mods = np.concatenate([qf, gf]), np.concatenate([q_mods, g_mods])
    pooled = np.concatenate([_pooled(trainer.model, trainer.query_loader),
                             _pooled(trainer.model, trainer.gallery_loader)])
    for name, mod in (("rgb", 0), ("ir", 1)):
        for prefix, f in (("", feats), ("pooled_", pooled)):
            mean, std = _norms(f, mods, mod)
            assert m[f"diag.{prefix}norm_{name}_mean"] == pytest.approx(mean, rel=1e-4)
            assert m[f"diag.{prefix}norm_{name}_std"] == pytest.approx(std, rel=1e-3)
    # modality gap, on the evaluation's sample of at most EVAL_MAX_PER_IDENTITY images per identity and modality
    # (core.eval.diagnostics.per_identity_sample, tested by hand on its own): centroid distance over the mean
    # distance to one's own modality centroid
    from core.eval.diagnostics import EVAL_MAX_PER_IDENTITY, per_identity_sample
    pids = np.concatenate([q_pids, g_pids])
    rows = per_identity_sample(pids, mods, EVAL_MAX_PER_IDENTITY)
    assert len(rows) < len(pids)  # the sample leaves images out in this data
    feats, mods, pids = feats[rows], mods[rows], pids[rows]
    centre = [feats[mods == k].mean(axis=0) for k in (0, 1)]
    spread = np.mean([np.linalg.norm(x - centre[k]) for x, k in zip(feats, mods)])
    assert m["diag.modality_gap"] == pytest.approx(np.linalg.norm(centre[0] - centre[1]) / spread, rel=1e-4)
    # angle shift: same-identity pairs across modalities minus those within one modality
    angle = np.degrees(np.arccos(np.clip(_l2(feats) @ _l2(feats).T, -1.0, 1.0)))
    pair = np.triu(pids[:, None] == pids[None, :], k=1)
    across = mods[:, None] != mods[None, :]
    shift = angle[pair & across].mean() - angle[pair & ~across].mean()
    assert m["diag.modality_angle_shift"] == pytest.approx(shift, abs=1e-3)
    # the angle samples of the last evaluation: here every counted angle (fewer than the sample size)
    same = q_pids[:, None] == g_pids[None, :]
    keep = in_mode & ~cam_rule
    all_pos = np.sort(np.degrees(np.arccos(np.clip(_l2(qf) @ _l2(gf).T, -1, 1)))[same & keep])
    assert trainer.angle_samples["pos"] == pytest.approx(all_pos, abs=0.011)


def test_market_diagnostics_count_the_cross_camera_pairs():
    trainer, m = _trained("quick_market", {"eval.feat_norm": True})
    q_recs, g_recs = trainer.splits.query, trainer.splits.gallery
    q_pids, q_cams, _ = _arrays(q_recs)
    g_pids, g_cams, _ = _arrays(g_recs)
    qf = _features(trainer.model, trainer.query_loader, q_recs)
    gf = _features(trainer.model, trainer.gallery_loader, g_recs)
    cross_camera = q_cams[:, None] != g_cams[None, :]
    expected = _angle_reference(qf, gf, q_pids, g_pids, cross_camera)
    _assert_diag(m, expected)
    ranking_rule = ~((q_pids[:, None] == g_pids[None, :]) & ~cross_camera)  # what the rank metrics drop
    assert abs(_angle_reference(qf, gf, q_pids, g_pids, ranking_rule)["diag.neg_angle_mean"]
               - expected["diag.neg_angle_mean"]) > 1e-3
    assert not any(k.startswith("diag.norm_ir") or k.startswith("diag.modality") for k in m)  # one modality
    norms = np.linalg.norm(np.concatenate([qf, gf]), axis=1)  # before eval.feat_norm, which makes them all 1
    assert m["diag.norm_rgb_mean"] == pytest.approx(norms.mean(), rel=1e-4)
    assert m["diag.norm_rgb_std"] == pytest.approx(norms.std(), rel=1e-3)


def test_diagnostics_off_logs_no_diag_or_train_metrics():
    trainer, _ = _trained("quick", {"eval.diagnostics": False, "solver.epochs": 2})
    assert len(trainer.history) == 2
    assert not [k for h in trainer.history for k in h if k.startswith(("diag.", "train."))]
    assert trainer.angle_samples == {}
