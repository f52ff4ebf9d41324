"""The Ray Tune function trainable: one trial = one ``core.engine.train`` call, reported to Tune and MLflow.

The trainer stays Ray- and MLflow-free; this module adapts its per-epoch reporter to ``ray.tune.report`` (with the
epoch's checkpoint) and to the trial's MLflow child run.
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient
import ray
from ray import tune

from ablation.study import StudySpec, run_on_trial_resources, trial_from_config
from ablation.tracking import TrialRun, find_child, log_params, set_tags
from core.config import ConfigError, to_yaml
from core.effective import effective_params, resolve
from core.factory import with_pretrained_sha256
from core.data import DatasetError
from core.engine import NonFiniteLossError, train
from core.names import DIAG_SAMPLES_ARTIFACT, EVAL_METRICS, ITER_EVALS, UNREAD
from tracking.tags import TrialTags


@dataclass(frozen=True)
class StudyContext:
    """What every trial needs to know about its study (passed with ``tune.with_parameters``); the spec carries
    the plan (``spec.plan``), each trial with its config."""
    spec: StudySpec
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    git_commit: str
    # MLflow credentials (``MLFLOW_TRACKING_USERNAME`` ...) for trials on nodes whose environment lacks them. Held
    # in memory only (with_parameters puts the context in Ray's object store): never a param, tag or log line.
    credentials: dict[str, str] = field(default_factory=dict, repr=False)


def run_trial(config: dict[str, Any], ctx: StudyContext) -> None:
    spec = ctx.spec
    os.environ.update(ctx.credentials)  # read by every MlflowClient of this worker
    trial = trial_from_config(spec, config)  # a trial of the plan, with its config; or a sampled one, built there
    # The trial trains, logs and saves its effective configuration: auto and default weights resolved (a copy: the
    # plan's config stays as planned).
    cfg = resolve(trial.config)
    run_on_trial_resources(cfg, spec.resources)
    context = tune.get_context()
    trial_id = context.get_trial_id()
    if _report_if_ended(ctx, trial_id):
        return
    tags = TrialTags(parent_run_id=ctx.parent_run_id, trial_id=trial_id, study=spec.name, group=trial.row,
                     seed=cfg.solver.seed, git_commit=ctx.git_commit,
                     node_id=ray.get_runtime_context().get_node_id(), hostname=socket.gethostname(),
                     variant=trial.variant or None,
                     # a repeat, like the seed: the report pairs rows by (split, seed)
                     split=cfg.data.regdb_trial if spec.splits else None,
                     # search (selects on eval.split=val) or refit (the report's table, on test)
                     phase=trial.phase or None)
    params = effective_params(cfg)
    # The weights' hash is read on this node, as the weights are: logged once the run exists, so that a file this
    # node cannot read fails the trial with its reason in the run, like any other error of the trial's start.
    hashed = params.get(_SHA256) not in (None, UNREAD)
    run = TrialRun(ctx.tracking_uri, ctx.experiment_id, run_name=trial.name, tags=tags,
                   params={k: v for k, v in params.items() if not (hashed and k == _SHA256)})
    # The trainer's working checkpoint lives in a scratch folder removed when the trial ends: Tune keeps its own
    # copy of every reported checkpoint, and a copy in the trial folder would pile up in Ray's session folders.
    scratch = Path(tempfile.mkdtemp(prefix="expat-trial-"))
    ckpt_dir = scratch / "checkpoint"
    _restore_checkpoint(ckpt_dir)
    last_eval: dict[str, float] = {}
    handed_at = [time.monotonic()]  # when Tune last got a checkpoint (the trial's start at first)

    def reporter(epoch: int, metrics: dict, checkpoint_dir: str | None) -> None:
        run.log_iterations(epoch, metrics.get(ITER_EVALS) or {})
        metrics = {k: v for k, v in metrics.items() if k != ITER_EVALS}  # MLflow's per-iteration series only
        run.log_epoch(epoch, metrics)
        last_eval.update({k: v for k, v in metrics.items() if k in _EVAL_KEYS})
        # Tune sees the latest evaluation on every epoch, so schedulers and searchers always find the metric.
        result = {**metrics, **{k: v for k, v in last_eval.items() if k not in metrics}}
        result = {k: v for k, v in result.items() if v is not None}
        checkpoint = None
        if checkpoint_dir and (epoch >= cfg.solver.epochs
                               or time.monotonic() - handed_at[0] >= spec.checkpoint_interval_s):
            checkpoint = tune.Checkpoint.from_directory(checkpoint_dir)
            handed_at[0] = time.monotonic()
        tune.report(result, checkpoint=checkpoint)

    try:
        if hashed:
            cfg = with_pretrained_sha256(cfg)
            log_params(run.client, run.run_id, {_SHA256: cfg.model.pretrained_sha256})
        run.log_text(to_yaml(cfg), "config.yaml")
        result = train(cfg, reporter=reporter, checkpoint_dir=str(ckpt_dir), resume=True, log=lambda s: None)
    except _DETERMINISTIC as exc:
        # Retrying cannot help (NaN loss, bad data): record the reason and end the trial without a Tune retry.
        reason = f"{type(exc).__name__}: {exc}"
        set_tags(run.client, run.run_id, TrialTags.only(failure_permanent=True))
        run.fail(reason)
        tune.report({"failed": 1, "failure_reason": reason[:500]})
        return
    except Exception as exc:
        # The reason stays one readable line (it is a report cell); the traceback goes next to it as an artifact.
        run.log_text(traceback.format_exc(), "failure_traceback.txt")
        run.fail(f"{type(exc).__name__}: {exc}")
        raise  # Tune retries from the last checkpoint (FailureConfig.max_failures); the run is reopened then
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if result.angle_samples:  # the report draws the angle distributions of the last evaluation from it
        run.log_dict(result.angle_samples, DIAG_SAMPLES_ARTIFACT)
    run.finish()


def _report_if_ended(ctx: StudyContext, trial_id: str) -> bool:
    """A trial whose MLflow run already ended (FINISHED, or failed for good) is not trained again.

    Tune re-runs such a trial when the study driver died (SIGKILL) before its experiment state recorded the end:
    ``--resume`` then restores it as unfinished. Its run stays as it is (same start and end time, no metric
    logged twice), and Tune gets the final result once so searchers and schedulers see it.
    """
    client = MlflowClient(ctx.tracking_uri)
    run = find_child(client, ctx.experiment_id, ctx.parent_run_id, trial_id)
    if run is None:
        return False
    if run.info.status == "FINISHED":
        tune.report({**run.data.metrics, "already_ended": 1})
        return True
    tags = TrialTags.from_tags(run.data.tags)
    if run.info.status == "FAILED" and tags.failure_permanent:
        tune.report({"failed": 1, "failure_reason": (tags.failure_reason or "")[:500], "already_ended": 1})
        return True
    return False


_EVAL_KEYS = EVAL_METRICS
_SHA256 = "model.pretrained_sha256"  # the config key of the weights file's hash
_DETERMINISTIC = (NonFiniteLossError, DatasetError, ConfigError)


def _restore_checkpoint(ckpt_dir: Path) -> None:
    """Start from Tune's checkpoint after a retry or a study resume, else from scratch."""
    if ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return
    with checkpoint.as_directory() as d:
        shutil.copytree(d, ckpt_dir)
