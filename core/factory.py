"""Config -> parts: the one place that maps schema keys onto the data, model and loss constructors."""
from __future__ import annotations

import dataclasses
import hashlib
import sys
from pathlib import Path

import torch

from core.catalogue import dataset as dataset_entry
from core.config import PRETRAINED_NONE, PRETRAINED_REQUIRED, Config, ConfigError, copy_config, is_cross_modal, \
    resolved_neck
from core.data import DatasetSplits, build_splits, build_test_loader, build_train_loader, cache_base, \
    hold_out_identities, validate_splits_cached
from core.inference import check_evaluable
from core.losses import build_criterion
from core.models import ReIDModel
from core.models.backbone import PretrainedError, read_pretrained
from core.necks import NECKS

def check_inputs(cfg: Config) -> None:
    """What a run reads from disk must be named before it starts (a study's plan can be shown without them):
    ``data.root`` for a dataset on disk, and ``model.pretrained``, which must then be a file here (and on every node
    that trains it). The paper presets say ``required``: their numbers come from ImageNet weights, so training from
    random weights must be asked for (``none``) rather than happen because the path was forgotten."""
    d = cfg.data
    if dataset_entry(cfg).on_disk and not d.root:
        raise ConfigError(f"data.root is empty but data.dataset={d.dataset} reads a dataset from disk; "
                          f"set data.root=/path/to/{d.dataset}")
    if cfg.model.pretrained == PRETRAINED_REQUIRED:
        raise ConfigError(f"model.pretrained: this preset trains from ImageNet weights; pass "
                          f"model.pretrained=/path/to/{cfg.model.arch}.pth (a local torchvision state dict), or "
                          f"model.pretrained=none to train from random weights")
    if pretrained_path(cfg) and Path(cfg.model.pretrained).expanduser().is_dir():
        raise ConfigError(f"model.pretrained: '{cfg.model.pretrained}' is a folder, expected a weights file; pass the "
                          f"path of a local torchvision ResNet state dict")
    if pretrained_path(cfg) and not Path(cfg.model.pretrained).expanduser().is_file():
        raise ConfigError(f"model.pretrained: file '{cfg.model.pretrained}' does not exist; pass the path of a "
                          f"local torchvision ResNet state dict (every node of a study must see it), or leave "
                          f"model.pretrained empty")
    if pretrained_path(cfg):
        check_pretrained(cfg.model.pretrained, cfg.model.arch)
        warn_unexpected_pretrained(cfg)


_CHECKED: dict[tuple, str | None] = {}  # (file, size, mtime, arch) -> the problem, None if fine: each file read once


def check_pretrained(path: str, arch: str) -> None:
    """``model.pretrained`` is a state dict that loads into ``arch``'s backbone (``torch.load`` with
    ``weights_only``, keys and shapes), refused in one line naming the file and the problem otherwise: a random or
    truncated file, a text file or another network's weights would otherwise fail only once the model is built."""
    file = Path(path).expanduser()
    try:
        st = file.stat()
        key = (str(file.resolve()), st.st_size, st.st_mtime_ns, arch)
    except OSError as exc:
        raise ConfigError(f"model.pretrained: file '{path}' cannot be read ({exc.strerror})") from None
    if key not in _CHECKED:
        try:
            read_pretrained(file, arch)
            _CHECKED[key] = None
        except PretrainedError as exc:
            _CHECKED[key] = exc.problem
        except OSError as exc:
            _CHECKED[key] = f"cannot be read ({exc.strerror or exc})"
    if _CHECKED[key]:
        raise ConfigError(f"model.pretrained: file '{path}' {_CHECKED[key]}; pass a local torchvision "
                          f"{arch} state dict, or model.pretrained=none to train from random weights")


_SHA256: dict[tuple, str] = {}  # (file, size, mtime) -> its sha256: each file version hashed once
_WARNED: set[tuple] = set()  # (file, expected prefix) already warned about


def pretrained_sha256(path: str) -> str:
    """The sha256 of a weights file (hex), as ``sha256sum`` prints it."""
    file = Path(path).expanduser().resolve()
    st = file.stat()
    key = (str(file), st.st_size, st.st_mtime_ns)
    if key not in _SHA256:
        with file.open("rb") as f:
            _SHA256[key] = hashlib.file_digest(f, "sha256").hexdigest()
    return _SHA256[key]


