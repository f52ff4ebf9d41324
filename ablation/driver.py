"""The study driver, ``run_study``, in three steps (at the end of this module):

- ``open_study``: every check that can refuse the study, Ray started (or joined), the tracking store opened and
  the parent MLflow run created (or, on ``--resume``, set RUNNING again);
- ``fit_study``: the Tuner built (or restored) and run; in a study that selects, the refit of the best trial;
- ``close_study``: the runs ended, the report built, the parent run FINISHED and the outcome (summary, exit
  status); an interrupted study (Ctrl-C, or SIGTERM, which takes the same path) ends its runs FAILED and raises
  ``StudyInterrupted``.
"""
from __future__ import annotations

import dataclasses
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import ray
from mlflow.tracking import MlflowClient
from ray import tune

from ablation.interrupt import quiet_after_interrupt
from ablation.ray_start import start_ray
from ablation.study import StudyError, StudySpec, Trial, check_node_resources, targets_json, trial_from_config
from ablation.tracking import (check_tracking_reachable, children, create_parent_run, ensure_experiment,
                               fail_unfinished_children, find_child, find_parent_run, git_commit, open_tracking_store,
                               retry, set_tags, tracking_credentials)
from ablation.trainable import StudyContext
from ablation.tuners import build_refit_tuner, build_tuner, make_trainable
from ablation.tune_state import BACKUP_EVERY_S, backup_experiment_state, repair_experiment_state
from core.config import ConfigError
from core.files import probe_write
from tracking.tags import StudyTags, TrialTags


class StudyInterrupted(RuntimeError):
    """The study stopped before all trials ended; ``--resume`` continues it. ``messages``: the file holding what
    Ray wrote while it stopped, or None (the CLI, which knows the command as given, prints the resume line)."""

    def __init__(self, ended: int, total: int, messages: Path | None = None):
        super().__init__(f"{ended} of {total} trials ended")
        self.messages = messages


@dataclass
class StudyOutcome:
    study: str
    parent_run_id: str
    tracking_uri: str
    ray_path: str
    total: int
    finished: int
    failed: int
    report_path: str | None

    @property
    def exit_code(self) -> int:
        """0, or 1 when every trial failed (the summary is printed either way)."""
        return 1 if self.total and self.failed == self.total else 0

    def summary(self) -> str:
        lines = [f"study {self.study}: {self.finished}/{self.total} trials finished, {self.failed} failed",
                 f"MLflow: {self.tracking_uri} (parent run {self.parent_run_id}); "
                 f"open with: {ui_command(self.tracking_uri)}",
                 f"Ray results: {self.ray_path}"]
        if self.report_path:
            lines.append(f"report: {self.report_path}")
        return "\n".join(lines)


def ui_command(tracking_uri: str) -> str:
    if tracking_uri.startswith(("http://", "https://")):
        return f"a browser at {tracking_uri}"
    return f"mlflow ui --backend-store-uri {tracking_uri}"


