"""Build a study's report (markdown table, PNG plots, trials CSV) and attach it to the study's MLflow parent run.

CLI: ``python -m reports.build --study NAME [--tracking-uri URI] [--out DIR] [--parent-run-id ID] [--no-log]``;
``--study A --study B ...`` writes one paper-style table of the studies' latest runs instead (``reports.paper``).
The tracking URI defaults to ``sqlite:///<abs cwd>/mlflow.db``, the absolute form of where ``ablation.run`` writes
by default, so running both from the same directory reads the same store. Bad input (a missing study or parent
run; a tracking store that does not exist, is corrupt or unwritable, a server that is down or refuses the
credentials) exits with code 2 and one line on stderr; no store is ever created.
"""

from __future__ import annotations

import sys
from pathlib import Path

from core.cli import ArgumentParser
from core.names import tracking_uri
from tracking.defaults import apply_mlflow_defaults
from tracking.store import retry
from reports.collect import (ReportError, StudyInfo, collect_trials, finished_mask, load_history, study_client,
                             table_trials)
from reports.diagnostics import build_section as diagnostics_section
from reports.effects import (IMPORTANCE_EVALUATOR, best_trial, interaction_means, main_effects, param_importance,
                             value_order, varied_keys)
from reports.exports import table_frame, write_csv, write_tex
from reports.paper import StudyColumn, dataset_name, paper_frame, render_paper_markdown, render_paper_tex
from reports.plots import plot_importance, plot_interaction, plot_learning_curves, plot_metric_bars
from reports.tables import (aggregate, compared_metrics, comparisons, effects_section, failed_trials,
                            importance_section, render_markdown, table_metrics, targets_section)
from reports.targets import CHECKPOINT_METRICS, best_checkpoint, compare_targets

ARTIFACT_DIR = "report"  # artifact folder of the parent run (ARCHITECTURE.md, "MLflow layout")
CURVE_METRICS = ("rank1", "mAP", "loss")
FILES = {"report": "report.md", "bars": "metrics_bar.png", "curves": "learning_curves.png", "trials": "trials.csv",
         "csv": "table.csv", "tex": "table.tex", "interaction": "interaction.png", "importance": "importance.png"}
PAPER_FILES = {"report": "paper.md", "csv": "paper.csv", "tex": "paper.tex"}


def analysis_sections(info: StudyInfo, trials, agg, paths: dict[str, Path],
                      best=None) -> tuple[list[str], list[Path]]:
    """The report's optional sections and the figures they embed: paper targets (when the study declares them),
    main effects with an interaction plot (grid studies varying two or more keys), parameter importance with the
    best trial (search studies)."""
    sections, figures = [], []
    if info.targets:
        sections.append(targets_section(compare_targets(agg, info.targets, best), info.targets.get("source", "")))
    keys = varied_keys(trials, info.group_keys)
    if info.algorithm == "grid" and len(keys) >= 2:
        # the two keys with the most values: the x axis and the lines of the interaction plot
        x_key, line_key = sorted(keys, key=lambda k: -trials[k].nunique())[:2]
        others = [k for k in keys if k not in (x_key, line_key)]
        points = interaction_means(trials, x_key, line_key, info.metric, others)
        figures.append(plot_interaction(points, x_key, line_key, info.metric, paths["interaction"],
                                        value_order(points[x_key]), value_order(points[line_key])))
        sections.append(effects_section(main_effects(trials, keys, info.metric), info.metric, FILES["interaction"]))
    elif info.algorithm != "grid":
        importance = param_importance(trials, list(info.group_keys), info.metric, info.mode)
        if not importance.empty:
            figures.append(plot_importance(importance, paths["importance"]))
        sections.append(importance_section(importance, best_trial(trials, info.metric, info.mode), info.group_keys,
                                           info.metric, IMPORTANCE_EVALUATOR,
                                           None if importance.empty else FILES["importance"]))
    return sections, figures


