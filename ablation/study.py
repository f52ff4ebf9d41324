"""Study specifications (``search_spaces/NAME.yaml``): parsing, validation and the trial plan.

A study is a base preset plus fixed overrides, named ``variants`` (each a row of the ablation table with its own
overrides), grid axes over dotted config keys, seeds, an optional search algorithm (Optuna TPE) and scheduler
(ASHA), resources per trial and the metric to optimise. Variants x axes x seeds is the plan, computed once here
(:attr:`StudySpec.plan`) and used as it is by the CLI, the driver and the trials.

Parse, then plan: :func:`load_study` reads the file into a frozen :class:`StudySpec`, and :func:`validate_study`
returns a new one with every value in the schema's form and the plan, each :class:`Trial` carrying its resolved
``Config`` (built here once per trial, by :func:`trial_config`). The validity checks, the dry run, the estimate,
the Tune param space and the trainable all read ``trial.config``; nothing outside this module builds a trial's
config. Trials that a search samples at run time (and the refit trials) get theirs in :func:`trial_from_config`.

Every key is checked against the config schema before anything runs, so a typo fails in a second, not after an
hour of training; values are held as the schema holds them (``model.neck: no`` is ``"no"``, never ``False``).
Each trial's effective configuration (``core.effective``) is checked too: a key a trial sets but never reads, and
two rows that resolve to the same training, are refused with the key named.
"""
from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence

from core.catalogue import dataset as dataset_entry
from core.names import EVAL_METRICS, LOSS_METRICS
from core.config import (NOT_A_PATH, PATH_KEYS, Config, ConfigError, coerce_value, copy_config, get_value,
                         load_config, read_yaml_mapping, set_value)

STUDY_DIR = Path(__file__).resolve().parent.parent / "search_spaces"
SEED_KEY = "solver.seed"
SPLIT_REPEAT_KEY = "data.regdb_trial"  # what a study's ``splits`` repeat over, as they repeat over ``seeds``
TRIAL_INDEX = "trial_index"  # in a grid trial's Tune config, next to its dotted keys: its place in the plan
# In a refit trial's Tune config, next to its dotted keys: the phase, and the row and variant it refits.
PHASE_KEY, ROW_KEY, VARIANT_KEY = "phase", "row", "variant"
SPLIT_KEY = "eval.split"
SEARCH, REFIT = "search", "refit"  # the phases of a study that selects hyperparameters (tag ``phase``)
# What the trainer reports each epoch (see docs/ARCHITECTURE.md); a study may only optimise one of these.
REPORTED_METRICS = (*EVAL_METRICS, *LOSS_METRICS)
SEARCH_ALGORITHMS = ("grid", "optuna")
SCHEDULERS = ("fifo", "asha")
SPACE_TYPES = ("float", "loguniform", "int", "choice")
STUDY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
MAX_NUM_SAMPLES = 10_000  # Tune keeps every trial in memory and in its state file: more is a typo, not a study

TOP_LEVEL = ("name", "description", "base", "overrides", "variants", "axes", "seeds", "splits", "group_by", "baseline",
             "search", "scheduler", "metric", "mode", "resources", "max_concurrent", "max_failures",
             "checkpoint_interval_s", "targets")


class StudyError(ValueError):
    """A study spec that cannot run; the message names the field and the fix."""


