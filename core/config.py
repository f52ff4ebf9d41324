"""The typed configuration schema: the single source of parameter names.

Every name here is addressed by a dotted key (``loss.type``, ``loss.margin``, ``model.neck``). The same keys are
used by CLI overrides, YAML presets, study axes, MLflow params and report columns, so there is exactly one place
that defines what a setting is called, its type and its allowed values.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import math
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, Optional

import yaml

from core.catalogue import DATASET_NAMES, dataset as dataset_entry
from core.names import REGDB_DIRECTIONS
from core.necks import RECIPE_NECK

PRESET_DIR = Path(__file__).resolve().parent / "presets"


class ConfigError(ValueError):
    """A configuration problem; the message names the dotted key and how to fix it."""


@dataclass
class DataConfig:
    dataset: Literal[DATASET_NAMES] = "synthetic_sysu"  # core.catalogue: what each name is, reads and needs
    root: str = ""  # dataset root; for synthetic_* an empty root means the generated-data cache folder
    height: int = 64
    width: int = 32
    sampler: Literal["pk", "cross_modal", "triplets", "random"] = "cross_modal"
    batch_size: int = 32  # images per batch for pk/cross_modal/random; triplets per batch for "triplets"
    num_instances: int = 4  # K images per identity in a P x K batch
    num_workers: int = 0
    flip_prob: float = 0.5
    padding: int = 10
    erasing_prob: float = 0.5
    on_corrupt: Literal["stop", "skip"] = "stop"
    sysu_train_ids: Literal["train", "train+val"] = "train+val"
    regdb_trial: int = 1
    synthetic_ids: int = 40  # identities of the generated dataset
    synthetic_seed: int = 0


# model.pretrained values that are not paths.
PRETRAINED_NONE = "none"  # random initialisation, said explicitly
PRETRAINED_REQUIRED = "required"  # paper presets: a weights path (or "none") must be given
# Keys that hold a file system path. A study makes them absolute against the folder it was started from, because
# Ray Tune runs each trial in a folder of its own.
PATH_KEYS = ("data.root", "model.pretrained")
NOT_A_PATH = ("", PRETRAINED_NONE, PRETRAINED_REQUIRED)


@dataclass
class ModelConfig:
    arch: Literal["resnet18", "resnet50"] = "resnet18"
    last_stride: Literal[1, 2] = 1
    stem_relu: bool = True  # ReLU after the stem's BN; the authors' RGB code (market/duke presets) skips it
    pretrained: str = ""  # a local torchvision ImageNet state dict; "" or "none" = random init; "required" (paper
    #                       presets) = refused until a path or "none" is given
    # The weights file a preset expects, by its sha256 prefix (torchvision names its files <arch>-<first 8 hex digits
    # of the sha256>.pth); another file trains after a one-line warning naming both; "any" = no expectation
    pretrained_expected: str = "any"
    pretrained_sha256: str = ""  # filled in when a run starts: the sha256 of the model.pretrained file it loads
    # BN layout and the feature each loss consumes (core.necks); auto = the neck loss.type's reference code uses
    neck: Literal["auto", "no", "bnneck", "csbn"] = "auto"
    modality_specific_bn: bool = True  # csbn only: one BN per modality (authors' RGB-IR code) or one shared BN
    bn_bias_learnable: bool = False
    test_feature: Literal["before", "after"] = "after"
    bn_groups: Literal["separate", "joint"] = "separate"  # triplet batches: BN per role+modality (authors) or joint


@dataclass
class LossConfig:
    type: Literal["triplet", "bnneck", "expat", "expat_center"] = "expat"
    margin: float = 0.3  # triplet margin
    soft_margin: bool = False
    at_margin: float = 1.0  # expAT margin (authors: 1.0)
    expat_reduction: Literal["exp_of_mean", "mean_of_exp"] = "exp_of_mean"  # code form / paper Eq. (10)
    relu_neg: bool = True
    weight_rgb2ir: float = 1.0  # paper's alpha: RGB-anchor direction
    weight_ir2rgb: float = 1.0  # paper's beta: IR-anchor direction
    id_weight: Optional[float] = None  # None = the recipe's weight
    metric_weight: Optional[float] = None
    center_weight: Optional[float] = None
    label_smoothing: float = 0.1
    center_lr: float = 0.5


@dataclass
class SolverConfig:
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    bias_lr_factor: float = 1.0
    weight_decay_bias: float = 5e-4
    epochs: int = 10
    step_unit: Literal["epoch", "iter"] = "epoch"  # unit of milestones/warmup (RGB code: epoch; RGB-IR code: iter)
    milestones: list[int] = field(default_factory=lambda: [40, 70])
    gamma: float = 0.1
    warmup_factor: float = 0.01
    warmup: int = 10  # linear warmup length in step_unit
    seed: int = 0
    max_steps_per_epoch: int = 0  # 0 = a full pass over the sampler
    max_iters: int = 0  # stop after this many iterations in total (0 = epochs only)


@dataclass
class EvalConfig:
    every: int = 1  # evaluate every N epochs (and always after the last)
    every_iters: int = 0  # iteration schedules: also evaluate every N iterations (0 = no), as the authors' checkpoints
    metric: Literal["euclidean", "sqeuclidean", "cosine"] = "sqeuclidean"
    feat_norm: bool = True  # L2-normalise test features before the distance (RGB pipeline: yes)
    sysu_mode: Literal["all", "indoor"] = "all"
    sysu_shot: Literal["single", "multi"] = "single"
    sysu_cmc: Literal["standard", "official"] = "standard"  # CMC per image (authors) or per identity (official)
    sysu_all_settings: bool = False  # also log rank1/mAP of all four settings (all/indoor x single/multi)
    trials: int = 10  # SYSU gallery draws
    trial_seed: int = 0
    regdb_direction: Literal[REGDB_DIRECTIONS] = "v2t"  # the main metrics: v2t (visible queries) or t2v
    batch_size: int = 128
    # test: the dataset's query/gallery (the protocol). val: identities the training never sees, for selecting
    # hyperparameters (SYSU layouts: exp/val_id.txt, training on train_id.txt; others: a seeded hold-out of
    # eval.val_fraction of the training identities, drawn with eval.val_seed).
    split: Literal["test", "val"] = "test"
    val_fraction: float = 0.2
    val_seed: int = 0
    # angle, norm and modality-gap diagnostics of the evaluated features (core.eval.diagnostics): diag.* metrics
    diagnostics: bool = True


@dataclass
class RunConfig:
    output_dir: str = "outputs/run"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = 0  # torch intra-op threads; 0 = leave torch's default
    progress: bool = True
    checkpoint_every: int = 1
    # TF32 matmuls and cuDNN convolutions on Ampere+ GPUs (faster, ~10 mantissa bits); the paper presets set false:
    # the authors' GPUs computed in FP32 (docs/REPRODUCTION.md §11)
    tf32: bool = True
    # Deterministic GPU kernels (torch.use_deterministic_algorithms, cuDNN's deterministic algorithms): two runs of
    # one seed, or a run and its resumed copy, give the same numbers on a GPU too, a few percent slower. Off, as in
    # the authors' code: then GPU runs of one seed differ from the first epoch (README "Reproducible GPU runs").
    deterministic: bool = False


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)


MAX_IMAGE_SIDE = 1024  # the largest data.height / data.width, in pixels

# Range checks that the type alone cannot express: key -> (predicate, what is allowed).
_RANGES: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    # Images beyond MAX_IMAGE_SIDE (4x the papers' 256x128 and 288x144) do not fit a batch in memory anywhere.
    "data.height": (lambda v: 16 <= v <= MAX_IMAGE_SIDE, f"in 16..{MAX_IMAGE_SIDE}"),
    "data.width": (lambda v: 16 <= v <= MAX_IMAGE_SIDE, f"in 16..{MAX_IMAGE_SIDE}"),
    "data.batch_size": (lambda v: v >= 2, ">= 2"),
    "data.num_instances": (lambda v: v >= 2, ">= 2"),
    "data.num_workers": (lambda v: v >= 0, ">= 0"),
    "data.flip_prob": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "data.erasing_prob": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "data.padding": (lambda v: v >= 0, ">= 0"),
    "data.regdb_trial": (lambda v: 1 <= v <= 10, "in 1..10"),
    "data.synthetic_ids": (lambda v: v >= 8, ">= 8"),
    "loss.margin": (lambda v: v >= 0, ">= 0"),
    "loss.at_margin": (lambda v: v >= 0, ">= 0"),
    "loss.weight_rgb2ir": (lambda v: v >= 0, ">= 0"),
    "loss.weight_ir2rgb": (lambda v: v >= 0, ">= 0"),
    "loss.id_weight": (lambda v: v is None or v >= 0, ">= 0 or null"),
    "loss.metric_weight": (lambda v: v is None or v >= 0, ">= 0 or null"),
    "loss.center_weight": (lambda v: v is None or v > 0, "> 0 or null"),
    "loss.label_smoothing": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "loss.center_lr": (lambda v: v > 0, "> 0"),
    "solver.lr": (lambda v: v > 0, "> 0"),
    "solver.weight_decay": (lambda v: v >= 0, ">= 0"),
    "solver.weight_decay_bias": (lambda v: v >= 0, ">= 0"),
    "solver.bias_lr_factor": (lambda v: v > 0, "> 0"),
    "solver.epochs": (lambda v: v >= 1, ">= 1"),
    "solver.gamma": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "solver.warmup_factor": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "solver.warmup": (lambda v: v >= 0, ">= 0"),
    "solver.max_iters": (lambda v: v >= 0, ">= 0"),
    "solver.max_steps_per_epoch": (lambda v: v >= 0, ">= 0"),
    "model.pretrained_expected": (lambda v: v == "any" or re.fullmatch("[0-9a-f]{8,64}", v) is not None,
                                  "any or a lower-case hex sha256 prefix of 8 to 64 digits (e.g. 19c8e357)"),
    "model.pretrained_sha256": (lambda v: re.fullmatch("([0-9a-f]{64})?", v) is not None,
                                "empty (the run fills it in) or a sha256 of 64 lower-case hex digits"),
    "eval.every": (lambda v: v >= 1, ">= 1"),
    "eval.every_iters": (lambda v: v >= 0, ">= 0 (0 = only the epoch evaluations)"),
    "eval.trials": (lambda v: v >= 1, ">= 1"),
    "eval.batch_size": (lambda v: v >= 1, ">= 1"),
    "eval.val_fraction": (lambda v: 0 < v < 1, "in (0, 1)"),
    "run.threads": (lambda v: v >= 0, ">= 0"),
    "run.checkpoint_every": (lambda v: v >= 1, ">= 1"),
    # Seeds feed numpy's generators, which take 0 .. 2**32 - 1.
    "solver.seed": (lambda v: 0 <= v < 2 ** 32, "in 0..4294967295"),
    "eval.trial_seed": (lambda v: 0 <= v < 2 ** 31, "in 0..2147483647 (trial t draws with trial_seed + t)"),
    "data.synthetic_seed": (lambda v: 0 <= v < 2 ** 32, "in 0..4294967295"),
}


# Both are read for every key of every override (hundreds per study plan); typing.get_type_hints compiles each
# string annotation anew on every call, so each schema class is resolved once (read-only views: shared).
@functools.lru_cache(maxsize=None)
def _sections() -> Mapping[str, type]:
    return MappingProxyType({f.name: f.type if isinstance(f.type, type) else globals()[f.type]
                             for f in dataclasses.fields(Config)})


@functools.lru_cache(maxsize=None)
def _field_types(section_cls: type) -> Mapping[str, Any]:
    hints = typing.get_type_hints(section_cls)
    return MappingProxyType({f.name: hints[f.name] for f in dataclasses.fields(section_cls)})


def schema_keys() -> list[str]:
    """Every valid dotted key, in schema order."""
    return [f"{s}.{k}" for s, cls in _sections().items() for k in _field_types(cls)]


def _yaml_bool_word(key: str, value: bool, allowed: tuple) -> str:
    """The one rule for a YAML boolean given to a string key: YAML 1.1 reads a bare ``no``/``yes`` (also
    ``off``/``on``, ``false``/``true``) as a boolean, so ``false`` stands for ``no`` and ``true`` for ``yes`` where
    the key allows that word; anything else is refused with the fix (quote the value)."""
    word = "yes" if value else "no"
    if word in allowed:
        return word
    raise ConfigError(f"{key}: got the YAML boolean {value!r} for a string setting; quote the value "
                      f"(e.g. {key}: \"off\")" + (f" and choose one of {list(allowed)}" if allowed else ""))


def _number(key: str, value: Any, tp: type) -> int | float:
    """``value`` as an int or float; a bool is never a number, and an int key takes only whole values."""
    number = None
    if not isinstance(value, bool):
        if isinstance(value, str):
            try:
                number = tp(value)
            except ValueError:
                pass
        elif isinstance(value, int) or (isinstance(value, float) and (tp is float or value.is_integer())):
            number = tp(value)
    if number is not None:
        if tp is float and not math.isfinite(number):  # NaN and infinity pass no setting's meaning
            raise ConfigError(f"{key}: {value!r} is not a finite number; give a finite value")
        return number
    raise ConfigError(f"{key}: expected {'an integer' if tp is int else 'a number'}, got {value!r}")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against type ``tp`` (converting strings from the CLI) or raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:  # Optional[X]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(key, value, inner)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if isinstance(value, bool):
            value = _yaml_bool_word(key, value, allowed)
        for a in allowed:
            if value == a or (isinstance(value, str) and str(a) == value):
                return a
        raise ConfigError(f"{key}: {value!r} is not allowed; choose one of {list(allowed)}")
    if origin is list:
        (inner,) = typing.get_args(tp)
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip() else []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list like [40, 70], got {value!r}")
        return [_coerce(f"{key}[{i}]", v, inner) for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp in (int, float):
        return _number(key, value, tp)
    if tp is str:
        if isinstance(value, bool):
            return _yaml_bool_word(key, value, ())
        if isinstance(value, (str, int, float)):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise TypeError(f"unsupported schema type {tp} for {key}")


def _split_key(key: str) -> tuple[str, str]:
    sections = _sections()
    parts = key.split(".")
    if len(parts) != 2 or parts[0] not in sections:
        raise ConfigError(f"unknown config key {key!r}; keys look like section.name with section in "
                          f"{list(sections)} (e.g. loss.margin)")
    section, name = parts
    if name not in _field_types(sections[section]):
        import difflib
        near = difflib.get_close_matches(key, schema_keys(), n=3)
        hint = f"; did you mean {near}?" if near else f"; valid keys in {section}: {list(_field_types(sections[section]))}"
        raise ConfigError(f"unknown config key {key!r}{hint}")
    return section, name


def coerce_value(key: str, value: Any) -> Any:
    """``value`` as the schema holds it for ``key`` (``False`` -> ``"no"`` for model.neck, ``"0.5"`` -> 0.5), with
    type and range checks. Study plans, run names and labels use this form, so they show what the config holds."""
    section, name = _split_key(key)
    coerced = _coerce(key, value, _field_types(_sections()[section])[name])
    if key in _RANGES:
        ok, allowed = _RANGES[key]
        if not ok(coerced):
            raise ConfigError(f"{key}: {coerced!r} is out of range; it must be {allowed}")
    return coerced


def set_value(cfg: Config, key: str, value: Any) -> None:
    """Set one dotted key on ``cfg`` with type and range checks."""
    section, name = _split_key(key)
    setattr(getattr(cfg, section), name, coerce_value(key, value))


def get_value(cfg: Config, key: str) -> Any:
    section, name = _split_key(key)
    return getattr(getattr(cfg, section), name)


def _flatten(mapping: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in mapping.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


flatten_mapping = _flatten  # {"loss": {"type": ...}} -> {"loss.type": ...}, e.g. a checkpoint's stored config


def apply_mapping(cfg: Config, mapping: dict) -> None:
    """Apply a nested or dotted mapping (a YAML preset body or study overrides)."""
    for key, value in _flatten(mapping).items():
        set_value(cfg, key, value)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["loss.margin=0.3", ...]`` -> ``{"loss.margin": 0.3}`` (values parsed as YAML scalars; a value that is not
    valid YAML, such as a path starting with ``%``, stays the text given, and the key's type check judges it)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value, e.g. loss.margin=0.3")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def read_yaml_mapping(path: Path, what: str, error: type[Exception] = ConfigError) -> dict:
    """A YAML file that must hold a mapping (a preset or a study); ``error`` names ``what`` it is."""
    if path.is_dir():
        raise error(f"{what} {path} is a folder, expected a YAML file")
    try:
        body = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8 text (byte {exc.start} cannot be decoded); give a YAML file") \
            from None
    if not isinstance(body, dict):
        raise error(f"{what} {path} must be a mapping")
    return body


def load_config(preset: str | None = None, overrides: dict[str, Any] | list[str] | None = None) -> Config:
    """Build a Config from a preset name or YAML path plus overrides, then validate cross-field rules.

    A preset may name a parent preset under ``base:`` so the paper settings share their common part.
    """
    cfg = Config()
    if preset:
        for body in _preset_chain(preset):
            apply_mapping(cfg, body)
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    apply_mapping(cfg, overrides or {})
    validate(cfg)
    return cfg


def _preset_chain(preset: str, seen: tuple = ()) -> list[dict]:
    path = Path(preset)
    if not path.suffix:
        path = PRESET_DIR / f"{preset}.yaml"
    if not path.is_file():
        raise ConfigError(f"preset {preset!r} not found; use one of {list_presets()} or a path to a YAML file")
    if str(path) in seen:
        raise ConfigError(f"preset {path} includes itself through 'base:'")
    body = read_yaml_mapping(path, "preset")
    base = body.pop("base", None)
    chain = _preset_chain(base, seen + (str(path),)) if base else []
    return chain + [body]



def resolved_neck(cfg: Config) -> str:
    return RECIPE_NECK[cfg.loss.type] if cfg.model.neck == "auto" else cfg.model.neck


def iteration_scheduled(cfg: Config) -> bool:
    """The schedule counts iterations (the RGB-IR code), so evaluations can be placed by iteration too."""
    return cfg.solver.step_unit == "iter"


def is_cross_modal(cfg: Config) -> bool:
    return dataset_entry(cfg).cross_modal


def validate(cfg: Config) -> None:
    """Cross-field rules: things that are each valid alone but impossible together."""
    d = cfg.data
    if d.sampler in ("pk", "cross_modal") and d.batch_size % d.num_instances:
        raise ConfigError(f"data.batch_size={d.batch_size} is not divisible by data.num_instances={d.num_instances}; "
                          f"set data.batch_size to a multiple of {d.num_instances}")
    if d.sampler in ("pk", "cross_modal") and d.batch_size // d.num_instances < 2 and cfg.loss.metric_weight != 0:
        raise ConfigError(f"data.batch_size={d.batch_size} with data.num_instances={d.num_instances} puts one identity "
                          f"in each batch, so the metric loss ({cfg.loss.type}) has no negatives; set "
                          f"data.batch_size to at least {2 * d.num_instances}")
    if d.sampler == "cross_modal":
        if not is_cross_modal(cfg):
            raise ConfigError(f"data.sampler=cross_modal needs an RGB-IR dataset, but data.dataset={d.dataset}; "
                              f"use data.sampler=pk")
        if d.num_instances % 2:
            raise ConfigError(f"data.sampler=cross_modal splits each identity's data.num_instances={d.num_instances} "
                              f"images half RGB, half IR; make it even")
    if d.sampler == "triplets" and not is_cross_modal(cfg):
        raise ConfigError("data.sampler=triplets draws RGB and IR triplets; it needs an RGB-IR dataset "
                          f"(data.dataset={d.dataset}); use data.sampler=pk")


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def to_flat_dict(cfg: Config) -> dict[str, Any]:
    """``{"loss.type": "expat", ...}``: the names used for MLflow params and report columns."""
    return _flatten(to_dict(cfg))


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def copy_config(cfg: Config) -> Config:
    return copy.deepcopy(cfg)