def build_report(study: str, tracking_uri: str, out_dir: str | Path, parent_run_id: str | None = None,
                 log_to_mlflow: bool = True) -> Path:
    """Write report.md, metrics_bar.png, learning_curves.png, trials.csv, table.csv and table.tex (plus
    interaction.png or importance.png where the study has them, and angles.png and diagnostics.png where its
    trials logged diagnostics: ``reports.diagnostics``) to ``out_dir``; return report.md.

    With ``log_to_mlflow`` the files are also logged under ``report/`` of the parent run. Logging an
    artifact does not touch a run's status or end time, so a FINISHED study run stays FINISHED.
    Raises ``ReportError`` when the store, the experiment or the parent run is missing.
    """
    info, all_trials = collect_trials(study, tracking_uri, parent_run_id)
    trials = table_trials(all_trials)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {key: out / name for key, name in FILES.items()}

    agg = aggregate(trials, table_metrics(trials, info.metric), info.baseline)
    comps = comparisons(trials, agg, compared_metrics(agg, info.metric), info.baseline)
    history = load_history(info, trials[finished_mask(trials)], CURVE_METRICS)
    all_trials.to_csv(paths["trials"], index=False)
    diag_section, diag_figures, csv_agg = diagnostics_section(info, trials, all_trials, agg, out)
    write_csv(table_frame(trials, csv_agg, comps), paths["csv"])  # with the diagnostics' columns
    write_tex(agg, comps, info.baseline, paths["tex"], caption=f"Study {study}")
    plot_metric_bars(agg, paths["bars"])
    plot_learning_curves(history, paths["curves"], list(agg.index), CURVE_METRICS)
    # Knob effects and importance come from the trials that explored the settings: in a study that selects, the
    # search trials (the refit trials of the table all share one configuration).
    explored = all_trials[all_trials["phase"] == "search"] if (all_trials["phase"] == "refit").any() else trials
    # A reproduction's test-selected numbers (eval.every_iters), shown apart from the final ones
    best = best_checkpoint(load_history(info, trials[finished_mask(trials)], CHECKPOINT_METRICS)) \
        if info.targets else None
    sections, figures = analysis_sections(info, explored.reset_index(drop=True), agg, paths, best)
    sections, figures = sections + [diag_section], figures + diag_figures
    meta = {"parent_run_id": info.parent_run_id, "tracking_uri": info.tracking_uri, "metric": info.metric,
            "mode": info.mode, "group_keys": info.group_keys, "baseline": info.baseline,
            "selection": _selection_note(info.selection, all_trials),
            "protocol": "; ".join(dict.fromkeys(p for p in trials["protocol"].dropna())) or None,
            "images": {"Final Rank-1 and mAP per group": FILES["bars"], "Learning curves": FILES["curves"]}}
    paths["report"].write_text(render_markdown(study, agg, failed_trials(trials), meta, comps, sections),
                               encoding="utf-8")

    if log_to_mlflow:
        client = study_client(info)
        written = [paths[k] for k in ("report", "bars", "curves", "trials", "csv", "tex")] + figures
        for path in written:
            retry(lambda p=path: client.log_artifact(info.parent_run_id, str(p), artifact_path=ARTIFACT_DIR))
    return paths["report"]


def build_paper(studies: list[str], tracking_uri: str, out_dir: str | Path) -> Path:
    """Write paper.md, paper.csv and paper.tex to ``out_dir``: the latest run of each study as one column of a
    paper-style table (``reports.paper``); return paper.md. Nothing is logged to MLflow (no run owns it)."""
    columns, sources = [], []
    for study in studies:
        info, trials = collect_trials(study, tracking_uri)
        agg = aggregate(trials, table_metrics(trials, info.metric), info.baseline)
        columns.append(StudyColumn(study, dataset_name(trials["dataset"]), agg, info.targets))
        sources.append((info.targets or {}).get("source", ""))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frame = paper_frame(columns)
    frame.to_csv(out / PAPER_FILES["csv"], index=False)
    (out / PAPER_FILES["tex"]).write_text(render_paper_tex(frame), encoding="utf-8")
    report = out / PAPER_FILES["report"]
    report.write_text(render_paper_markdown(frame, studies, sources), encoding="utf-8")
    return report


def _selection_note(selection: str | None, trials) -> str | None:
    """Which split selected what, for a study that selects (None otherwise)."""
    if not selection:
        return None
    n_search = int((trials["phase"] == "search").sum())
    return (f"{n_search} search trials selected the configuration on the validation split (`eval.split=val`); "
            f"the table holds that configuration retrained on the full training split and evaluated on test "
            f"({selection}).")


def main(argv: list[str] | None = None) -> int:
    apply_mlflow_defaults()  # the CLI's settings; importing reports leaves the environment as it is
    parser = ArgumentParser(prog="python -m reports.build", description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True, action="append",
                        help="study name (= MLflow experiment name); give it several times for one paper-style "
                             "table of those studies (paper.md, paper.csv, paper.tex)")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: sqlite:///<abs cwd>/mlflow.db)")
    parser.add_argument("--out", default=None,
                        help="output folder (default: outputs/reports/<study>, or outputs/reports/paper)")
    parser.add_argument("--parent-run-id", default=None, help="report this study run (default: the latest one)")
    parser.add_argument("--no-log", action="store_true", help="do not log the report to the parent run")
    args = parser.parse_args(argv)
    studies = list(dict.fromkeys(args.study))
    uri = tracking_uri(args.tracking_uri)
    if len(studies) > 1 and args.parent_run_id:
        print("error: --parent-run-id names one study run; give one --study with it", file=sys.stderr)
        return 2
    try:
        if len(studies) > 1:
            report = build_paper(studies, uri, args.out or Path("outputs") / "reports" / "paper")
        else:
            report = build_report(studies[0], uri, args.out or Path("outputs") / "reports" / studies[0],
                                  parent_run_id=args.parent_run_id, log_to_mlflow=not args.no_log)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the output folder or a file in it cannot be written
        print(f"error: cannot write {exc.filename or args.out}: {exc.strerror or exc}; pass --out with a writable "
              f"folder", file=sys.stderr)
        return 2
    print(f"report written to {report}")
    if len(studies) == 1 and not _finished(studies[0], uri, args.parent_run_id):
        print(f"error: study {studies[0]} has no finished trial; the report {report} lists each trial and why it "
              f"did not finish", file=sys.stderr)
        return 1
    return 0


def _finished(study: str, uri: str, parent_run_id: str | None) -> int:
    """How many of the report's trials finished (what its means are made of)."""
    trials = table_trials(collect_trials(study, uri, parent_run_id)[1])
    return int(finished_mask(trials).sum())


if __name__ == "__main__":
    sys.exit(main())
