"""Study overhead: short trainings run as a real study (Ray Tune + MLflow) vs the same trainings in a Python loop.

The study goes through ``ablation.driver.run_study`` exactly as ``python -m ablation.run`` does (a local Ray,
a temporary SQLite MLflow store, a temporary Ray storage path), with 1 CPU per trial and at most one trial in
flight, so it compares with a sequential loop that calls ``core.engine.train`` on the same trial configs (same
thread count, same per-epoch checkpoint in a folder). The report at the end of a study is not built (it is not
per-trial work, and the loop has none).

overhead = (study wall - loop wall) / study wall; target < 5%. The full size is 16 trials of about 25 s each (the
quick preset, 8 epochs of 10 steps, one evaluation): short next to a real re-ID training, yet long enough to show
what a study costs per trial on top of what it costs once. The once-per-study part (Ray's start and stop, the
first trial's worker start, imports and first MLflow connection: about 12 s on 2 idle cores) does not shrink with
the trials, so the figure also gives the trial length from which the overhead is under 5% (``break_even_trial_s``).

Where the overhead goes is measured too (``extra`` of the figure, and the breakdown figures):
- the driver's own steps inside ``run_study`` (``ray.init``, the tracking-store check, the dataset check, git,
  ``ray.shutdown``, ...), timed by wrapping them for the run (ablation itself is unchanged);
- ``worker_imports``: what a fresh Ray worker imports before its first trial (torch, torchvision, the trainable);
- ``mlflow_per_trial``: one trial's MLflow work (child run, ~100 params, config.yaml artifact, one batched
  ``log_batch`` per epoch, closing the run, the driver callback's run lookup), on a scratch SQLite store;
- ``checkpoint_copy_per_report``: copying one epoch checkpoint folder (Tune persists every checkpoint a trial
  hands it into its storage path; ``handed_checkpoints`` counts them, see the study's ``checkpoint_interval_s``);
- from the study itself: the sum of the trials' MLflow run durations (time inside the trial function) against
  the study wall time (gaps = driver / Ray time between trials), and the trainings' own epoch times.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import ablation  # noqa: F401 - the same Ray/MLflow defaults as a study, set before Ray is imported
from benchmarks.common import Figure
from tracking.tags import StudyTags, TrialTags

NAME = "study"
ROOT = Path(__file__).resolve().parent.parent
LOSSES = ["triplet", "bnneck", "expat", "expat_center"]


def shrink() -> bool:
    """``EXPAT_BENCH_SCALE`` below 1 (the test suite) -> the smallest study that still has every figure."""
    return float(os.environ.get("EXPAT_BENCH_SCALE", "1")) < 1


def settings(quick: bool) -> dict:
    if shrink():
        return {"trials": 2, "epochs": 1, "steps": 2}
    if quick:
        return {"trials": 4, "epochs": 1, "steps": 3}
    return {"trials": 16, "epochs": 8, "steps": 10}


def make_spec(name: str, trials: int, epochs: int, steps: int, max_concurrent: int = 1):
    """A grid study of ``trials`` quick-preset trainings (loss types x seeds), tiny data, 1 CPU each."""
    from ablation.study import StudySpec, validate_study
    losses = LOSSES[:min(len(LOSSES), trials)]
    seeds = list(range(max(1, trials // len(losses))))
    spec = StudySpec(name=name, base="quick",
                     overrides={"solver.epochs": epochs, "solver.max_steps_per_epoch": steps,
                                "eval.every": epochs, "eval.trials": 2, "data.synthetic_ids": 16},
                     axes={"loss.type": losses}, seeds=seeds, metric="rank1", resources={"cpu": 1},
                     max_concurrent=max_concurrent)
    return validate_study(spec)  # the checked spec, with its plan


@contextlib.contextmanager
def workdir(prefix: str):
    """A scratch folder; the data cache goes there too unless EXPAT_DATA_CACHE is set."""
    d = Path(tempfile.mkdtemp(prefix=prefix))
    old_cache = os.environ.get("EXPAT_DATA_CACHE")
    if not old_cache:
        os.environ["EXPAT_DATA_CACHE"] = str(d / "data_cache")
    old_pp = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([old_pp] if old_pp else []))  # for Ray workers
    try:
        yield d
    finally:
        if not old_cache:
            os.environ.pop("EXPAT_DATA_CACHE", None)
        if old_pp is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old_pp
        shutil.rmtree(d, ignore_errors=True)


def prepare(spec) -> None:
    """Generate the dataset once, so neither side pays for it."""
    from ablation.driver import prepare_data
    prepare_data(spec)


def run_loop(spec, folder: Path, indices: list[int] | None = None) -> dict:
    """The trials (all, or ``indices``) in a plain loop: same configs, threads and checkpoint folders as the
    study's trainable. ``cpu`` is the process CPU time over the wall time (about 1.0 for one busy core)."""
    import resource
    import torch
    from ablation.study import run_on_trial_resources
    from core.config import copy_config
    from core.engine import train
    threads = torch.get_num_threads()
    plan = [t.config for t in spec.plan]  # each trial's config, as the study's trainable gets it
    epoch_time = 0.0
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    for i in (range(len(plan)) if indices is None else indices):
        cfg = copy_config(plan[i])
        run_on_trial_resources(cfg, spec.resources)
        result = train(cfg, checkpoint_dir=str(folder / f"trial{i}"), resume=False, log=lambda s: None)
        epoch_time += sum(h["time_epoch"] for h in result.history)
    wall = time.perf_counter() - start
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    torch.set_num_threads(threads)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {"wall": wall, "epoch_time": epoch_time, "cpu_s": cpu}