def warn_unexpected_pretrained(cfg: Config) -> None:
    """One stderr line (once per file) when ``model.pretrained`` is not the file ``model.pretrained_expected``
    names: the run still trains, from other starting weights than the preset's numbers came from."""
    expected, path = cfg.model.pretrained_expected, cfg.model.pretrained
    digest = pretrained_sha256(path)
    if expected == "any" or digest.startswith(expected) or (path, expected) in _WARNED:
        return
    _WARNED.add((path, expected))
    print(f"warning: model.pretrained '{path}' has sha256 {digest[:8]}..., not the expected "
          f"{cfg.model.arch}-{expected[:8]}.pth (sha256 {expected}...); training goes on from these weights "
          f"(set model.pretrained_expected=any to silence this)", file=sys.stderr)


def with_pretrained_sha256(cfg: Config) -> Config:
    """A copy of ``cfg`` whose ``model.pretrained_sha256`` is the hash of the weights it loads ("" without a file),
    so params, config.yaml and checkpoints record which file a run started from."""
    out = copy_config(cfg)
    path = pretrained_path(cfg)
    out.model.pretrained_sha256 = pretrained_sha256(path) if path else ""
    return out


def pretrained_path(cfg: Config) -> str | None:
    """The weights file to load, or None for random initialisation (``model.pretrained`` empty or ``none``)."""
    return None if cfg.model.pretrained in ("", PRETRAINED_NONE) else cfg.model.pretrained


def resolve_data_root(cfg: Config) -> str:
    """An absolute dataset root; a generated dataset without a root goes to the shared cache, one folder per
    generator setting (so studies with different settings never overwrite each other's data)."""
    d = cfg.data
    if not dataset_entry(cfg).on_disk and not d.root:
        return str(cache_base() / f"{d.dataset}-ids{d.synthetic_ids}-seed{d.synthetic_seed}")
    return str(Path(d.root).expanduser().resolve())


def dataset_key(cfg: Config) -> tuple:
    """Everything ``build_dataset`` reads: two configs with the same key get the same splits."""
    entry = dataset_entry(cfg)
    return (entry.name, resolve_data_root(cfg), tuple(sorted(entry.loader_options(cfg).items())),
            cfg.data.on_corrupt, cfg.eval.split, cfg.eval.val_fraction, cfg.eval.val_seed)


def build_dataset(cfg: Config) -> DatasetSplits:
    """Parse (or generate, then parse) the dataset and check every image decodes (``data.on_corrupt``)."""
    entry = dataset_entry(cfg)
    splits = build_splits(entry.name, resolve_data_root(cfg), **entry.loader_options(cfg))
    splits = validate_splits_cached(splits, cfg.data.on_corrupt)  # decodes every file once per machine
    if cfg.eval.split == "val" and not entry.own_val_split:  # SYSU's parser reads its own val ids
        splits = hold_out_identities(splits, cfg.eval.val_fraction, cfg.eval.val_seed)
    check_evaluable(cfg, splits)
    return splits


def build_loaders(cfg: Config, splits: DatasetSplits):
    d = cfg.data
    train = build_train_loader(splits, height=d.height, width=d.width, batch_size=d.batch_size,
                               num_instances=d.num_instances, sampler=d.sampler, seed=cfg.solver.seed,
                               num_workers=d.num_workers, flip_prob=d.flip_prob, padding=d.padding,
                               erasing_prob=d.erasing_prob)
    query = build_test_loader(splits.query, height=d.height, width=d.width, batch_size=cfg.eval.batch_size,
                              num_workers=d.num_workers)
    gallery = build_test_loader(splits.gallery, height=d.height, width=d.width, batch_size=cfg.eval.batch_size,
                                num_workers=d.num_workers)
    return train, query, gallery


def build_model(cfg: Config, num_classes: int) -> ReIDModel:
    m, neck = cfg.model, resolved_neck(cfg)
    return ReIDModel(arch=m.arch, num_classes=num_classes, neck=neck, last_stride=m.last_stride,
                     stem_relu=m.stem_relu, pretrained_path=pretrained_path(cfg),
                     num_modalities=2 if is_cross_modal(cfg) else 1,
                     # model.modality_specific_bn only chooses between csbn's two layouts (core.necks)
                     modality_specific=m.modality_specific_bn if NECKS[neck].per_modality else None,
                     bn_bias_learnable=m.bn_bias_learnable, test_feature=m.test_feature)


def build_loss(cfg: Config, num_classes: int, feat_dim: int) -> torch.nn.Module:
    return build_criterion(cfg.loss, num_classes=num_classes, feat_dim=feat_dim, cross_modal=is_cross_modal(cfg),
                           neck=resolved_neck(cfg))
