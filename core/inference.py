"""Feature extraction and the evaluation protocol each dataset calls for (Market/Duke, SYSU-MM01, RegDB)."""
from __future__ import annotations

import numpy as np
import torch

from core.catalogue import REGDB, REID, SYSU, dataset as dataset_entry
from core.config import Config
from core.data import DatasetError, DatasetSplits
from core.eval import evaluate_rank, evaluate_regdb_both, evaluate_sysu, metrics_to_percent, normalize, \
    pairwise_distance
from core.eval.diagnostics import EVAL_MAX_PAIRS, EVAL_MAX_PER_IDENTITY, angle_samples, modality_gap, norm_stats, \
    pair_angles, per_identity_sample, summarize_angles
from core.eval.sysu import GALLERY_CAMS, SHOT_SIZE, sysu_exclusion
from core.names import DIAG_PREFIX, EVAL_METRICS, REGDB_DIRECTIONS, diag_norm_key


@torch.inference_mode()
def extract_features(model: torch.nn.Module, loader, device: torch.device, norms: bool = False) -> tuple:
    """Test features in record order, each image through its own modality's BN (CS-BN is modality-specific):
    ``(features, pids, camids, modalities)``; with ``norms`` also the L2 norms of each test feature and of its
    pre-neck pooled feature (the same forward pass), taken batch by batch so the pooled features are never kept."""
    was_training = model.training
    model.eval()
    feats, feat_norms, pooled_norms, pids, camids, mods = [], [], [], [], [], []
    for batch in loader:
        images, modality = batch["images"].to(device, non_blocking=True), batch["modality"].to(device)
        if norms:
            feat, pooled = model.test_and_pooled(images, modality=modality)
            feat_norms.append(feat.float().norm(dim=1).cpu())
            pooled_norms.append(pooled.float().norm(dim=1).cpu())
        else:
            feat = model(images, modality=modality)
        feats.append(feat.float().cpu())
        pids.append(batch["pids"].numpy())
        camids.append(batch["camids"].numpy())
        mods.append(batch["modality"].numpy())
    model.train(was_training)
    out = (torch.cat(feats), np.concatenate(pids), np.concatenate(camids), np.concatenate(mods))
    return (*out, torch.cat(feat_norms), torch.cat(pooled_norms)) if norms else out


def evaluate(model: torch.nn.Module, cfg: Config, splits: DatasetSplits, query_loader, gallery_loader,
             device: torch.device, samples: dict | None = None) -> dict[str, float]:
    """Rank-k, mAP and mINP in percent under the dataset's protocol; with ``eval.diagnostics`` also the ``diag.*``
    metrics of :func:`diagnostics`, and ``samples`` (when given) receives their angle samples."""
    diag = cfg.eval.diagnostics
    qf, q_pids, q_cams, q_mods, *q_norms = extract_features(model, query_loader, device, norms=diag)
    gf, g_pids, g_cams, g_mods, *g_norms = extract_features(model, gallery_loader, device, norms=diag)
    if cfg.eval.feat_norm:
        qf, gf = normalize(qf), normalize(gf)
    q, g = (q_pids, q_cams, q_mods), (g_pids, g_cams, g_mods)
    out = _PROTOCOLS[dataset_entry(cfg).protocol](qf, gf, q, g, cfg.eval)
    if diag:
        norms = {"": torch.cat([q_norms[0], g_norms[0]]), "pooled_": torch.cat([q_norms[1], g_norms[1]])}
        metrics, angles = diagnostics(cfg, qf, gf, q, g, norms)
        out.update(metrics)
        if samples is not None:
            samples.update(angles)
    return out