@dataclass(frozen=True)
class Trial:
    """One planned trial: its report row, the dotted overrides on top of base + overrides, its run name and its
    configuration (base + overrides + params, built once when the trial is planned or sampled; read it, never
    change it: copy it, or ``core.effective.resolve`` it, which copies)."""
    index: int
    row: str  # the report row (group label): the variant name and/or ``key=value, ...`` of the axes
    variant: Optional[str]
    params: dict  # dotted key -> value (schema form), the seed included
    name: str  # MLflow run name, e.g. ``CS-BN/seed=1`` or ``expat_center/margin=0.5/seed=1``
    phase: str = ""  # studies that select: "search" (on eval.split=val) or "refit" (the best, on test)
    config: Optional[Config] = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class StudySpec:
    """A study as its file gives it (frozen: a changed spec is a new one, ``dataclasses.replace``). The specs that
    :func:`load_study` returns hold canonical values and their plan."""
    name: str
    base: str
    description: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # row name -> dotted overrides
    axes: dict[str, list] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    # RegDB's train/test splits (data.regdb_trial 1..10) as repeats: each row trains and tests on every split, and
    # its numbers average over splits and seeds, as RegDB results are reported. Empty: no repeat over splits.
    splits: list[int] = field(default_factory=list)
    group_by: list[str] = field(default_factory=list)
    baseline: Any = field(default_factory=dict)  # {key: value} of a row, or the name of a variant
    search: dict[str, Any] = field(default_factory=lambda: {"algorithm": "grid"})
    scheduler: dict[str, Any] = field(default_factory=lambda: {"type": "fifo"})
    metric: str = "rank1"
    mode: str = "max"
    resources: dict[str, float] = field(default_factory=lambda: {"cpu": 1})  # no gpu key: share the GPUs present
    max_concurrent: int = 0  # 0 = as many as resources allow
    max_failures: int = 1  # retries of a crashed trial (from its last checkpoint)
    # Tune copies every checkpoint a trial hands it into the storage path (for ResNet-18 with Adam state, 128 MiB
    # and ~0.1 s a copy): a trial hands over at most one per this many seconds, and always its last epoch's. A
    # crashed trial so repeats at most this much training; 0 hands over every checkpoint the trainer writes.
    checkpoint_interval_s: float = 30.0
    plan: list[Trial] = field(default_factory=list)  # grid studies: every trial, planned by validate_study
    # Published numbers per report row: {source: str, rows: [{group: {key: value}, name?, rank1?, mAP?}]}.
    targets: dict[str, Any] = field(default_factory=dict)

    @property
    def algorithm(self) -> str:
        return self.search.get("algorithm", "grid")

    @property
    def selects(self) -> bool:
        """Whether the study picks a winner (a search algorithm, or a scheduler that stops trials early): such a
        study selects on eval.split=val and then refits the winner on the full training split, tested on test."""
        return self.algorithm != "grid" or self.scheduler.get("type", "fifo") != "fifo"

    @property
    def refit_seeds(self) -> list[int]:
        return list(self.search.get("refit_seeds", self.seeds))

    # The trial counts, here only: the driver, the progress display, --resume's plan check and --estimate read them.
    @property
    def search_trials(self) -> int:
        """The trials of the first Tune experiment: the grid's plan, or ``search.num_samples`` sampled trials."""
        return len(self.plan) if self.plan else int(self.search["num_samples"])

    @property
    def refit_trials(self) -> int:
        """The refit trials a study that selects runs after its search (one per refit seed), else 0."""
        return len(self.refit_seeds) if self.selects else 0

    @property
    def total_trials(self) -> int:
        return self.search_trials + self.refit_trials

    def devices(self) -> set[str]:
        """The ``run.device`` values the study's rows set (base and overrides included)."""
        return {self.base_config().run.device, *(v["run.device"] for v in self.variants.values() if "run.device" in v),
                *self.axes.get("run.device", [])}

    def base_config(self) -> Config:
        """The base preset with the overrides (a new config each call): what a search study's trials start
        from."""
        return load_config(self.base, dict(self.overrides))

    def configs(self) -> list[Config]:
        """The planned trials' configs (``trial.config``), or the base config for a study whose trials a search
        samples: what the driver checks the data and samplers of."""
        return [t.config for t in self.plan] or [self.base_config()]

    def space_keys(self) -> list[str]:
        return list(self.search.get("space", {}))

    def group_keys(self) -> list[str]:
        """Keys shown as report columns: ``group_by``, or every key the variants, axes or search space vary
        (the seed aside)."""
        varied = [k for v in self.variants.values() for k in v] + [*self.axes, *self.space_keys()]
        return self.group_by or [k for k in dict.fromkeys(varied) if k != SEED_KEY]

    def baseline_label(self) -> str:
        if isinstance(self.baseline, str):
            return self.baseline
        return group_label(self.baseline) if self.baseline else ""


def format_value(value: Any) -> str:
    """A schema value as labels and run names show it: floats in 4 significant digits, the rest as ``str``."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def group_label(params: dict[str, Any]) -> str:
    """``loss.type=expat, model.neck=no``: dotted keys with the schema's values."""
    return ", ".join(f"{k}={v}" for k, v in params.items())


def row_label(variant: Optional[str], axis_values: dict[str, Any]) -> str:
    """A report row: the variant's name, then the axis values (``CS-BN, loss.at_margin=0.5``)."""
    return ", ".join(x for x in (variant, group_label(axis_values)) if x)


def list_studies() -> list[str]:
    return sorted(p.stem for p in STUDY_DIR.glob("*.yaml"))


