"""Build a study's report (markdown table, PNG plots, trials CSV) and attach it to the study's MLflow parent run.

CLI: ``python -m reports.build --study NAME [--tracking-uri URI] [--out DIR] [--parent-run-id ID] [--no-log]``.
The tracking URI defaults to ``sqlite:///<abs cwd>/mlflow.db``, the absolute form of where ``ablation.run`` writes
by default, so running both from the same directory reads the same store. Exit code 2 on a missing study.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reports.collect import (ReportError, collect_trials, finished_mask, load_history, normalize_tracking_uri,
                             open_client, table_trials)
from reports.plots import plot_learning_curves, plot_metric_bars
from reports.tables import aggregate, failed_trials, render_markdown, table_metrics

ARTIFACT_DIR = "report"  # artifact folder of the parent run (ARCHITECTURE.md, "MLflow layout")
CURVE_METRICS = ("rank1", "mAP", "loss")
FILES = {"report": "report.md", "bars": "metrics_bar.png", "curves": "learning_curves.png", "trials": "trials.csv"}


def build_report(study: str, tracking_uri: str, out_dir: str | Path, parent_run_id: str | None = None,
                 log_to_mlflow: bool = True) -> Path:
    """Write report.md, metrics_bar.png, learning_curves.png and trials.csv to ``out_dir``; return report.md.

    With ``log_to_mlflow`` the four files are also logged under ``report/`` of the parent run. Logging an
    artifact does not touch a run's status or end time, so a FINISHED study run stays FINISHED.
    Raises ``ReportError`` when the store, the experiment or the parent run is missing.
    """
    info, all_trials = collect_trials(study, tracking_uri, parent_run_id)
    trials = table_trials(all_trials)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {key: out / name for key, name in FILES.items()}

    agg = aggregate(trials, table_metrics(trials, info.metric), info.baseline)
    history = load_history(info, trials[finished_mask(trials)], CURVE_METRICS)
    all_trials.to_csv(paths["trials"], index=False)
    plot_metric_bars(agg, paths["bars"])
    plot_learning_curves(history, paths["curves"], list(agg.index), CURVE_METRICS)
    meta = {"parent_run_id": info.parent_run_id, "tracking_uri": info.tracking_uri, "metric": info.metric,
            "mode": info.mode, "group_keys": info.group_keys, "baseline": info.baseline,
            "selection": _selection_note(info.selection, all_trials),
            "images": {"Final Rank-1 and mAP per group": FILES["bars"], "Learning curves": FILES["curves"]}}
    paths["report"].write_text(render_markdown(study, agg, failed_trials(trials), meta), encoding="utf-8")

    if log_to_mlflow:
        client = open_client(study, info.tracking_uri)
        for path in paths.values():
            client.log_artifact(info.parent_run_id, str(path), artifact_path=ARTIFACT_DIR)
    return paths["report"]


def _selection_note(selection: str | None, trials) -> str | None:
    """Which split selected what, for a study that selects (None otherwise)."""
    if not selection:
        return None
    n_search = int((trials["phase"] == "search").sum())
    return (f"{n_search} search trials selected the configuration on the validation split (`eval.split=val`); "
            f"the table holds that configuration retrained on the full training split and evaluated on test "
            f"({selection}).")


def default_tracking_uri() -> str:
    """``sqlite:////abs/cwd/mlflow.db``: absolute, because MLflow resolves relative SQLite paths per process."""
    return normalize_tracking_uri("mlflow.db")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports.build", description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True, help="study name (= MLflow experiment name)")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: sqlite:///<abs cwd>/mlflow.db)")
    parser.add_argument("--out", default=None, help="output folder (default: outputs/reports/<study>)")
    parser.add_argument("--parent-run-id", default=None, help="report this study run (default: the latest one)")
    parser.add_argument("--no-log", action="store_true", help="do not log the report to the parent run")
    args = parser.parse_args(argv)
    try:
        report = build_report(args.study, args.tracking_uri or default_tracking_uri(),
                              args.out or Path("outputs") / "reports" / args.study,
                              parent_run_id=args.parent_run_id, log_to_mlflow=not args.no_log)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"report written to {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
