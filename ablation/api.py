"""Studies from Python (a notebook, a script), as ``python -m ablation.run`` runs them from a shell:

    from ablation.api import plan_study, run_study
    spec = plan_study("margin_sweep", {"solver.epochs": 2})   # the checked plan: spec.plan, spec.total_trials
    result = run_study(spec, tracking_uri="mlflow.db")
    result.trials            # one row per trial, the columns of the report's trials.csv
    result.report_path       # the report's markdown file (None with build_report=False)

Refusals raise what the CLI prints in one line (``StudyError``, ``TrackingError``, ``ConfigError``, ...); an
interrupted study raises ``ablation.driver.StudyInterrupted``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ablation.study import StudySpec, load_study
from core.names import tracking_uri as resolve_uri

if TYPE_CHECKING:  # the driver imports Ray: planning a study does not need it
    import pandas as pd

    from ablation.driver import StudyOutcome


def plan_study(name_or_path: str, overrides: dict[str, Any] | None = None) -> StudySpec:
    """A shipped study's name or a study file, with dotted config overrides for every trial (``--set``): the
    checked spec and its plan, what ``--dry-run`` shows."""
    return load_study(name_or_path, overrides)


@dataclass(frozen=True)
class StudyResult:
    outcome: "StudyOutcome"  # counts, the parent run, the Ray folder and the exit status the CLI prints

    @property
    def report_path(self) -> str | None:
        return self.outcome.report_path

    @cached_property
    def trials(self) -> "pd.DataFrame":
        """The study run's trials as the report reads them from MLflow (``reports.collect.load_trials``)."""
        from reports.collect import collect_trials
        return collect_trials(self.outcome.study, self.outcome.tracking_uri, self.outcome.parent_run_id)[1]


def run_study(study: str | StudySpec, overrides: dict[str, Any] | None = None, *, tracking_uri: str | None = None,
              storage_path: str = "ray_results", address: str | None = None, resume: bool = False,
              num_cpus: int | None = None, build_report: bool = True, verbose: int = 0) -> StudyResult:
    """Plan (unless given a spec) and run a study with the CLI's defaults: the tracking store ``mlflow.db`` and the
    Ray results folder ``ray_results`` in the working directory."""
    from ablation.driver import run_study as run
    spec = study if isinstance(study, StudySpec) else plan_study(study, overrides)
    outcome = run(spec, tracking_uri=resolve_uri(tracking_uri), storage_path=str(Path(storage_path).resolve()),
                  address=address, resume=resume, num_cpus=num_cpus, build_report=build_report, verbose=verbose)
    return StudyResult(outcome)