def load_study(name_or_path: str, extra_overrides: dict[str, Any] | None = None) -> StudySpec:
    """The study file (a shipped study's name or a path) with ``extra_overrides`` (``--set``) on top of its
    overrides: checked, in canonical values, with its plan. Neither argument is changed."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = STUDY_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        raise StudyError(f"study {name_or_path!r} not found; use one of {list_studies()} or a path to a YAML file")
    body = read_yaml_mapping(path, "study file", StudyError)
    unknown = sorted(set(body) - set(TOP_LEVEL))
    if unknown:
        raise StudyError(f"study {path.name}: unknown field(s) {unknown}; allowed fields: {list(TOP_LEVEL)}")
    if body.get("variants") == {}:  # would plan one row of the base alone, as if no variants were meant
        raise StudyError(f"study {path.name}: 'variants' is empty; list at least one row (name: {{key: value}}) or "
                         f"remove 'variants'")
    body.setdefault("name", path.stem)
    # The name becomes an MLflow experiment, tag value and search filter operand, and a Ray results folder.
    if not isinstance(body["name"], str) or not STUDY_NAME.fullmatch(body["name"]):
        raise StudyError(f"study {path.name}: name {body['name']!r} must be letters, digits, '_', '-' or '.' "
                         "(it names the MLflow experiment and the results folder); rename the file or set 'name:'")
    if "base" not in body:
        raise StudyError(f"study {path.name}: 'base' (a core preset such as quick) is required")
    spec = StudySpec(**body)
    if extra_overrides:
        spec = replace(spec, overrides={**spec.overrides, **extra_overrides})
    return validate_study(spec, set_keys=list(extra_overrides or ()))


def _canonical(where: str, key: str, value: Any) -> Any:
    """``value`` in the schema's form for ``key`` (the one rule for YAML booleans included), or a StudyError."""
    try:
        value = coerce_value(key, value)
    except ConfigError as exc:
        raise StudyError(f"study {where}: {exc}") from None
    if key in PATH_KEYS and value not in NOT_A_PATH:
        value = str(Path(value).expanduser().resolve())  # trials run elsewhere (their own Tune folder)
    return value


def _canonical_mapping(where: str, what: str, mapping: Any) -> dict[str, Any]:
    if not isinstance(mapping, dict):
        raise StudyError(f"study {where}: '{what}' must map dotted config keys to values, got {mapping!r}")
    return {key: _canonical(where, key, value) for key, value in mapping.items()}


def canonicalize(spec: StudySpec) -> StudySpec:
    """The spec with every value held as the schema holds it, so plans, run names, labels and params agree (a new
    spec: ``spec`` and its mappings are left as they are)."""
    where = spec.name
    overrides = _canonical_mapping(where, "overrides", spec.overrides)
    if not isinstance(spec.variants, dict):
        raise StudyError(f"study {where}: 'variants' must map row names to mappings of config overrides")
    variants = {str(name): _canonical_mapping(where, f"variants.{name}", body or {})
                for name, body in spec.variants.items()}
    if not isinstance(spec.axes, dict):
        raise StudyError(f"study {where}: 'axes' must map config keys to lists of values")
    for key, values in spec.axes.items():
        if not isinstance(values, list) or not values:
            raise StudyError(f"study {where}: axis {key!r} has an empty or non-list grid; give a list of values")
    axes = {key: [_canonical(where, key, v) for v in values] for key, values in spec.axes.items()}
    search = spec.search
    if spec.search.get("space"):
        space = {key: {**dist, "values": [_canonical(where, key, v) for v in dist["values"]]}
                 if isinstance(dist, dict) and isinstance(dist.get("values"), list) else dist
                 for key, dist in spec.search["space"].items()}
        search = {**spec.search, "space": space}
    baseline = spec.baseline
    if isinstance(baseline, dict):
        baseline = {k: _canonical(where, k, v) for k, v in baseline.items()}
    return replace(spec, overrides=overrides, variants=variants, axes=axes, search=search, baseline=baseline)


