"""The MLflow tag contract of a study: the study run's tags and a trial run's tags, each one typed record.

The study driver and the trials write tags only through ``StudyTags`` / ``TrialTags`` (``to_tags``), the reports
and the UI check read them only through the same records (``from_tags``), and run queries are built from them
(``filter``): this module is the one place where a tag key is spelled (``tests/test_tags.py`` greps the packages
for any other). docs/ARCHITECTURE.md, "MLflow layout", describes each tag. Pure Python: no MLflow import.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

PARENT_ID_TAG = "mlflow.parentRunId"  # MLflow's own nesting tag (what the UI shows as the parent run)
KIND_STUDY, KIND_TRIAL = "study", "trial"  # the values of the ``kind`` tag


def _tag(key: str, default: Any = None, kind: type = str):
    """A record field stored under the MLflow tag ``key``; ``kind`` is how the value reads back (str, bool,
    int, or tuple for a comma-separated list)."""
    return field(default=default, metadata={"tag": key, "kind": kind})


def _to_text(value: Any, kind: type) -> str:
    if kind is bool:
        return "true" if value else "false"
    if kind is tuple:
        return ",".join(value)
    return str(value)


def _from_text(text: str, kind: type) -> Any:
    if kind is bool:
        return text == "true"
    if kind is tuple:
        return tuple(k.strip() for k in text.split(",") if k.strip())
    if kind is int:
        return int(text) if text.lstrip("-").isdigit() else text
    return text


class _TagRecord:
    """``to_tags`` / ``from_tags`` / ``key`` / ``only`` / ``filter`` for a frozen dataclass of ``_tag`` fields.

    A field left ``None`` is no tag (a trial without variants has no ``variant`` tag), and a tag missing from a
    run reads back as ``None``; an empty string is a tag with an empty value (``study.baseline`` without a
    baseline), as MLflow stores it.
    """

    @classmethod
    def _fields(cls):
        return dataclasses.fields(cls)

    @classmethod
    def key(cls, name: str) -> str:
        """The MLflow tag key of field ``name`` (for a UI view grouping by it, or a query)."""
        return next(f.metadata["tag"] for f in cls._fields() if f.name == name)

    @classmethod
    def only(cls, **values: Any) -> dict[str, str]:
        """The tags of the given fields alone: what a later ``set_tag`` adds to a run that exists."""
        kinds = {f.name: f.metadata["kind"] for f in cls._fields()}
        return {cls.key(name): _to_text(v, kinds[name]) for name, v in values.items() if v is not None}

    @classmethod
    def filter(cls, **values: Any) -> str:
        """An MLflow ``search_runs`` filter: runs whose tags have these fields' values."""
        return " and ".join(f"tags.`{k}` = '{v}'" for k, v in cls.only(**values).items())

    def to_tags(self) -> dict[str, str]:
        return self.only(**{f.name: getattr(self, f.name) for f in self._fields()})

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]):
        """The record of a run's tags (``run.data.tags``); tags that are not part of the contract are ignored."""
        return cls(**{f.name: _from_text(tags[f.metadata["tag"]], f.metadata["kind"])
                      for f in cls._fields() if f.metadata["tag"] in tags})


@dataclass(frozen=True)
class StudyTags(_TagRecord):
    """The tags of a study's parent run: what the reports need to read the study back."""

    study: str | None = _tag("study")
    kind: str | None = _tag("kind", KIND_STUDY)
    metric: str | None = _tag("study.metric")
    mode: str | None = _tag("study.mode")
    group_keys: tuple[str, ...] | None = _tag("study.group_keys", kind=tuple)  # the keys that make a report row
    baseline: str | None = _tag("study.baseline")  # the baseline row's group label ("" without one)
    ray_path: str | None = _tag("study.ray_path")  # the Ray experiment folder
    algorithm: str | None = _tag("study.algorithm")  # grid or optuna
    git_commit: str | None = _tag("git_commit")
    #: The study file's ``targets:`` as JSON, ``{"source": str, "rows": {group label: {"rank1", "mAP", "name"}}}``
    #: ("" without targets).
    targets: str | None = _tag("study.targets")
    selection: str | None = _tag("study.selection")  # how a study that selects chose its table
    selected: str | None = _tag("study.selected")  # the group label the refit trials train
    interrupted: bool | None = _tag("interrupted", kind=bool)

    @property
    def is_study(self) -> bool:
        return self.kind == KIND_STUDY


@dataclass(frozen=True)
class TrialTags(_TagRecord):
    """The tags of one trial's child run."""

    parent_run_id: str | None = _tag(PARENT_ID_TAG)
    kind: str | None = _tag("kind", KIND_TRIAL)
    trial_id: str | None = _tag("trial_id")  # Ray Tune's trial id: finds the run again on a retry or resume
    study: str | None = _tag("study")
    group: str | None = _tag("group")  # the report row (group label)
    seed: int | str | None = _tag("seed", kind=int)
    git_commit: str | None = _tag("git_commit")
    node_id: str | None = _tag("node_id")  # the Ray node of the latest attempt
    hostname: str | None = _tag("hostname")
    variant: str | None = _tag("variant")  # in a study with variants
    split: int | str | None = _tag("split", kind=int)  # the RegDB split, in a study with splits
    phase: str | None = _tag("phase")  # search or refit, in a study that selects
    failure_reason: str | None = _tag("failure_reason")
    failure_permanent: bool | None = _tag("failure_permanent", kind=bool)  # a retry or resume would repeat it
    stopped_early: bool | None = _tag("stopped_early", kind=bool)  # ASHA stopped it

    @property
    def is_trial(self) -> bool:
        return self.kind == KIND_TRIAL

    def attempt(self) -> dict[str, str]:
        """The tags that describe one attempt of the trial (a retry may run on another node), written again when
        a retried or resumed trial reopens its run; the run's identity (parent, kind, trial id) stays."""
        identity = {self.key(n) for n in ("parent_run_id", "kind", "trial_id")}
        return {k: v for k, v in self.to_tags().items() if k not in identity}
