"""Studies: Ray Tune trials over the core trainer, each logged as an MLflow child run of its study's run.

Importing the package sets quiet, local-first defaults for Ray and MLflow (the MLflow ones are
``tracking.defaults``, which the report CLI applies too).
"""
import os

from tracking.defaults import apply_mlflow_defaults

# Quiet, local-first defaults (see docs): no usage stats. Ray's token authentication is left as Ray ships it (on
# for a new local Ray; see ablation.ray_start for clusters): Ray's ports listen on every interface.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
apply_mlflow_defaults()  # before MLflow is imported, and inherited by the trial workers