def validate_study(spec: StudySpec, set_keys: Sequence[str] = ()) -> StudySpec:
    """Reject impossible specs before Ray starts: unknown keys, bad values, empty grids, unknown algorithms,
    keys a trial never reads, rows that train the same model. ``set_keys``: the overrides that came from
    ``--set``. Returns the checked spec in canonical values with its plan (``spec`` itself is left as it is)."""
    where = spec.name
    _check_field_types(spec)
    spec = canonicalize(spec)
    _check_repeats(spec, set_keys)
    if spec.algorithm in SEARCH_ALGORITHMS and spec.scheduler.get("type", "fifo") in SCHEDULERS:
        spec = replace(spec, overrides=_leak_free(spec))
    try:
        cfg = spec.base_config()
    except ConfigError as exc:
        raise StudyError(f"study {where}: base/overrides: {exc}") from None
    for key, values in spec.axes.items():
        _check_key_values(cfg, where, key, values)
    if SEED_KEY in spec.axes or any(SEED_KEY in v for v in spec.variants.values()):
        raise StudyError(f"study {where}: put seeds under 'seeds', not as an axis or a variant's {SEED_KEY}")
    _validate_splits(spec, cfg)
    shared = sorted({k for v in spec.variants.values() for k in v} & set(spec.axes))
    if shared:
        raise StudyError(f"study {where}: {shared[0]} is both an axis and set by a variant; set it in one place")
    if spec.algorithm not in SEARCH_ALGORITHMS:
        raise StudyError(f"study {where}: search.algorithm {spec.algorithm!r} is unknown; use one of "
                         f"{list(SEARCH_ALGORITHMS)}")
    if spec.algorithm == "optuna":
        space = spec.search.get("space") or {}
        if not space:
            raise StudyError(f"study {where}: search.algorithm=optuna needs a non-empty search.space")
        for key, dist in space.items():
            _validate_space_entry(cfg, where, key, dist)
        if int(spec.search.get("num_samples", 0)) < 1:
            raise StudyError(f"study {where}: search.num_samples must be >= 1 for optuna")
        if spec.variants or spec.axes:
            raise StudyError(f"study {where}: variants and axes are for grid studies; with search.algorithm=optuna "
                             f"put the varied keys in search.space")
    elif spec.search.get("space"):
        raise StudyError(f"study {where}: search.space is only used with search.algorithm=optuna")
    stype = spec.scheduler.get("type", "fifo")
    if stype not in SCHEDULERS:
        raise StudyError(f"study {where}: scheduler.type {stype!r} is unknown; use one of {list(SCHEDULERS)}")
    if spec.metric not in REPORTED_METRICS:
        raise StudyError(f"study {where}: metric {spec.metric!r} is never reported by the trainer; use one of "
                         f"{list(REPORTED_METRICS)}")
    if spec.mode not in ("max", "min"):
        raise StudyError(f"study {where}: mode must be max or min, got {spec.mode!r}")
    for key in spec.group_by:
        try:
            get_value(cfg, key)
        except ConfigError as exc:
            raise StudyError(f"study {where}: group_by: {exc}") from None
    spec = replace(spec, baseline=_validate_baseline(spec, cfg))
    if isinstance(spec.checkpoint_interval_s, bool) or not isinstance(spec.checkpoint_interval_s, (int, float)) \
            or spec.checkpoint_interval_s < 0:
        raise StudyError(f"study {where}: checkpoint_interval_s must be a number of seconds >= 0 (0 = every "
                         f"checkpoint), got {spec.checkpoint_interval_s!r}")
    extra = set(spec.resources) - {"cpu", "gpu"}
    if extra or spec.resources.get("cpu", 1) <= 0 or spec.resources.get("gpu", 0) < 0:
        raise StudyError(f"study {where}: resources must be {{cpu: >0, gpu: >=0}}, got {spec.resources}")
    if "cuda" in spec.devices() and spec.resources.get("gpu", None) == 0:
        raise StudyError(f"study {where}: run.device=cuda but resources.gpu=0 gives trials no GPU (a trial trains "
                         f"where resources.gpu puts it); set resources.gpu or remove run.device")
    targets_json(spec)  # refuses malformed targets
    spec = replace(spec, plan=plan_trials(spec) if spec.algorithm == "grid" else [])
    baseline = spec.baseline_label()
    if spec.plan and baseline and baseline not in {t.row for t in spec.plan}:
        raise StudyError(f"study {where}: baseline {baseline!r} matches no row of the plan; rows: "
                         f"{_rows_summary(list(dict.fromkeys(t.row for t in spec.plan)))}")
    _check_effective(spec, cfg, set_keys)
    return spec


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_field_types(spec: StudySpec) -> None:
    """The study file's fields have the shapes the rest of the validation reads (one line naming the field)."""
    where = spec.name
    for name, example in (("search", "{algorithm: optuna, num_samples: 20, space: {...}}"),
                          ("scheduler", "{type: asha, grace_period: 1}"), ("resources", "{cpu: 1}")):
        if not isinstance(getattr(spec, name), dict):
            raise StudyError(f"study {where}: '{name}' must be a mapping like {example}, got {getattr(spec, name)!r}")
    if "num_samples" in spec.search and (not _is_int(spec.search["num_samples"])
                                         or not 1 <= spec.search["num_samples"] <= MAX_NUM_SAMPLES):
        raise StudyError(f"study {where}: search.num_samples must be a whole number in 1..{MAX_NUM_SAMPLES}, got "
                         f"{spec.search['num_samples']!r}")
    for key, value in spec.resources.items():
        if not _is_number(value):
            raise StudyError(f"study {where}: resources.{key} must be a number, got {value!r}")
    for name in ("max_failures", "max_concurrent"):
        if not _is_int(getattr(spec, name)) or getattr(spec, name) < 0:
            raise StudyError(f"study {where}: {name} must be a whole number >= 0, got {getattr(spec, name)!r}")
    if not isinstance(spec.group_by, list) or not all(isinstance(k, str) for k in spec.group_by):
        raise StudyError(f"study {where}: group_by must be a list of config keys, e.g. [loss.type], got "
                         f"{spec.group_by!r}")
    if not isinstance(spec.seeds, list) or not spec.seeds or not all(_is_int(s) for s in spec.seeds):
        raise StudyError(f"study {where}: 'seeds' must be a non-empty list of integers, e.g. [0, 1, 2]")