def run_loop_split(spec, folder: Path, study_fn) -> tuple[dict, object]:
    """Half of the loop before ``study_fn()``, half after: slow drifts of a shared machine's load hit both sides."""
    n = len(spec.plan)
    first = run_loop(spec, folder, list(range(0, n, 2)))
    result = study_fn()
    second = run_loop(spec, folder, list(range(1, n, 2)))
    loop = {k: first[k] + second[k] for k in first}
    loop["cores_used"] = loop["cpu_s"] / loop["wall"]
    return loop, result


# Driver steps of ``run_study`` timed by wrapping them (in this process only; ablation itself is unchanged).
DRIVER_STEPS = ("check_tracking_reachable", "_open_store", "prepare_data", "ensure_experiment", "create_parent_run",
                "git_commit", "start_ray", "check_resources", "build_tuner", "fail_unfinished_children")


@contextlib.contextmanager
def timed_driver_steps():
    """Yield a dict step -> seconds, filled while ``ablation.driver.run_study`` runs inside the block."""
    import ray
    import ablation.driver as driver
    times: dict[str, float] = {}
    marks: dict[str, float] = {}
    originals = {name: getattr(driver, name) for name in DRIVER_STEPS if hasattr(driver, name)}
    shutdown = ray.shutdown

    def wrap(name, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                times[name] = times.get(name, 0.0) + time.perf_counter() - start
                marks[name] = time.time()
        return timed

    for name, fn in originals.items():
        setattr(driver, name, wrap(name, fn))
    ray.shutdown = wrap("ray.shutdown", shutdown)
    try:
        yield times, marks
    finally:
        for name, fn in originals.items():
            setattr(driver, name, fn)
        ray.shutdown = shutdown


class MachineCpu:
    """Busy CPU seconds of the whole machine (all processes: the driver, Ray's own, the trial workers), sampled from
    ``/proc/stat`` every 50 ms while the block runs; ``busy_between(a, b)`` reads them for a wall-clock span."""

    def __init__(self):
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def _busy() -> float:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
        return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), self._busy()))
            self._stop.wait(0.05)

    def __enter__(self):
        if Path("/proc/stat").exists():
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def busy_between(self, start: float, end: float) -> float:
        if not self.samples:
            return float("nan")
        at = lambda t: min(self.samples, key=lambda s: abs(s[0] - t))[1]  # noqa: E731
        return at(end) - at(start)


