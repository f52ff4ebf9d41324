"""The effective configuration of a training: ``auto`` and derived values resolved, and which keys it reads.

A config names every setting of the schema, but a given training reads only some of them: ``loss.margin`` means
nothing to expAT, ``model.modality_specific_bn`` nothing to a ``bnneck`` model. :func:`resolve` fills in what
``auto`` and ``None`` stand for (``model.neck`` -> the recipe's neck, ``loss.*_weight`` -> the recipe's weights),
and :func:`unread_keys` names each key the training does not read, with the reason. Callers use both to log what
ran, to refuse a setting that would change nothing, and to tell two trainings apart (:func:`signature`).

The knowledge comes from the parts themselves: each loss part declares the ``loss.*`` fields it reads
(``core.losses.recipes.TERMS``) and each neck its BN layout (``core.necks``); the few data/eval conditions are
listed once below, the dataset ones taken from the dataset catalogue (``core.catalogue``).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable

from core.catalogue import CATALOGUE, dataset as dataset_entry
from core.config import NOT_A_PATH, Config, ConfigError, copy_config, is_cross_modal, iteration_scheduled, \
    resolved_neck, schema_keys, to_flat_dict
from core.losses.recipes import WEIGHT_FIELD, recipe_reads, resolve_parts
from core.names import UNREAD
from core.necks import NECKS

# Where a key the training does not read has its meaning instead (added to the refusal).
_LOSS_HINTS = {
    "margin": "expAT's margin is loss.at_margin",
    "at_margin": "the triplet margin (triplet, bnneck) is loss.margin",
    "soft_margin": "it belongs to the triplet loss (loss.type=triplet or bnneck)",
    "center_weight": "only loss.type=expat_center has a center loss",
    "center_lr": "only loss.type=expat_center has a center loss",
}

# Conditions on data/eval/model keys: key -> (is it read?, why not). Everything not listed here or under
# loss.* is read by every training.
_Rule = tuple[Callable[[Config], bool], Callable[[Config], str]]
_RULES: dict[str, _Rule] = {
    "model.modality_specific_bn": (
        lambda c: NECKS[resolved_neck(c)].per_modality and is_cross_modal(c),
        lambda c: (f"with model.neck={resolved_neck(c)} (it chooses between csbn's per-modality and shared BN; "
                   f"bnneck always shares one BN, no has none)") if not NECKS[resolved_neck(c)].per_modality
        else f"on single-modality data (data.dataset={c.data.dataset}): there is one BN"),
    "model.test_feature": (lambda c: NECKS[resolved_neck(c)].batch_norm,
                           lambda c: "with model.neck=no: there is no BN, so no before/after"),
    "model.bn_bias_learnable": (lambda c: NECKS[resolved_neck(c)].batch_norm,
                                lambda c: "with model.neck=no: there is no BN"),
    **{key: (lambda c: c.model.pretrained not in NOT_A_PATH,
             lambda c: f"with model.pretrained={c.model.pretrained or '(empty)'}: no weights file is loaded")
       for key in ("model.pretrained_expected", "model.pretrained_sha256")},
    "eval.every_iters": (iteration_scheduled,
                         lambda c: "with solver.step_unit=epoch (evaluations follow eval.every epochs)"),
    "model.bn_groups": (lambda c: c.data.sampler == "triplets",
                        lambda c: f"with data.sampler={c.data.sampler} (it splits the random-triplet batches)"),
    "data.num_instances": (lambda c: c.data.sampler in ("pk", "cross_modal"),
                           lambda c: f"with data.sampler={c.data.sampler} (it is K of a P x K batch)"),
    # what a dataset reads beyond the common keys is its catalogue entry's (core.catalogue); SYSU layouts read
    # data.sysu_train_ids only on test (validation trains on train_id.txt)
    **{key: (lambda c, key=key: key in dataset_entry(c).options,
             lambda c, key=key, who=who: f"with data.dataset={c.data.dataset} ({who})")
       for key, who in {k: w for d in CATALOGUE.values() for k, w in d.options.items()}.items()},
    "data.sysu_train_ids": (lambda c: "data.sysu_train_ids" in dataset_entry(c).options and c.eval.split == "test",
                            lambda c: f"with data.dataset={c.data.dataset} (SYSU-MM01 layouts only)"
                            if "data.sysu_train_ids" not in dataset_entry(c).options else
                            "with eval.split=val (the training keeps to train_id.txt; val_id.txt is the validation)"),
    **{key: (lambda c: c.eval.split == "val" and not dataset_entry(c).own_val_split,
             lambda c: "with eval.split=test (it sizes the validation hold-out)" if c.eval.split == "test" else
             f"with data.dataset={c.data.dataset} (SYSU-MM01 validates on exp/val_id.txt)")
       for key in ("eval.val_fraction", "eval.val_seed")},
}



def resolve(cfg: Config) -> Config:
    """A copy with ``model.neck=auto`` and the ``None`` loss weights replaced by what the training uses."""
    out = copy_config(cfg)
    out.model.neck = resolved_neck(cfg)
    for part in resolve_parts(cfg.loss.type, is_cross_modal(cfg), cfg.loss):
        setattr(out.loss, WEIGHT_FIELD[part.component], part.weight)
    return out


def unread_keys(cfg: Config) -> dict[str, str]:
    """Every key the training of ``cfg`` does not read -> why (a phrase that follows "KEY is not read ")."""
    out: dict[str, str] = {}
    loss_read = recipe_reads(cfg.loss.type, is_cross_modal(cfg))
    cross_modal_only = set(recipe_reads(cfg.loss.type, True)) - set(recipe_reads(cfg.loss.type, False))
    for f in dataclasses.fields(cfg.loss):
        if f.name not in loss_read:
            where = (f" on single-modality data (data.dataset={cfg.data.dataset})"
                     if f.name in cross_modal_only and not is_cross_modal(cfg) else "")
            hint = _LOSS_HINTS.get(f.name, f"loss.type={cfg.loss.type} reads "
                                           f"{', '.join('loss.' + k for k in loss_read if k != 'type')}")
            out[f"loss.{f.name}"] = f"by loss.type={cfg.loss.type}{where}; {hint}"
    for key, (is_read, why) in _RULES.items():
        if not is_read(cfg):
            out[key] = why(cfg)
    return {k: out[k] for k in schema_keys() if k in out}


def check_read(cfg: Config, keys: Iterable[str], what: str = "") -> None:
    """Refuse (ConfigError, one line) the first of ``keys`` that the training of ``cfg`` does not read."""
    unread = unread_keys(cfg)
    for key in keys:
        if key in unread:
            raise ConfigError(f"{what}{key} is not read {unread[key]}; remove it, or set it only where it is read")


def effective_params(cfg: Config) -> dict[str, Any]:
    """Every dotted key with the value the training uses (``resolve``), ``UNREAD`` for keys it does not read:
    what MLflow logs as params."""
    unread = unread_keys(cfg)
    return {k: UNREAD if k in unread else v for k, v in to_flat_dict(resolve(cfg)).items()}


def signature(cfg: Config, ignore: Iterable[str] = ("solver.seed",)) -> tuple:
    """What makes a training this training: the resolved values of the keys it reads (``run.*`` and ``ignore``
    left out). Two configs with the same signature train the same model."""
    skip = set(ignore)
    return tuple((k, repr(v)) for k, v in effective_params(cfg).items()
                 if v != UNREAD and k not in skip and not k.startswith("run."))