def check_node_resources(spec: StudySpec, nodes: list[dict[str, float]], what: str = "the largest Ray node",
                         fix: str = "add nodes") -> None:
    """A trial asking for more than any node has would stay PENDING forever in Ray: refuse it up front. ``nodes``:
    each node's resources as Ray names them (``CPU``, ``GPU``)."""
    for res in ("cpu", "gpu"):
        need = float(spec.resources.get(res, 0))
        have = max((float(n.get(res.upper(), 0)) for n in nodes), default=0.0)
        if need > have:
            raise StudyError(f"study {spec.name}: resources.{res}={need:g} per trial but {what} has {have:g} "
                             f"{res.upper()}s; lower resources.{res} in the study file or {fix}")


def _check_repeats(spec: StudySpec, set_keys: Sequence[str]) -> None:
    """No value twice in an axis or the seeds (two trials of one row would share a name), and no override
    (``overrides`` or ``--set``) on a key the study varies (the row's own value would win, silently)."""
    where = spec.name
    for name, values in [*((f"axis {k!r}", v) for k, v in spec.axes.items()), ("seeds", spec.seeds),
                         ("splits", spec.splits if isinstance(spec.splits, list) else [])]:
        twice = sorted({repr(v) for v in values if values.count(v) > 1})
        if twice:
            raise StudyError(f"study {where}: {name} lists {twice[0]} more than once; give each value once")
    varied = set(spec.axes) | {k for v in spec.variants.values() for k in v} | set(spec.search.get("space") or {})
    clash = sorted(set(spec.overrides) & varied)  # --set is merged into the overrides: one rule for both
    if clash and clash[0] in set_keys:
        raise StudyError(f"study {where}: --set {clash[0]} sets a key the study varies (an axis, a variant or the "
                         f"search space); change it in the study file instead")
    if clash:
        raise StudyError(f"study {where}: overrides sets {clash[0]}, a key the study varies (an axis, a variant or "
                         f"the search space), whose value would win; remove it from overrides or from where it "
                         f"varies")


def _validate_splits(spec: StudySpec, cfg: Config) -> None:
    where = spec.name
    if not spec.splits:
        return
    s = spec.splits
    if not isinstance(s, list) or not all(isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= 10 for x in s) \
            or len(set(s)) != len(s):
        raise StudyError(f"study {where}: 'splits' must list distinct RegDB trials in 1..10, e.g. [1, 2, 3], got {s!r}")
    if SPLIT_REPEAT_KEY not in dataset_entry(cfg).options:
        raise StudyError(f"study {where}: 'splits' repeats over RegDB's train/test splits but data.dataset="
                         f"{cfg.data.dataset}; remove 'splits' or use a RegDB base (regdb_paper)")
    if SPLIT_REPEAT_KEY in spec.overrides or SPLIT_REPEAT_KEY in spec.axes \
            or any(SPLIT_REPEAT_KEY in v for v in spec.variants.values()):
        raise StudyError(f"study {where}: 'splits' sets {SPLIT_REPEAT_KEY}; do not set it in overrides, axes or "
                         f"variants too")
    if spec.selects:
        raise StudyError(f"study {where}: 'splits' is for grid studies; a search selects on one split's validation "
                         f"identities")