def run_study_timed(spec, folder: Path, num_cpus: int = 2) -> dict:
    """``run_study`` on a fresh local Ray and a scratch MLflow store: wall time, and from the trials' MLflow runs
    the time inside the trial functions, the start-up before the first trial and the tear-down after the last."""
    from mlflow.tracking import MlflowClient
    from ablation.driver import run_study
    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with timed_driver_steps() as (steps, marks), MachineCpu() as cpu:
        t_start = time.time()
        start = time.perf_counter()
        outcome = run_study(spec, tracking_uri=uri, storage_path=str(folder / "ray_results"), num_cpus=num_cpus,
                            build_report=False)
        wall = time.perf_counter() - start
    t_end = time.time()
    if outcome.finished != outcome.total:
        raise RuntimeError(f"study {spec.name}: {outcome.finished}/{outcome.total} trials finished")
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(spec.name)
    runs = [r for r in client.search_runs([exp.experiment_id]) if TrialTags.from_tags(r.data.tags).is_trial]
    spans = sorted((r.info.start_time / 1000, r.info.end_time / 1000) for r in runs)
    in_trial = sum(b - a for a, b in spans)
    epoch_time = sum(m.value for r in runs for m in client.get_metric_history(r.info.run_id, "time_epoch"))
    startup = spans[0][0] - t_start if spans else float("nan")
    # The machine's busy CPU over the start-up: near cores x start-up, the start-up waits on CPU, not on sleeps
    startup_cpu = cpu.busy_between(t_start, spans[0][0]) if spans else float("nan")
    teardown = t_end - spans[-1][1] if spans else float("nan")
    # From the Tuner's creation (fit starts right after) to the first trial's MLflow run: Tune's set-up, the trial
    # actor's process start and its imports (torch, torchvision, the trainable), the trial's config.
    fit_to_first = spans[0][0] - marks["build_tuner"] if spans and "build_tuner" in marks else float("nan")
    # Checkpoints the trials handed to Tune (each one copied into the storage path): Tune's result rows name them.
    handed = sum(json.loads(line).get("checkpoint_dir_name") is not None
                 for result in Path(outcome.ray_path).glob("*/result.json")
                 for line in result.read_text().splitlines() if line.strip())
    return {"handed_checkpoints": handed, "wall": wall, "in_trial": in_trial, "epoch_time": epoch_time, "trials": len(runs),
            "startup_s": startup, "startup_cpu_s": startup_cpu, "teardown_s": teardown, "driver_steps": dict(steps),
            "fit_to_first_trial_s": fit_to_first,
            "between_trials_s": wall - in_trial - startup - teardown if spec.max_concurrent == 1 else float("nan")}


# --- the breakdown -----------------------------------------------------------------------------------------------

