"""Study specifications (``search_spaces/NAME.yaml``): parsing, validation and the trial plan.

A study is a base preset plus fixed overrides, grid axes over dotted config keys, seeds, an optional search
algorithm (Optuna TPE) and scheduler (ASHA), resources per trial and the metric to optimise. Every key is checked
against the config schema before anything runs, so a typo fails in a second, not after an hour of training.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import Config, ConfigError, copy_config, get_value, load_config, read_yaml_mapping, set_value

STUDY_DIR = Path(__file__).resolve().parent.parent / "search_spaces"
SEED_KEY = "solver.seed"
# What the trainer reports each epoch (see docs/ARCHITECTURE.md); a study may only optimise one of these.
REPORTED_METRICS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP", "loss", "loss_id", "loss_metric",
                    "loss_center")
SEARCH_ALGORITHMS = ("grid", "optuna")
SCHEDULERS = ("fifo", "asha")
SPACE_TYPES = ("float", "loguniform", "int", "choice")
TOP_LEVEL = ("name", "description", "base", "overrides", "axes", "seeds", "group_by", "baseline", "search",
             "scheduler", "metric", "mode", "resources", "max_concurrent", "max_failures", "checkpoint_interval_s",
             "targets")


class StudyError(ValueError):
    """A study spec that cannot run; the message names the field and the fix."""


@dataclass
class StudySpec:
    name: str
    base: str
    description: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, list] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    group_by: list[str] = field(default_factory=list)
    baseline: dict[str, Any] = field(default_factory=dict)
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
    # Published numbers per report row: {source: str, rows: [{group: {key: value}, name?, rank1?, mAP?}]}.
    targets: dict[str, Any] = field(default_factory=dict)

    @property
    def algorithm(self) -> str:
        return self.search.get("algorithm", "grid")

    def base_config(self) -> Config:
        return load_config(self.base, dict(self.overrides))

    def space_keys(self) -> list[str]:
        return list(self.search.get("space", {}))

    def group_keys(self) -> list[str]:
        """Keys that define a report row: ``group_by`` or every varied key except the seed."""
        return self.group_by or [k for k in [*self.axes, *self.space_keys()] if k != SEED_KEY]

    def baseline_label(self) -> str:
        return group_label(self.baseline) if self.baseline else ""


def group_label(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def list_studies() -> list[str]:
    return sorted(p.stem for p in STUDY_DIR.glob("*.yaml"))


def load_study(name_or_path: str, extra_overrides: dict[str, Any] | None = None) -> StudySpec:
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = STUDY_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise StudyError(f"study {name_or_path!r} not found; use one of {list_studies()} or a path to a YAML file")
    body = read_yaml_mapping(path, "study file", StudyError)
    unknown = sorted(set(body) - set(TOP_LEVEL))
    if unknown:
        raise StudyError(f"study {path.name}: unknown field(s) {unknown}; allowed fields: {list(TOP_LEVEL)}")
    body.setdefault("name", path.stem)
    if "base" not in body:
        raise StudyError(f"study {path.name}: 'base' (a core preset such as quick) is required")
    spec = StudySpec(**body)
    if extra_overrides:
        spec.overrides = {**spec.overrides, **extra_overrides}
    validate_study(spec)
    return spec


def _check_key_values(cfg: Config, where: str, key: str, values: list) -> None:
    for v in values:
        try:
            set_value(copy_config(cfg), key, v)
        except ConfigError as exc:
            raise StudyError(f"study {where}: {exc}") from None


def validate_study(spec: StudySpec) -> None:
    """Reject impossible specs before Ray starts: unknown keys, bad values, empty grids, unknown algorithms."""
    where = spec.name
    try:
        cfg = spec.base_config()
    except ConfigError as exc:
        raise StudyError(f"study {where}: base/overrides: {exc}") from None
    if not isinstance(spec.axes, dict):
        raise StudyError(f"study {where}: 'axes' must map config keys to lists of values")
    for key, values in spec.axes.items():
        if not isinstance(values, list) or not values:
            raise StudyError(f"study {where}: axis {key!r} has an empty or non-list grid; give a list of values")
        _check_key_values(cfg, where, key, values)
    if not isinstance(spec.seeds, list) or not spec.seeds or not all(isinstance(s, int) for s in spec.seeds):
        raise StudyError(f"study {where}: 'seeds' must be a non-empty list of integers, e.g. [0, 1, 2]")
    if SEED_KEY in spec.axes:
        raise StudyError(f"study {where}: put seeds under 'seeds', not as an axis {SEED_KEY}")
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
    for key, value in spec.baseline.items():
        if key not in spec.group_keys():
            raise StudyError(f"study {where}: baseline key {key!r} is not one of the grouping keys "
                             f"{spec.group_keys()}")
        _check_key_values(cfg, where, key, [value])
    if isinstance(spec.checkpoint_interval_s, bool) or not isinstance(spec.checkpoint_interval_s, (int, float)) \
            or spec.checkpoint_interval_s < 0:
        raise StudyError(f"study {where}: checkpoint_interval_s must be a number of seconds >= 0 (0 = every "
                         f"checkpoint), got {spec.checkpoint_interval_s!r}")
    extra = set(spec.resources) - {"cpu", "gpu"}
    if extra or spec.resources.get("cpu", 1) <= 0 or spec.resources.get("gpu", 0) < 0:
        raise StudyError(f"study {where}: resources must be {{cpu: >0, gpu: >=0}}, got {spec.resources}")
    targets_json(spec)  # refuses malformed targets
    # Every grid point must form a valid config (e.g. a batch size that the instances divide).
    for trial in plan_grid(spec):
        trial_config(spec, trial)


def _validate_space_entry(cfg: Config, where: str, key: str, dist: Any) -> None:
    if not isinstance(dist, dict) or dist.get("type") not in SPACE_TYPES:
        raise StudyError(f"study {where}: search.space.{key} must be a mapping with type in {list(SPACE_TYPES)}")
    if dist["type"] == "choice":
        if not dist.get("values"):
            raise StudyError(f"study {where}: search.space.{key} (choice) needs non-empty 'values'")
        _check_key_values(cfg, where, key, dist["values"])
    else:
        if "low" not in dist or "high" not in dist or not dist["low"] < dist["high"]:
            raise StudyError(f"study {where}: search.space.{key} needs low < high")
        _check_key_values(cfg, where, key, [dist["low"], dist["high"]])


def plan_grid(spec: StudySpec) -> list[dict[str, Any]]:
    """The cartesian product of the grid axes and the seeds: one dict of dotted overrides per trial."""
    keys = list(spec.axes)
    trials = []
    for combo in itertools.product(*[spec.axes[k] for k in keys]):
        for seed in spec.seeds:
            trials.append({**dict(zip(keys, combo)), SEED_KEY: seed})
    return trials


def trial_config(spec: StudySpec, params: dict[str, Any]) -> Config:
    try:
        return load_config(spec.base, {**spec.overrides, **params})
    except ConfigError as exc:
        raise StudyError(f"study {spec.name}: trial {group_label(params)}: {exc}") from None


def short_key(key: str) -> str:
    return key.split(".")[-1]


def trial_name(spec: StudySpec, params: dict[str, Any]) -> str:
    """Readable run names for the MLflow compare view: ``expat_center/margin=0.5/seed=1``."""
    parts = []
    ordered = sorted(params.items(), key=lambda kv: kv[0] != "loss.type")  # the algorithm reads best first
    for key, value in ordered:
        if key == SEED_KEY:
            continue
        if isinstance(value, float):
            value = f"{value:.4g}"
        parts.append(str(value) if key == "loss.type" else f"{short_key(key)}={value}")
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