class TrialStatusCallback(tune.Callback):
    """Driver-side closing of child runs that the worker could not close (early-stopped or crashed trials), and
    a last-known-good copy of Tune's experiment state (see ``repair_experiment_state``)."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, ray_path: str | None = None):
        self.tracking_uri, self.experiment_id, self.parent_run_id = tracking_uri, experiment_id, parent_run_id
        self.ray_path = ray_path
        self._last_backup = 0.0

    def on_step_end(self, iteration, trials, **info):
        if self.ray_path and time.monotonic() - getattr(self, "_last_backup", 0.0) >= BACKUP_EVERY_S:
            self._last_backup = time.monotonic()
            try:
                backup_experiment_state(self.ray_path)
            except OSError:
                pass  # a backup is a convenience; never stop the study for it

    def _close(self, trial, status: str, tags) -> None:
        """Close the trial's run if it is still RUNNING, with ``tags`` (``TrialTags.only(...)``, or a function of
        the run giving them)."""
        client = MlflowClient(self.tracking_uri)
        run = find_child(client, self.experiment_id, self.parent_run_id, trial.trial_id)
        if run is None or run.info.status != "RUNNING":
            return
        if callable(tags):
            tags = tags(run)
        set_tags(client, run.info.run_id, tags)
        retry(lambda: client.set_terminated(run.info.run_id, status))

    def on_trial_complete(self, iteration, trials, trial, **info):
        # ASHA also stops a trial at max_t, on its last epoch's result, which can reach the driver before the worker
        # has closed the run: such a trial trained every epoch and was not stopped early.
        self._close(trial, "FINISHED",
                    lambda run: {} if _trained_every_epoch(trial, run) else TrialTags.only(stopped_early=True))

    def on_trial_error(self, iteration, trials, trial, **info):
        reason = str(getattr(trial, "error_msg", None) or "trial errored in Ray (see the Ray trial folder)")
        self._close(trial, "FAILED", TrialTags.only(failure_reason=reason[:5000]))


def _trained_every_epoch(trial, run) -> bool:
    """Whether the trial's last result is its last epoch (the run's ``solver.epochs`` param)."""
    try:
        return int((trial.last_result or {})["epoch"]) >= int(run.data.params["solver.epochs"])
    except (KeyError, TypeError, ValueError):
        return False


def check_storage_path(path: str) -> None:
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StudyError(f"Ray storage path {p} cannot be created ({exc.strerror}); pass --storage-path with a "
                         f"writable folder") from None
    try:
        probe_write(p)
    except OSError as exc:
        raise StudyError(f"Ray storage path {p} is not writable ({exc.strerror}); pass --storage-path with a "
                         f"writable folder") from None


def prepare_data(spec: StudySpec) -> None:
    """Generate or check each distinct dataset once in the driver, so trials never race to write it, and build
    each distinct training sampler, so data that cannot fill a batch is refused before any trial starts."""
    from core.data import build_train_sampler
    from core.factory import build_dataset, check_inputs, dataset_key
    splits: dict[tuple, object] = {}
    samplers = set()
    for cfg in spec.configs():
        try:
            check_inputs(cfg)
        except ConfigError as exc:
            raise StudyError(f"study {spec.name}: {exc}") from None
        key = dataset_key(cfg)
        if key not in splits:
            splits[key] = build_dataset(cfg)
        d = cfg.data
        if (key, d.sampler, d.batch_size, d.num_instances) not in samplers:
            samplers.add((key, d.sampler, d.batch_size, d.num_instances))
            build_train_sampler(splits[key], d.batch_size, d.num_instances, d.sampler, cfg.solver.seed)


def check_resources(spec: StudySpec) -> None:
    """A trial asking for more than any node of the running Ray has is refused (``--dry-run`` checks a local
    study against this machine the same way)."""
    check_node_resources(spec, [n["Resources"] for n in ray.nodes() if n.get("Alive")])


def with_gpu_share(spec: StudySpec) -> StudySpec:
    """Without an explicit ``resources.gpu``, trials share the cluster's GPUs: each gets the fraction that lets
    as many trials run at once as the CPUs allow (0 where there is no GPU)."""
    if "gpu" in spec.resources:
        return spec
    total = ray.cluster_resources()
    gpus, cpus = float(total.get("GPU", 0)), float(total.get("CPU", 1))
    concurrent = max(1, int(cpus // float(spec.resources.get("cpu", 1))))
    share = min(1.0, gpus / concurrent) if gpus else 0.0
    return dataclasses.replace(spec, resources={**spec.resources, "gpu": share})


def _trial_states(ray_path: str) -> list[str]:
    """Trial statuses as Tune saved them when ``fit()`` ended.

    Read from the experiment folder, not from ``fit()``'s ResultGrid: on SIGINT Tune saves the state (RUNNING /
    PENDING trials included) and then stops the live trials, which marks them TERMINATED in memory only, so the
    in-memory statuses cannot tell an interrupted study from a finished one.
    """
    return [t.status for t in tune.ExperimentAnalysis(ray_path).trials]


def _open_store(spec: StudySpec, tracking_uri: str, resume: bool, storage_path: str) -> MlflowClient:
    """Check that the tracking store works (creating a fresh one's schema) and, for ``--resume``, that it holds
    the study."""
    client = open_tracking_store(tracking_uri)
    exp = retry(lambda: client.get_experiment_by_name(spec.name))
    check_not_deleted(spec, exp, tracking_uri)
    if resume:
        parent = find_parent_run(client, exp.experiment_id, spec.name) if exp is not None else None
        if parent is None:
            raise StudyError(f"study {spec.name}: nothing to resume in {tracking_uri}; run it without --resume")
        check_same_plan(spec, client, exp.experiment_id, parent)
        check_ray_folder(spec, client, exp.experiment_id, parent, storage_path)
    return client


def check_not_deleted(spec: StudySpec, exp, tracking_uri: str) -> None:
    """An experiment deleted in the UI stays in the store (in its trash) under its name, and MLflow refuses new
    runs in it: say which way out there is."""
    if exp is None or exp.lifecycle_stage != "deleted":
        return
    raise StudyError(f"study {spec.name}: its MLflow experiment {spec.name!r} (id {exp.experiment_id}) is deleted "
                     f"in {tracking_uri}; restore it (`MLFLOW_TRACKING_URI={tracking_uri} mlflow experiments restore "
                     f"--experiment-id {exp.experiment_id}`), purge it for good (`mlflow gc --backend-store-uri "
                     f"{tracking_uri} --experiment-ids {exp.experiment_id}`), or give the study another name")


def check_ray_folder(spec: StudySpec, client: MlflowClient, exp_id: str, parent, storage_path: str) -> None:
    """A resumed study continues in the Ray folder it started with (its trials' checkpoints and Tune's record of
    which trial is which). Without that folder Tune would start every trial anew, finished ones included, each
    under a new trial id and so a second MLflow run: refused while any trial has started. A different
    ``--storage-path`` is not used, and said so."""
    recorded = StudyTags.from_tags(parent.data.tags).ray_path
    if not recorded:  # a study run that stopped before it recorded its Ray folder: nothing of Tune's to lose
        return
    ray_path = Path(recorded)
    if not ray_path.is_dir() and children(client, exp_id, parent.info.run_id):
        raise StudyError(f"study {spec.name}: cannot resume: its Ray folder {ray_path} is gone (deleted, moved or on "
                         f"a disk not mounted); restore it there, or run the study without --resume to start it over")
    if ray_path.parent != Path(storage_path):
        warnings.warn(f"study {spec.name} started with --storage-path {ray_path.parent}; --resume continues there "
                      f"(not in {storage_path})")


def check_same_plan(spec: StudySpec, client: MlflowClient, exp_id: str, parent) -> None:
    """A resumed study continues the trials it started: Tune names them by their index in the plan, so the plan
    must be the one the study started with (same number of trials, and every run already made one of its names).
    A study file edited since, or one written before variants renamed its rows, is refused in one line."""
    total = spec.search_trials
    started = parent.data.params.get("study.trials")
    names = {t.name for t in spec.plan}
    made = {r.info.run_name for r in children(client, exp_id, parent.info.run_id)}
    unknown = sorted(made - names) if spec.plan else []
    if (started is not None and int(started) != total) or unknown:
        why = f"it started with {started} trials, the plan now has {total}" if started and int(started) != total \
            else f"its run {unknown[0]!r} is not a trial of the current plan"
        raise StudyError(f"study {spec.name}: cannot resume: the study file changed since the study started ({why}); "
                         f"run it without --resume to start it over")


REFIT_SUFFIX = "-refit"  # the refit trials' Ray experiment folder: the search's, with this suffix


def _all_ended(states: list[str], total: int) -> bool:
    return len(states) >= total and all(s in ("TERMINATED", "ERROR") for s in states)


def _fit_experiment(spec: StudySpec, ctx: StudyContext, path: str, resume: bool, build) -> list[str]:
    """Run (or, on ``--resume``, continue) one Tune experiment in ``path``; its trials' final statuses."""
    callback = TrialStatusCallback(ctx.tracking_uri, ctx.experiment_id, ctx.parent_run_id, path)
    if resume and tune.Tuner.can_restore(path):
        repair_experiment_state(path)
        tuner = tune.Tuner.restore(path, trainable=make_trainable(spec, ctx), resume_unfinished=True,
                                   resume_errored=False, restart_errored=False)
    else:
        tuner = build(callback)
    tuner.fit()
    return _trial_states(path)


def select_best(spec: StudySpec, ray_path: str) -> Trial:
    """The search trial with the best last reported ``spec.metric`` (on the validation split)."""
    analysis = tune.ExperimentAnalysis(ray_path, default_metric=spec.metric, default_mode=spec.mode)
    config = analysis.get_best_config(scope="last")
    if config is None:
        raise StudyError(f"study {spec.name}: no search trial reported {spec.metric} on the validation split, so "
                         f"there is nothing to refit; see the failed trials in MLflow")
    return trial_from_config(spec, config)


# --- the study, in three steps: open, fit, close ------------------------------------------------------------


@dataclass
class OpenStudy:
    """A study between its open and close steps: Ray up (``started_ray``: this driver started it and stops it),
    the tracking store open and the parent run RUNNING (``resumed``: an existing one, continued)."""

    spec: StudySpec
    client: MlflowClient
    tracking_uri: str
    experiment_id: str
    parent_id: str
    ray_path: str
    resumed: bool
    started_ray: bool
    ctx: StudyContext
    verbose: int = 0  # Ray Tune's verbosity (RunConfig.verbose) for both experiments

    @property
    def total(self) -> int:
        """The search (or grid) trials."""
        return self.spec.search_trials

    @property
    def refit_total(self) -> int:
        return self.spec.refit_trials

    @property
    def refit_path(self) -> str:
        return self.ray_path + REFIT_SUFFIX

    @property
    def interrupt_log(self) -> Path:
        """Where Ray's messages go after a Ctrl-C (``ablation.interrupt``)."""
        return Path(self.ray_path + "-interrupted.log")

    def stop_ray(self) -> None:
        if self.started_ray:
            ray.shutdown()


def run_study(spec: StudySpec, tracking_uri: str, storage_path: str, address: str | None = None,
              resume: bool = False, num_cpus: int | None = None, build_report: bool = True,
              verbose: int = 0) -> StudyOutcome:
    """Open the study, fit its trials, close it. Whatever stops it, every run it opened is ended (FAILED, with the
    way to continue) and the Ray it started is stopped; an interrupted study raises ``StudyInterrupted``."""
    study = dataclasses.replace(open_study(spec, tracking_uri, storage_path, address, resume, num_cpus),
                                verbose=verbose)
    with quiet_after_interrupt(study.interrupt_log):  # after a Ctrl-C, Ray's messages go to a file
        try:
            states, refit_states = fit_study(study)
        except BaseException:
            end_failed(study, "study driver stopped; continue with --resume")
            raise
        finally:
            study.stop_ray()  # stops the trial workers before their runs are closed
    return close_study(study, states, refit_states, build_report)


def open_study(spec: StudySpec, tracking_uri: str, storage_path: str, address: str | None, resume: bool,
               num_cpus: int | None) -> OpenStudy:
    """Every check that can refuse the study, then Ray and the parent MLflow run.

    The checks run before any trial and before any MLflow run exists; the cheap ones (paths, the data) before Ray
    starts. The store's first use (a fresh SQLite store builds its schema, ~2 s) overlaps Ray's start-up (~3 s,
    mostly waiting for Ray's processes): both are paid once per study, so running them side by side shortens
    every study. A refusal after Ray started stops it again.
    """
    check_tracking_reachable(tracking_uri)
    check_storage_path(storage_path)
    prepare_data(spec)
    with ThreadPoolExecutor(max_workers=1) as pool:
        store_ready = pool.submit(_open_store, spec, tracking_uri, resume, storage_path)
        try:
            started = start_ray(address, num_cpus)
        except BaseException:
            store_ready.cancel()
            raise
        try:
            client = store_ready.result()
        except BaseException:
            if started:
                ray.shutdown()
            raise
    try:
        spec = with_gpu_share(spec)
        check_resources(spec)
        return _open_parent_run(spec, client, tracking_uri, storage_path, resume, started)
    except BaseException:
        if started:
            ray.shutdown()
        raise


def _open_parent_run(spec: StudySpec, client: MlflowClient, tracking_uri: str, storage_path: str, resume: bool,
                     started_ray: bool) -> OpenStudy:
    """The study's parent run: on ``--resume`` the latest one, RUNNING again; otherwise a new one, with the tags
    and params the reports read and a new Ray experiment folder."""
    exp_id = ensure_experiment(client, spec.name)
    total = spec.search_trials
    parent = find_parent_run(client, exp_id, spec.name) if resume else None
    if parent is not None:
        parent_id = parent.info.run_id
        ray_path = StudyTags.from_tags(parent.data.tags).ray_path
        retry(lambda: client.update_run(parent_id, status="RUNNING"))
    else:
        ray_path = str(Path(storage_path) / f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        selection = f"search on eval.split=val; table: best refit on test, seeds {spec.refit_seeds}"
        parent_id = create_parent_run(
            client, exp_id,
            StudyTags(study=spec.name, metric=spec.metric, mode=spec.mode, group_keys=tuple(spec.group_keys()),
                      baseline=spec.baseline_label(), ray_path=ray_path, algorithm=spec.algorithm,
                      git_commit=git_commit(), targets=targets_json(spec),
                      selection=selection if spec.selects else None),
            params={"study.base": spec.base, "study.trials": total, "study.seeds": spec.seeds,
                    **{f"study.axis.{k}": v for k, v in spec.axes.items()},
                    **({"study.variants": list(spec.variants)} if spec.variants else {})})
    ctx = StudyContext(spec=spec, tracking_uri=tracking_uri, experiment_id=exp_id,
                       parent_run_id=parent_id, git_commit=git_commit(), credentials=tracking_credentials())
    return OpenStudy(spec=spec, client=client, tracking_uri=tracking_uri, experiment_id=exp_id, parent_id=parent_id,
                     ray_path=ray_path, resumed=parent is not None, started_ray=started_ray, ctx=ctx)


def fit_study(study: OpenStudy) -> tuple[list[str], list[str]]:
    """Run (or continue) the study's Tune experiment; in a study that selects, once every search trial ended,
    retrain the best configuration in a second experiment. The trial statuses of both (the second empty when it
    did not run)."""
    spec, ctx, ray_path = study.spec, study.ctx, study.ray_path
    states = _fit_experiment(spec, ctx, ray_path, study.resumed,
                             lambda callback: build_tuner(spec, ctx, ray_path, callback, study.verbose))
    if not (spec.selects and _all_ended(states, study.total)):
        return states, []
    # The search selected on the validation split; its winner is retrained on the full training split and tested
    # on test, and only those refit trials form the report's table.
    best = select_best(spec, ray_path)
    set_tags(study.client, study.parent_id, StudyTags.only(selected=best.row[:5000]))
    refit_states = _fit_experiment(spec, ctx, study.refit_path, study.resumed,
                                   lambda callback: build_refit_tuner(spec, ctx, study.refit_path, callback, best,
                                                                      study.verbose))
    return states, refit_states


def close_study(study: OpenStudy, states: list[str], refit_states: list[str], build_report: bool) -> StudyOutcome:
    """End the study's runs after ``fit_study`` returned (Ray stopped). A study whose trials did not all end was
    interrupted: its runs end FAILED and ``StudyInterrupted`` says how to continue. Otherwise the report is built
    and the parent run ends FINISHED (FAILED if building the report failed)."""
    spec, client, parent_id = study.spec, study.client, study.parent_id
    if not _all_ended(states, study.total) or not _all_ended(refit_states, study.refit_total):
        end_failed(study, "study interrupted; continue with --resume", interrupted=True)
        ended = sum(s == "TERMINATED" for s in [*states, *refit_states])
        log = study.interrupt_log
        raise StudyInterrupted(ended, study.total + study.refit_total,
                               log if log.is_file() and log.stat().st_size else None)
    fail_unfinished_children(client, study.experiment_id, parent_id, "trial ended without closing its run")
    report_path = None
    if build_report:
        from reports.build import build_report as build
        try:
            report_path = str(build(spec.name, study.tracking_uri, Path("outputs") / "reports" / spec.name,
                                    parent_run_id=parent_id))
        except BaseException:
            retry(lambda: client.set_terminated(parent_id, "FAILED"))
            raise
    set_tags(client, parent_id, StudyTags.only(interrupted=False))
    retry(lambda: client.set_terminated(parent_id, "FINISHED"))
    statuses = [r.info.status for r in children(client, study.experiment_id, parent_id)]
    return StudyOutcome(spec.name, parent_id, study.tracking_uri, study.ray_path, study.total + study.refit_total,
                        statuses.count("FINISHED"), statuses.count("FAILED"), report_path)


def end_failed(study: OpenStudy, reason: str, interrupted: bool = False) -> None:
    """End the study's unfinished child runs FAILED with ``reason``, then its parent run."""
    fail_unfinished_children(study.client, study.experiment_id, study.parent_id, reason)
    if interrupted:
        set_tags(study.client, study.parent_id, StudyTags.only(interrupted=True))
    retry(lambda: study.client.set_terminated(study.parent_id, "FAILED"))
