"""``python -m ablation.run --study NAME``: run a study as Ray Tune trials, each logged as an MLflow child run.

A thin layer over ``ablation.api`` (the same plan, checks and locations as a study run from Python): the arguments,
the plan as text, one-line refusals and the exit status.

    python -m ablation.run --study loss_comparison            # local Ray, ./mlflow.db
    python -m ablation.run --study loss_comparison --dry-run  # print the trial plan
    python -m ablation.run --study loss_comparison --resume   # continue an interrupted study
    python -m ablation.run --study margin_sweep --address ray://head:10001 --tracking-uri http://mlflow:5000
"""
from __future__ import annotations

import argparse
import shlex
import sys

from ablation import api
from ablation.study import StudyError, StudySpec
from core.cli import ArgumentParser, interrupted_status, one_line, refuse, short_warnings, stop_like_ctrl_c
from core.config import ConfigError, parse_overrides


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of CPUs >= 1, got {text!r}")
    return value


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m ablation.run", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", required=True, help="name of search_spaces/NAME.yaml, or a path to a study YAML")
    p.add_argument("--resume", action="store_true", help="continue the latest run of this study")
    p.add_argument("--address", default=None, help="Ray cluster address (default: start Ray locally)")
    p.add_argument("--dry-run", action="store_true", help="print the trial plan and exit")
    p.add_argument("--estimate", action="store_true",
                   help="time a few training steps and the test forward pass of one trial on this machine, print "
                        "the study's iterations, images and wall time, and exit (nothing is logged)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key for every trial, e.g. --set solver.epochs=2")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite ./mlflow.db)")
    p.add_argument("--storage-path", default="ray_results", help="Ray results folder (made absolute)")
    p.add_argument("--num-cpus", type=_positive_int, default=None, help="CPUs for a local Ray (default: all)")
    p.add_argument("--no-report", action="store_true", help="skip building the report at the end")
    p.add_argument("--verbose", type=int, default=0, help="Ray Tune verbosity 0..3")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return parser().parse_args(argv)


def resume_command(args: argparse.Namespace) -> str:
    """The command that continues this study, as a shell runs it: the study as given (a path stays a path), its
    ``--set`` overrides, and the tracking store, storage path and Ray address where they are not the defaults."""
    defaults = parser().parse_args(["--study", args.study])
    words = ["python", "-m", "ablation.run", "--study", args.study]
    for override in args.overrides:
        words += ["--set", override]
    for flag, key in (("--tracking-uri", "tracking_uri"), ("--storage-path", "storage_path"),
                      ("--address", "address")):
        if getattr(args, key) != getattr(defaults, key):
            words += [flag, getattr(args, key)]
    return shlex.join([*words, "--resume"])


def describe_plan(spec: StudySpec) -> str:
    lines = [f"study {spec.name}: base preset {spec.base!r}, search {spec.algorithm}, "
             f"scheduler {spec.scheduler.get('type', 'fifo')}, metric {spec.metric} ({spec.mode})",
             f"resources per trial: {spec.resources}; overrides: {spec.overrides or '{}'}"]
    if spec.algorithm == "grid":
        rows = list(dict.fromkeys(t.row for t in spec.plan))
        lines.append(f"{spec.search_trials} trials, {len(rows)} distinct rows x {len(spec.seeds)} seeds:")
        lines += [f"  {t.index:3d}  {t.name}" for t in spec.plan]
    else:
        lines.append(f"{spec.search_trials} trials sampled by {spec.algorithm} over "
                     f"{list(spec.search['space'])} (seed {spec.seeds[0]})")
    if spec.selects:
        lines.append(f"selection on eval.split=val; then the best configuration is retrained on the full training "
                     f"split for seeds {spec.refit_seeds} and evaluated on test: the report's table")
    return "\n".join(lines)


def check_this_machine(spec: StudySpec, args: argparse.Namespace) -> None:
    """``ablation.api.check_this_machine`` with the command's ``--address`` and ``--num-cpus``."""
    api.check_this_machine(spec, args.address, args.num_cpus)


def print_estimate(spec: StudySpec, num_cpus: int | None) -> int:
    from ablation.estimate import estimate
    from core.data import DatasetError
    try:
        print(estimate(spec, cpus=num_cpus).describe(spec.name))
    except (StudyError, ConfigError, DatasetError) as exc:
        return refuse(exc)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    short_warnings()
    try:
        spec = api.plan_study(args.study, parse_overrides(args.overrides))
    except (StudyError, ConfigError) as exc:
        return refuse(exc, "study error")
    try:
        check_this_machine(spec, args)
    except StudyError as exc:
        if not args.dry_run:
            return refuse(exc, "study error")
        # A plan is also made for a cluster: the dry run names what this machine lacks, and still shows the plan
        print(f"note: a run here would be refused: {one_line(exc)}", file=sys.stderr)
    print(describe_plan(spec))
    if args.dry_run:
        return 0
    if args.estimate:
        return print_estimate(spec, args.num_cpus)
    from ablation.driver import StudyInterrupted
    from ablation.tracking import TrackingError
    from core.data import DatasetError
    from reports.collect import ReportError
    tracking_uri = api.locations(args.tracking_uri)[0]
    try:
        with stop_like_ctrl_c():  # SIGTERM (a scheduler's stop) takes Ctrl-C's path: Tune stops, runs are ended
            outcome = api.run_study(spec, tracking_uri=args.tracking_uri, storage_path=args.storage_path,
                                    address=args.address, resume=args.resume, num_cpus=args.num_cpus,
                                    build_report=not args.no_report, verbose=args.verbose).outcome
    except StudyInterrupted as exc:
        messages = f" (Ray's messages while stopping: {exc.messages})" if exc.messages else ""
        print(f"interrupted: {one_line(exc)}; run `{resume_command(args)}` to finish the rest{messages}",
              file=sys.stderr)
        return interrupted_status()
    except KeyboardInterrupt:  # a second Ctrl+C (or SIGTERM) while Tune was already stopping
        print(f"interrupted: run `{resume_command(args)}` to finish the study", file=sys.stderr)
        return interrupted_status()
    except (StudyError, TrackingError, DatasetError, ConfigError) as exc:
        return refuse(exc)
    except ReportError as exc:  # the trials ran and are logged; only the report is missing
        print(f"error: study {spec.name} trained, but its report could not be built: {one_line(exc)}; build it "
              f"with `python -m reports.build --study {spec.name} --tracking-uri {tracking_uri}`",
              file=sys.stderr)
        return 1
    print(outcome.summary())
    if outcome.exit_code:
        print(f"error: every trial of study {spec.name} failed; the failure reasons are in the report and in "
              f"each run's failure_reason tag", file=sys.stderr)
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
