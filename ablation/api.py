"""Studies from Python (a notebook, a script), as ``python -m ablation.run`` runs them from a shell:

    from ablation.api import plan_study, run_study
    spec = plan_study("margin_sweep", {"solver.epochs": 2})   # the checked plan: spec.plan, spec.total_trials
    result = run_study(spec, tracking_uri="mlflow.db")
    result.trials            # one row per trial, the columns of the report's trials.csv
    result.report_path       # the report's markdown file (None with build_report=False)

Refusals raise what the CLI prints in one line (``StudyError``, ``TrackingError``, ``ConfigError``, ...); an
interrupted study raises ``ablation.driver.StudyInterrupted``. ``python -m ablation.run`` is a thin layer over this
module: its arguments, its one-line refusals and its exit status; the checks and the locations are the ones here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ablation.study import StudyError, StudySpec, check_node_resources, load_study
from core.names import tracking_uri as resolve_uri

if TYPE_CHECKING:  # the driver imports Ray: planning a study does not need it
    import pandas as pd

    from ablation.driver import StudyOutcome


def plan_study(name_or_path: str, overrides: dict[str, Any] | None = None) -> StudySpec:
    """A shipped study's name or a study file, with dotted config overrides for every trial (``--set``): the
    checked spec and its plan, what ``--dry-run`` shows."""
    return load_study(name_or_path, overrides)


def locations(tracking_uri: str | None = None, storage_path: str = "ray_results") -> tuple[str, str]:
    """The tracking URI and the Ray results folder as a study uses them, whatever the working directory of its
    trials: a bare path or relative SQLite URI made an absolute SQLite URI (``None``: ``./mlflow.db``), and the
    folder made absolute."""
    return resolve_uri(tracking_uri), str(Path(storage_path).resolve())


def check_this_machine(spec: StudySpec, address: str | None = None, num_cpus: int | None = None) -> None:
    """A study on a local Ray (no ``address``, no ``RAY_ADDRESS``) runs on this machine: what its trials ask for
    is checked against it before any work (a StudyError naming what it lacks; ``--dry-run`` names it and still
    shows the plan; a cluster is checked once the driver joins it). ``num_cpus``: the local Ray's CPUs (default:
    this machine's)."""
    if address or os.environ.get("RAY_ADDRESS"):
        return
    gpus = 0
    wants_cuda = "cuda" in spec.devices()  # read once: each call loads the study's base config
    if wants_cuda or float(spec.resources.get("gpu", 0)) > 0:
        import torch
        gpus = torch.cuda.device_count()
    if wants_cuda and not gpus:
        raise StudyError(f"study {spec.name}: run.device=cuda but no CUDA GPU is visible on this machine; remove "
                         f"run.device (trials train where resources.gpu puts them) or run on a cluster with GPUs "
                         f"(--address)")
    check_node_resources(spec, [{"CPU": num_cpus or os.cpu_count() or 1, "GPU": gpus}],
                         "the largest Ray node (this machine)", "run it on a cluster (--address)")


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
    Ray results folder ``ray_results`` in the working directory (``locations``). A local study is first checked
    against this machine (``check_this_machine``), as the CLI checks it."""
    from ablation.driver import run_study as run
    spec = study if isinstance(study, StudySpec) else plan_study(study, overrides)
    check_this_machine(spec, address, num_cpus)
    uri, storage = locations(tracking_uri, storage_path)
    outcome = run(spec, tracking_uri=uri, storage_path=storage, address=address, resume=resume, num_cpus=num_cpus,
                  build_report=build_report, verbose=verbose)
    return StudyResult(outcome)