def _leak_free(spec: StudySpec) -> dict[str, Any]:
    """A study that selects evaluates its search trials on the validation split, never on test: the overrides
    with ``eval.split=val`` for such a study (its own for the others)."""
    if not spec.selects:
        if "refit_seeds" in spec.search:
            raise StudyError(f"study {spec.name}: search.refit_seeds is for studies that select (a search "
                             f"algorithm or an early-stopping scheduler); remove it")
        return spec.overrides
    split = spec.overrides.get(SPLIT_KEY, "val")
    if split != "val" or any(SPLIT_KEY in p for p in [*spec.variants.values(), spec.axes]):
        raise StudyError(f"study {spec.name}: it selects hyperparameters (search.algorithm={spec.algorithm}, "
                         f"scheduler {spec.scheduler.get('type', 'fifo')}), so its search trials evaluate on "
                         f"{SPLIT_KEY}=val and the refit trials on test; remove {SPLIT_KEY} from the study")
    seeds = spec.search.get("refit_seeds", spec.seeds)
    if not isinstance(seeds, list) or not seeds or not all(isinstance(x, int) and not isinstance(x, bool)
                                                           for x in seeds):
        raise StudyError(f"study {spec.name}: search.refit_seeds must be a non-empty list of integers, e.g. [0, 1, 2]")
    return {**spec.overrides, SPLIT_KEY: "val"}


def _validate_baseline(spec: StudySpec, cfg: Config) -> Any:
    """The checked baseline (a mapping completed with the axes of one value)."""
    where = spec.name
    if isinstance(spec.baseline, str):
        if spec.baseline not in spec.variants or spec.axes:
            raise StudyError(f"study {where}: baseline {spec.baseline!r} must name one of the variants "
                             f"{list(spec.variants)} (in a study without axes)")
        return spec.baseline
    if not isinstance(spec.baseline, dict):
        raise StudyError(f"study {where}: baseline must be a variant name or a mapping of grouping keys to values")
    if spec.baseline and spec.variants:
        raise StudyError(f"study {where}: with variants, baseline names a variant (e.g. baseline: "
                         f"{next(iter(spec.variants))})")
    for key, value in spec.baseline.items():
        if key not in spec.group_keys():
            raise StudyError(f"study {where}: baseline key {key!r} is not one of the grouping keys "
                             f"{spec.group_keys()}")
        _check_key_values(cfg, where, key, [value])
    missing = [k for k in spec.axes if k not in spec.baseline]
    if spec.baseline and missing and spec.algorithm == "grid":
        if any(len(spec.axes[k]) > 1 for k in missing):
            raise StudyError(f"study {where}: baseline names {list(spec.baseline)} but not the axes {missing}, so it "
                             f"matches more than one row; give each of them a value in baseline")
        # an axis of one value leaves nothing to choose: the baseline row has that value (row labels' key order)
        return {k: spec.baseline[k] if k in spec.baseline else spec.axes[k][0]
                for k in [*spec.axes, *spec.baseline] if k in spec.baseline or k in spec.axes}
    return spec.baseline


def _rows_summary(rows: list[str], shown: int = 10) -> str:
    """The plan's rows for a one-line message: all of a small plan, the first ``shown`` of a big one."""
    if len(rows) <= shown:
        return str(rows)
    return f"{rows[:shown]} and {len(rows) - shown} more (--dry-run lists them)"


def _check_effective(spec: StudySpec, base: Config, set_keys: Sequence[str]) -> None:
    """Each trial reads every key its row sets; every override is read by some trial; rows differ."""
    from core.effective import check_read, signature, unread_keys
    where = spec.name
    configs = [(t, t.config) for t in spec.plan] or [(None, base)]
    for trial, cfg in configs:
        row_keys = [k for k in trial.params if k != SEED_KEY] if trial else spec.space_keys()
        try:
            check_read(cfg, row_keys, f"row {trial.row!r}: " if trial else "search.space: ")
        except ConfigError as exc:
            raise StudyError(f"study {where}: {exc}") from None
    readers = [cfg for _, cfg in configs]
    if spec.selects:  # the refit trials read what the search trials' validation split leaves aside
        first = configs[0][0].params if configs[0][0] else {}
        readers.append(trial_config(spec, {**first, SPLIT_KEY: "test"}))
    for key in spec.overrides:
        unread = [unread_keys(cfg).get(key) for cfg in readers]
        if all(unread):
            origin = "--set" if key in set_keys else "overrides"
            raise StudyError(f"study {where}: {origin} {key} is not read {unread[0]}; remove it")
    rows: dict[tuple, Trial] = {}
    first_seed = spec.seeds[0]
    for trial, cfg in configs:
        if trial is None or trial.params[SEED_KEY] != first_seed:
            continue
        sig = signature(cfg)
        if sig in rows:
            other = rows[sig]
            keys = [k for k in dict.fromkeys([*other.params, *trial.params])
                    if other.params.get(k) != trial.params.get(k)]
            raise StudyError(f"study {where}: rows {other.row!r} and {trial.row!r} resolve to the same training; "
                             f"{' and '.join(keys) or 'nothing'} makes no difference once resolved; drop one row")
        rows[sig] = trial