def diagnostics(cfg: Config, qf, gf, q, g, norms: dict) -> tuple[dict[str, float], dict[str, list]]:
    """``(diag.* metrics, angle samples)`` of one evaluation (core.eval.diagnostics): angles over the pairs the
    protocol counts (``_DIAG_PAIRS``; a fixed-seed sample of whole queries beyond ``EVAL_MAX_PAIRS``); per modality
    the mean and std of ``norms`` (``{"": test-feature norms before eval.feat_norm, "pooled_": pre-neck norms}``,
    query rows then gallery rows, as :func:`extract_features` takes them); on cross-modal data the modality gap of
    the features as the evaluation ranks them (``qf``, ``gf``; a fixed-seed sample of ``EVAL_MAX_PER_IDENTITY``
    images per identity and modality)."""
    entry = dataset_entry(cfg)
    pos, neg, min_neg, max_pos = pair_angles(*_DIAG_PAIRS[entry.protocol](qf, gf, q, g, cfg.eval),
                                             max_pairs=EVAL_MAX_PAIRS)
    out = summarize_angles(pos, neg, min_neg, max_pos)
    mods = np.concatenate([q[2], g[2]])
    for prefix, values in norms.items():
        for m, (mean, std) in norm_stats(values, mods).items():
            out[diag_norm_key(prefix, m, "mean")], out[diag_norm_key(prefix, m, "std")] = mean, std
    if entry.cross_modal:
        pids = np.concatenate([q[0], g[0]])
        rows = per_identity_sample(pids, mods, EVAL_MAX_PER_IDENTITY)
        split = np.searchsorted(rows, len(qf))  # rows are ascending: the query rows first, then the gallery's
        feats = torch.cat([qf[torch.from_numpy(rows[:split])], gf[torch.from_numpy(rows[split:] - len(qf))]])
        out.update(modality_gap(feats, pids[rows], mods[rows]))
    return {DIAG_PREFIX + k: v for k, v in out.items()}, angle_samples(pos, neg)


# protocol (core.catalogue) -> the pairs its diagnostics count: (query features, gallery features, query pids,
# gallery pids, exclusion). Cross-modal protocols pair one modality with the other (SYSU: IR queries against the
# mode's RGB cameras, camera-3 queries ignoring camera 2; RegDB: the configured direction); Market/Duke count the
# cross-camera pairs.
_DIAG_PAIRS = {
    REID: lambda qf, gf, q, g, e: (qf, gf, q[0], g[0], lambda rows: q[1][rows, None] == g[1][None, :]),
    SYSU: lambda qf, gf, q, g, e: (qf, gf, q[0], g[0], _sysu_pairs(q[1], g[1], e.sysu_mode)),
    REGDB: lambda qf, gf, q, g, e: _regdb_pairs(torch.cat([qf, gf]), np.concatenate([q[0], g[0]]),
                                                np.concatenate([q[2], g[2]]) == _QUERY_MODALITY[e.regdb_direction]),
}


_QUERY_MODALITY = {"v2t": 0, "t2v": 1}  # RegDB: which modality queries in each direction (0 visible, 1 thermal)


def _sysu_pairs(q_cams: np.ndarray, g_cams: np.ndarray, mode: str):
    """SYSU's exclusion over the whole gallery: images outside the mode's cameras, and camera 2 for a camera-3
    query (excluded rather than indexed out: a copy of the gallery would cost more than the diagnostics)."""
    outside = ~np.isin(g_cams, GALLERY_CAMS[mode])[None, :]
    rule = sysu_exclusion(q_cams, g_cams)
    return (lambda rows: outside) if rule is None else (lambda rows: outside | rule(rows))


def _regdb_pairs(feats: torch.Tensor, pids: np.ndarray, is_query: np.ndarray):
    """The configured direction's queries (visible for v2t, thermal for t2v) against the other modality."""
    return feats[torch.from_numpy(is_query)], feats[torch.from_numpy(~is_query)], pids[is_query], pids[~is_query], None


def _reid(qf, gf, q, g, e) -> dict[str, float]:
    """Market-1501 / DukeMTMC-reID: every query against the gallery, same identity and camera removed."""
    (q_pids, q_cams, _), (g_pids, g_cams, _) = q, g
    distmat = pairwise_distance(qf, gf, metric=e.metric)
    cmc, mAP, mINP = evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=50)
    return metrics_to_percent(cmc, mAP, mINP)


def _regdb(qf, gf, q, g, e) -> dict[str, float]:
    return _regdb_both_directions(torch.cat([qf, gf]), np.concatenate([q[0], g[0]]), np.concatenate([q[2], g[2]]),
                                  e.regdb_direction, e.metric)


def _sysu(qf, gf, q, g, e) -> dict[str, float]:
    return _sysu_settings(qf, gf, q[0], g[0], q[1], g[1], e)