def time_worker_imports() -> float:
    """A fresh process importing the trainable (torch, torchvision, mlflow, the trainer) after Ray itself."""
    code = ("import time, ray, ray.tune; t = time.perf_counter(); import ablation.trainable, core.factory; "
            "print(time.perf_counter() - t)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    return float(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else float("nan")


def time_mlflow_per_trial(spec, folder: Path, n: int, epochs: int) -> float:
    """One trial's MLflow calls (worker side + the driver callback's lookup), averaged over ``n`` trials."""
    from mlflow.tracking import MlflowClient
    from ablation.tracking import (TrialRun, create_parent_run, ensure_experiment, find_child)
    from core.config import to_flat_dict, to_yaml
    uri = f"sqlite:///{folder / 'mlflow_probe.db'}"
    client = MlflowClient(uri)
    exp_id = ensure_experiment(client, "probe")
    parent = create_parent_run(client, exp_id, StudyTags(study="probe"), params={"study.trials": n})
    cfg = spec.plan[0].config
    metrics = {"loss": 1.0, "loss_id": 1.0, "loss_metric": 0.5, "lr": 1e-3, "images_per_sec": 100.0,
               "time_epoch": 1.0, "rank1": 50.0, "rank5": 60.0, "rank10": 70.0, "rank20": 80.0, "mAP": 40.0,
               "mINP": 20.0}
    TrialRun(uri, exp_id, "warmup", TrialTags(parent_run_id=parent, trial_id="warmup"), to_flat_dict(cfg)).finish()
    start = time.perf_counter()
    for i in range(n):
        run = TrialRun(uri, exp_id, f"t{i}", TrialTags(parent_run_id=parent, trial_id=f"t{i}", study="probe"),
                       to_flat_dict(cfg))
        run.log_text(to_yaml(cfg), "config.yaml")
        for e in range(1, epochs + 1):
            run.log_epoch(e, metrics)
        run.finish()
        find_child(client, exp_id, parent, f"t{i}")  # TrialStatusCallback.on_trial_complete
    return (time.perf_counter() - start) / n


def _checkpoint_copy(src: Path, folder: Path) -> tuple[float, float]:
    size = sum(p.stat().st_size for p in src.rglob("*") if p.is_file()) / 2 ** 20
    best = float("inf")
    for i in range(2):
        dst = folder / f"ckpt_copy{i}"
        start = time.perf_counter()
        shutil.copytree(src, dst)
        best = min(best, time.perf_counter() - start)
        shutil.rmtree(dst)
    return best, size


def run(quick: bool) -> list[Figure]:
    st = settings(quick)
    n, epochs = st["trials"], st["epochs"]
    with workdir("bench_study_") as folder:
        spec = make_spec("bench_study", n, epochs, st["steps"], max_concurrent=1)
        prepare(spec)
        loop, study = run_loop_split(spec, folder / "loop", lambda: run_study_timed(spec, folder / "study"))
        # what a few of the pieces cost on their own
        imports_s = time_worker_imports()
        mlflow_s = time_mlflow_per_trial(spec, folder, min(n, 8), epochs)
        copy_s, ckpt_mib = _checkpoint_copy(folder / "loop" / "trial0", folder)
    overhead = (study["wall"] - loop["wall"]) / study["wall"]
    # The same with each side's own training steps taken out: on a shared machine the steps' speed drifts by a few
    # percent between the two sides (as much as the target), while what the study adds around them does not.
    outside_steps = ((study["wall"] - study["epoch_time"]) - (loop["wall"] - loop["epoch_time"])) / study["wall"]
    in_trial_extra = study["in_trial"] - loop["wall"]
    steps = study["driver_steps"]
    per_trial = (study["wall"] - loop["wall"]) / n
    # Fixed (once per study) vs per-trial overhead, and the trial length at which the overhead would be 5%:
    # (F + n p) / (F + n p + n T) = 0.05  <=>  T = 19 (F / n + p).
    fixed = study["startup_s"] + study["teardown_s"]
    per_trial_part = max(0.0, (study["wall"] - loop["wall"] - fixed) / n)
    break_even = 19 * (fixed / n + per_trial_part)
    known = ("start_ray", "ray.shutdown", "_open_store", "prepare_data", "git_commit")
    other_driver = sum(v for k, v in steps.items() if k not in known)
    breakdown = {
        "study_startup_s": study["startup_s"], "study_startup_machine_cpu_s": study["startup_cpu_s"],
        "study_between_trials_s": study["between_trials_s"],
        "study_teardown_s": study["teardown_s"], "study_inside_trials_s": study["in_trial"],
        "inside_trials_minus_loop_s": in_trial_extra, "fit_to_first_trial_s": study["fit_to_first_trial_s"],
        "fixed_overhead_s": fixed, "per_trial_overhead_s": per_trial_part, "break_even_trial_s": break_even,
        **{f"driver.{k}_s": v for k, v in steps.items()},
        "study_epoch_time_s": study["epoch_time"], "loop_epoch_time_s": loop["epoch_time"],
        "loop_cores_used": loop["cores_used"], "worker_imports_s": imports_s, "mlflow_per_trial_s": mlflow_s,
        "checkpoint_mib": ckpt_mib, "checkpoint_copy_per_report_s": copy_s,
        "handed_checkpoints": study["handed_checkpoints"],
    }
    label = f"{n} trials x {epochs} epoch(s) x {st['steps']} steps, quick preset, 1 CPU, 1 at a time"
    g = steps.get
    notes = (f"overhead {overhead * 100:.1f}% ({per_trial:.2f} s per trial; {outside_steps * 100:.1f}% with each "
             f"side's own training steps taken out): {fixed:.1f} s fixed per study and "
             f"{per_trial_part:.2f} s per trial, so the overhead falls under 5% for trials longer than "
             f"{break_even:.0f} s (these take {loop['wall'] / n:.1f} s). Start-up before the first trial "
             f"{study['startup_s']:.1f} s = ray.init {g('start_ray', 0):.1f} s (the tracking store's first use, "
             f"{g('_open_store', 0):.1f} s, runs beside it) + dataset check {g('prepare_data', 0):.1f} s + git "
             f"{g('git_commit', 0):.1f} s + other driver steps {other_driver:.1f} s + Tuner.fit to the first trial's "
             f"run {study['fit_to_first_trial_s']:.1f} s (worker start and imports; the imports alone take "
             f"~{imports_s:.1f} s). Between trials {study['between_trials_s']:.1f} s in all; tear-down "
             f"{study['teardown_s']:.1f} s (ray.shutdown {g('ray.shutdown', 0):.1f} s). Inside the trial functions "
             f"{in_trial_extra:+.1f} s vs the loop (MLflow ~{mlflow_s:.2f} s per trial; {study['handed_checkpoints']} "
             f"checkpoints handed to Tune (checkpoint_interval_s={spec.checkpoint_interval_s:g}; the trainer writes "
             f"one every epoch on both sides), Tune copying each {ckpt_mib:.0f} MiB ~{copy_s:.2f} s; the trainings' "
             f"own epoch time "
             f"{study['epoch_time']:.1f} s in the study vs {loop['epoch_time']:.1f} s in the loop)")
    return [
        Figure(f"study wall time ({label})", study["wall"], "s", "the same trainings in a Python loop", loop["wall"],
               "ratio <= 1.0526 (overhead (study - loop) / study < 5%)", notes=notes,
               extra={"overhead": overhead, "overhead_outside_steps": outside_steps,
                      "overhead_per_trial_s": per_trial, **breakdown}),
        Figure("study start-up before the first trial", study["startup_s"], "s", "loop time per trial",
               loop["wall"] / n, "informational",
               notes=f"paid once per study: ray.init, tracking store, dataset check, Tune set-up, worker imports; "
                     f"the machine's busy CPU over it {study['startup_cpu_s']:.1f} s on {os.cpu_count()} cores "
                     f"({study['startup_cpu_s'] / study['startup_s']:.2f} cores busy on average)"),
        Figure("MLflow work per trial", mlflow_s, "s", "loop time per trial", loop["wall"] / n, "informational",
               notes="child run + ~100 params + config.yaml + one log_batch per epoch + close + driver lookup, "
                     "on SQLite (measured on its own)"),
        Figure("checkpoint copy per checkpoint handed to Tune", copy_s, "s", "loop time per trial", loop["wall"] / n,
               "informational", notes=f"copy of a {ckpt_mib:.0f} MiB epoch checkpoint folder (model + Adam state), "
                                      f"as Tune persists each checkpoint a trial hands it (measured on its own)"),
    ]


if __name__ == "__main__":
    start = time.perf_counter()
    for f in run(quick="--quick" in sys.argv):
        print(f, f.ratio)
    print(f"{time.perf_counter() - start:.1f} s")