def _check_key_values(cfg: Config, where: str, key: str, values: list) -> None:
    for v in values:
        try:
            set_value(copy_config(cfg), key, v)
        except ConfigError as exc:
            raise StudyError(f"study {where}: {exc}") from None


def _validate_space_entry(cfg: Config, where: str, key: str, dist: Any) -> None:
    if not isinstance(dist, dict) or dist.get("type") not in SPACE_TYPES:
        raise StudyError(f"study {where}: search.space.{key} must be a mapping with type in {list(SPACE_TYPES)}")
    if dist["type"] == "choice":
        if not dist.get("values"):
            raise StudyError(f"study {where}: search.space.{key} (choice) needs non-empty 'values'")
        _check_key_values(cfg, where, key, dist["values"])
    else:
        if not (_is_number(dist.get("low")) and _is_number(dist.get("high"))) or not dist["low"] < dist["high"]:
            raise StudyError(f"study {where}: search.space.{key} needs numbers low < high")
        _check_key_values(cfg, where, key, [dist["low"], dist["high"]])


def plan_trials(spec: StudySpec) -> list[Trial]:
    """Variants x grid axes x seeds, in that order: one :class:`Trial` each, with its config. Every trial must form
    a valid config (e.g. a batch size that the instances divide)."""
    keys = list(spec.axes)
    variants = list(spec.variants.items()) or [(None, {})]
    splits = [{SPLIT_REPEAT_KEY: s} for s in spec.splits] or [{}]
    trials = []
    for variant, overrides in variants:
        for combo in itertools.product(*[spec.axes[k] for k in keys]):
            axis_values = dict(zip(keys, combo))
            for split in splits:
                for seed in spec.seeds:
                    params = {**overrides, **axis_values, **split, SEED_KEY: seed}
                    row = row_label(variant, axis_values)
                    trials.append(Trial(index=len(trials), row=row, variant=variant, params=params,
                                        name=trial_name(params, variant, {**axis_values, **split}),
                                        phase=SEARCH if spec.selects else "",
                                        config=trial_config(spec, params, row)))
    return trials


def trial_config(spec: StudySpec, params: dict[str, Any], row: str | None = None) -> Config:
    """The config of a trial of ``spec`` that sets ``params``: the one place a trial's config is built (by the
    planning above and by :func:`trial_from_config`); everyone else reads ``trial.config``."""
    try:
        return load_config(spec.base, {**spec.overrides, **params})
    except ConfigError as exc:
        raise StudyError(f"study {spec.name}: trial {row or group_label(params)}: {exc}") from None


def short_key(key: str) -> str:
    return key.split(".")[-1]


def trial_name(params: dict[str, Any], variant: Optional[str] = None, shown: dict[str, Any] | None = None) -> str:
    """Readable run names for the MLflow compare view: ``expat_center/margin=0.5/seed=1``, or with a variant
    ``CS-BN/seed=1``. ``shown``: the keys to name (default: every key of ``params``)."""
    parts = [variant] if variant else []
    shown = params if shown is None else shown
    ordered = sorted(shown.items(), key=lambda kv: kv[0] != "loss.type")  # the algorithm reads best first
    for key, value in ordered:
        if key == SEED_KEY:
            continue
        parts.append(str(value) if key == "loss.type" else f"{short_key(key)}={format_value(value)}")
    parts.append(f"seed={params.get(SEED_KEY, 0)}")
    return "/".join(parts)


TARGET_FIELDS = ("group", "name", "rank1", "mAP")


