"""The MLflow settings the project's tools run with, applied by each entry point (``ablation`` on import, as its
Ray workers inherit them; ``reports.build``'s CLI when it starts), never by importing ``tracking`` or ``reports``."""
from __future__ import annotations

import logging
import os

MLFLOW_DEFAULTS = {
    "MLFLOW_DISABLE_TELEMETRY": "true",  # the machines have no internet
    # MLflow logs INFO lines (e.g. "Creating initial MLflow database tables") to stderr; a refused study or report
    # must leave exactly one line there, the error.
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    # A report downloads every finished trial's angle samples: one progress bar each on stderr, none of them news.
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def apply_mlflow_defaults() -> None:
    """Set each default the user has not set; MLflow's logger follows at once if MLflow is already imported."""
    for key, value in MLFLOW_DEFAULTS.items():
        os.environ.setdefault(key, value)
    logging.getLogger("mlflow").setLevel(os.environ["MLFLOW_LOGGING_LEVEL"].upper())