def _regdb_both_directions(feats: torch.Tensor, pids: np.ndarray, mods: np.ndarray, direction: str,
                           metric: str) -> dict[str, float]:
    """The configured direction as the main metrics, plus rank-1 and mAP of both directions (``*_v2t``, ``*_t2v``)."""
    visible = mods == 0
    both = evaluate_regdb_both(feats[torch.from_numpy(visible)], feats[torch.from_numpy(~visible)], pids[visible],
                               pids[~visible], metric=metric)
    out = _percent(both[direction])
    for name in REGDB_DIRECTIONS:
        out[f"rank1_{name}"] = float(both[name]["rank1"]) * 100.0
        out[f"mAP_{name}"] = float(both[name]["mAP"]) * 100.0
    return out


def check_evaluable(cfg: Config, splits: DatasetSplits) -> None:
    """Refuse data that training would only find unusable at its first evaluation: an empty query or gallery (all
    skipped as corrupt, say) or no query with a true match under the dataset's protocol."""
    for role in ("query", "gallery"):
        if not getattr(splits, role):
            raise DatasetError(f"{cfg.data.dataset}: the {role} set is empty (every file missing or skipped as "
                               f"corrupt?); check data.root={cfg.data.root or '(generated)'}")
    # (camera, modality) pairs of each gallery identity; a query needs one that its protocol keeps.
    views: dict[int, set] = {}
    for r in splits.gallery:
        views.setdefault(r.pid, set()).add((r.camid, r.modality))
    keeps, rule = _MATCH_RULES[dataset_entry(cfg).protocol](cfg.eval)
    matched = any(keeps(q, cam, mod) for q in splits.query for cam, mod in views.get(q.pid, ()))
    if not matched:
        raise DatasetError(f"{cfg.data.dataset}: no query has a true match in the gallery under the {rule} rule, so "
                           f"nothing could be evaluated; check the query and gallery folders under data.root")


def _sysu_match(e):
    cams = GALLERY_CAMS[e.sysu_mode]
    return ((lambda q, cam, mod: cam in cams and not (q.camid == 3 and cam == 2)),
            f"SYSU-MM01 {e.sysu_mode}-search (camera-3 queries ignore camera 2)")


# protocol (core.catalogue) -> whether a gallery (camera, modality) counts as a true match of query q, and the
# rule's name; query and gallery of RegDB are the two modalities of the same test identities
_MATCH_RULES = {
    REID: lambda e: ((lambda q, cam, mod: cam != q.camid), "Market/Duke (same identity and camera removed)"),
    SYSU: _sysu_match,
    REGDB: lambda e: ((lambda q, cam, mod: mod != q.modality), "RegDB (the other modality)"),
}


def _sysu_settings(qf, gf, q_pids, g_pids, q_cams, g_cams, e) -> dict[str, float]:
    """The configured SYSU-MM01 setting as the main metrics; with ``eval.sysu_all_settings`` also rank-1 and mAP of
    all four (``rank1_all_single``, ``mAP_indoor_multi``, ...), as papers report them."""
    settings = [(m, s) for m in GALLERY_CAMS for s in SHOT_SIZE] if e.sysu_all_settings else [(e.sysu_mode,
                                                                                             e.sysu_shot)]
    out = {}
    for mode, shot in settings:
        res = _percent(evaluate_sysu(qf, gf, q_pids, g_pids, q_cams, g_cams, mode=mode, shot=shot,
                                     num_trials=e.trials, seed=e.trial_seed, metric=e.metric, cmc=e.sysu_cmc))
        if (mode, shot) == (e.sysu_mode, e.sysu_shot):
            out.update(res)
        if e.sysu_all_settings:
            out.update({f"rank1_{mode}_{shot}": res["rank1"], f"mAP_{mode}_{shot}": res["mAP"]})
    return out


def _percent(res: dict) -> dict[str, float]:
    return {k: float(res[k]) * 100.0 for k in EVAL_METRICS}


# protocol (core.catalogue) -> its evaluation: (query features, gallery features, query (pids, cams, modalities),
# gallery (...), eval config) -> metrics in percent
_PROTOCOLS = {REID: _reid, SYSU: _sysu, REGDB: _regdb}
