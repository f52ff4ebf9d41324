"""Feature extraction and the evaluation protocol each dataset calls for (Market/Duke, SYSU-MM01, RegDB)."""
from __future__ import annotations

import numpy as np
import torch

from core.catalogue import REGDB, REID, SYSU, dataset as dataset_entry
from core.config import Config
from core.data import DatasetError, DatasetSplits
from core.eval import evaluate_rank, evaluate_regdb_both, evaluate_sysu, metrics_to_percent, normalize, \
    pairwise_distance
from core.eval.sysu import GALLERY_CAMS, SHOT_SIZE
from core.names import EVAL_METRICS, REGDB_DIRECTIONS


@torch.inference_mode()
def extract_features(model: torch.nn.Module, loader, device: torch.device) -> tuple[torch.Tensor, np.ndarray,
                                                                                     np.ndarray, np.ndarray]:
    """Test features in record order, each image through its own modality's BN (CS-BN is modality-specific)."""
    was_training = model.training
    model.eval()
    feats, pids, camids, mods = [], [], [], []
    for batch in loader:
        images = batch["images"].to(device, non_blocking=True)
        feats.append(model(images, modality=batch["modality"].to(device)).float().cpu())
        pids.append(batch["pids"].numpy())
        camids.append(batch["camids"].numpy())
        mods.append(batch["modality"].numpy())
    model.train(was_training)
    return torch.cat(feats), np.concatenate(pids), np.concatenate(camids), np.concatenate(mods)


def evaluate(model: torch.nn.Module, cfg: Config, splits: DatasetSplits, query_loader, gallery_loader,
             device: torch.device) -> dict[str, float]:
    """Rank-k, mAP and mINP in percent under the dataset's protocol."""
    qf, q_pids, q_cams, q_mods = extract_features(model, query_loader, device)
    gf, g_pids, g_cams, g_mods = extract_features(model, gallery_loader, device)
    if cfg.eval.feat_norm:
        qf, gf = normalize(qf), normalize(gf)
    q, g = (q_pids, q_cams, q_mods), (g_pids, g_cams, g_mods)
    return _PROTOCOLS[dataset_entry(cfg).protocol](qf, gf, q, g, cfg.eval)


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