def targets_json(spec: StudySpec) -> str:
    """The study's ``targets`` as the JSON the report reads (``{"source", "rows": {group label: {...}}}``), or ``""``
    without targets. Each row's ``group`` must give every grouping key, so its label is the one its trials carry."""
    if not spec.targets:
        return ""
    where, t = spec.name, spec.targets
    if not isinstance(t, dict) or set(t) - {"source", "rows"} or not isinstance(t.get("source"), str) \
            or not t["source"].strip() or not isinstance(t.get("rows"), list) or not t["rows"]:
        raise StudyError(f"study {where}: targets must be {{source: <where the numbers are published>, rows: "
                         f"[{{group: {{key: value}}, name: ..., rank1: ..., mAP: ...}}, ...]}}")
    cfg, keys, rows = spec.base_config(), spec.group_keys(), {}
    for row in t["rows"]:
        if not isinstance(row, dict) or set(row) - set(TARGET_FIELDS) or not isinstance(row.get("group"), dict):
            raise StudyError(f"study {where}: targets row {row!r} must be a mapping with 'group' and any of "
                             f"{list(TARGET_FIELDS[1:])}")
        if sorted(row["group"]) != sorted(keys):
            raise StudyError(f"study {where}: targets row group {row['group']} must give exactly the grouping keys "
                             f"{keys}")
        values, typed = {}, copy_config(cfg)
        for key in keys:
            _check_key_values(cfg, f"{where}: targets", key, [row["group"][key]])
            set_value(typed, key, row["group"][key])
            values[key] = get_value(typed, key)  # typed as the trials' group labels are (1 -> 1.0 for a float)
        numbers = {m: row[m] for m in ("rank1", "mAP") if m in row}
        if not numbers or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 100
                              for v in numbers.values()):
            raise StudyError(f"study {where}: targets row {row['group']} needs rank1 and/or mAP in % (0..100)")
        label = group_label(values)
        if label in rows:
            raise StudyError(f"study {where}: targets row {label} is given twice")
        rows[label] = {**{m: float(v) for m, v in numbers.items()}, **({"name": str(row["name"])} if "name" in row
                                                                       else {})}
    return json.dumps({"source": t["source"].strip(), "rows": rows})


def run_on_trial_resources(cfg: Config, resources: dict[str, Any]) -> None:
    """How a trial runs on its resources (``resources`` of the study): torch threads follow its CPU share, the
    device its GPU share (``run.device=auto`` would pick a GPU the trial was not given), no progress bars. The
    trainable, ``--estimate`` and the benchmarks' plain loop all train this way."""
    cfg.run.threads = max(1, int(resources.get("cpu", 1)))
    cfg.run.device = "cuda" if resources.get("gpu", 0) > 0 else "cpu"
    cfg.run.progress = False


def trial_from_config(spec: StudySpec, config: dict[str, Any]) -> Trial:
    """The trial a Tune config stands for: a trial of the plan (grid studies name its index), a refit trial, or
    the values a search algorithm sampled; values in the schema's form, keyed by dotted config keys. A trial of
    the plan comes with the config planned for it; the others get theirs built here, once."""
    if TRIAL_INDEX in config:
        return spec.plan[config[TRIAL_INDEX]]
    reserved = (PHASE_KEY, ROW_KEY, VARIANT_KEY)
    params = {k: coerce_value(k, v) for k, v in config.items() if k not in reserved}
    params.setdefault(SEED_KEY, spec.seeds[0])
    shown = {k: params[k] for k in spec.group_keys() if k in params}
    if config.get(PHASE_KEY) == REFIT:
        variant = config.get(VARIANT_KEY) or None
        return Trial(index=-1, row=config[ROW_KEY], variant=variant, params=params,
                     name=f"{REFIT}/{trial_name(params, variant, shown)}", phase=REFIT,
                     config=trial_config(spec, params, config[ROW_KEY]))
    row = group_label(shown)
    return Trial(index=-1, row=row, variant=None, params=params, name=trial_name(params, None, shown),
                 phase=SEARCH if spec.selects else "", config=trial_config(spec, params, row))


def refit_configs(spec: StudySpec, best: Trial) -> list[dict[str, Any]]:
    """Tune configs of the refit trials: the best search trial's settings on the full training split, tested on
    test, once per ``search.refit_seeds``."""
    params = {k: v for k, v in best.params.items() if k not in (SEED_KEY, SPLIT_KEY)}
    return [{PHASE_KEY: REFIT, ROW_KEY: best.row, VARIANT_KEY: best.variant or "", **params, SPLIT_KEY: "test",
             SEED_KEY: seed} for seed in spec.refit_seeds]
