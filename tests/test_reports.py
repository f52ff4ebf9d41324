"""Reports against a real MLflow SQLite store laid out as in docs/ARCHITECTURE.md, "MLflow layout".

The store holds an older study run (must be ignored by default) and the latest one with four groups:
triplet (baseline, 3 seeds), expat (2 seeds), expat_center (1 finished + 1 FAILED), broken (1 FAILED).
Eval metrics are logged on some epochs only, and some trials peak before their last eval, so "final" must mean
"last logged step" (not max, not the last epoch of the loss).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param  # noqa: E402

from reports.build import build_report  # noqa: E402
from reports.collect import ReportError, collect_trials, find_study, finished_mask, load_history  # noqa: E402
from reports.plots import curve_stats  # noqa: E402
from reports.tables import aggregate, failed_trials, render_markdown, results_table, table_metrics  # noqa: E402
from stores import new_store_uri  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*noload.*")  # SQLAlchemy 2.1 via MLflow, harmless

ROOT = Path(__file__).resolve().parents[1]
STUDY = "loss_comparison"
T0 = 1_800_000_000_000  # ms; explicit start times make the trial order deterministic

# (group, seed, status, {step: {metric: value}}). Eval (rank1/mAP/mINP) only on epochs 2 and 4, or 2 and 3.
LOSS = {1: 5.0, 2: 4.0, 3: 3.0, 4: 2.5}


def _evals(early: tuple[float, float, float], final: tuple[float, float, float], last_eval: int = 4) -> dict:
    steps = {e: {"loss": v, "lr": 0.01} for e, v in LOSS.items()}
    for step, (r1, mp, minp) in ((2, early), (last_eval, final)):
        steps[step].update({"rank1": r1, "mAP": mp, "mINP": minp})
    return steps


TRIALS = [  # deliberately not in report order: expat starts first, the baseline second
    ("loss.type=expat", 1, "FINISHED", _evals((99.0, 99.0, 99.0), (94.0, 87.0, 60.0))),  # peaks early
    ("loss.type=triplet", 1, "FINISHED", _evals((10.0, 10.0, 10.0), (90.0, 80.0, 50.0))),
    ("loss.type=expat", 2, "FINISHED", _evals((10.0, 10.0, 10.0), (95.0, 88.0, 62.0))),
    ("loss.type=triplet", 2, "FINISHED", _evals((10.0, 10.0, 10.0), (91.0, 81.0, 52.0), last_eval=3)),
    ("loss.type=triplet", 3, "FINISHED", _evals((10.0, 10.0, 10.0), (92.5, 79.5, 54.0))),
    ("loss.type=expat_center", 1, "FINISHED", _evals((10.0, 10.0, 10.0), (94.7, 86.8, 63.0))),
    ("loss.type=expat_center", 2, "FAILED", {1: {"loss": 9.0}, 2: {"loss": 8.0, "rank1": 1.0, "mAP": 1.0}}),
    ("loss.type=broken", 1, "FAILED", {1: {"loss": float("nan")}}),
]
REASONS = {("loss.type=expat_center", 2): "RuntimeError: CUDA out of memory",
           ("loss.type=broken", 1): "ValueError: loss is NaN | epoch 1"}


def _log_trial(client, exp_id, parent_id, n, group, seed, status, steps):
    loss_type = group.split("=")[1]
    reason = REASONS.get((group, seed))
    tags = {"mlflow.parentRunId": parent_id, "kind": "trial", "study": STUDY, "group": group,
            "seed": str(seed), "trial_id": f"abc_{n:05d}", "git_commit": "deadbeef"}
    if reason:
        tags["failure_reason"] = reason
    run = client.create_run(exp_id, start_time=T0 + 1000 * n, run_name=f"{loss_type}/seed={seed}", tags=tags)
    rid = run.info.run_id
    metrics = [Metric(k, v, T0 + 1000 * n + step, step) for step, vals in steps.items() for k, v in vals.items()]
    client.log_batch(rid, metrics=metrics + [Metric("epoch", float(s), T0, s) for s in steps],
                     params=[Param("loss.type", loss_type), Param("solver.seed", str(seed))])
    client.set_terminated(rid, status)
    return rid


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The SQLite store, built once: 2 parent runs, both FINISHED."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = new_store_uri(root / 'mlflow.db')
    assert uri.startswith("sqlite:////")
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment(STUDY, artifact_location=(root / "artifacts").as_uri())
    parent_tags = {"kind": "study", "study": STUDY, "study.metric": "rank1", "study.mode": "max",
                   "study.group_keys": "loss.type", "study.baseline": "loss.type=triplet",
                   "study.ray_path": str(root / "ray")}
    old = client.create_run(exp_id, start_time=T0 - 10**6, run_name=STUDY, tags=parent_tags)
    _log_trial(client, exp_id, old.info.run_id, 0, "loss.type=triplet", 1, "FINISHED",
               _evals((1.0, 1.0, 1.0), (11.0, 11.0, 11.0)))
    client.set_terminated(old.info.run_id, "FINISHED")
    parent = client.create_run(exp_id, start_time=T0, run_name=STUDY, tags=parent_tags)
    pid = parent.info.run_id
    ids = {(g, s): _log_trial(client, exp_id, pid, n + 1, g, s, st, steps)
           for n, (g, s, st, steps) in enumerate(TRIALS)}
    # a trial resumed from a checkpoint re-logs its last epoch: the later value wins
    client.log_metric(ids[("loss.type=expat", 2)], "loss", 2.0, timestamp=T0 + 10**6, step=4)
    client.create_run(exp_id, start_time=T0 + 99_000, run_name="stray", tags={"kind": "trial"})  # not a child
    client.set_terminated(pid, "FINISHED")
    return {"uri": uri, "root": root, "client": client, "parent": pid, "old_parent": old.info.run_id, "ids": ids}


@pytest.fixture(scope="module")
def trials(store):
    return collect_trials(STUDY, store["uri"])[1]


@pytest.fixture(scope="module")
def agg(trials):
    return aggregate(trials, table_metrics(trials, "rank1"), "loss.type=triplet")


@pytest.fixture(scope="module")
def markdown(store, trials, agg):
    meta = {"parent_run_id": store["parent"], "metric": "rank1", "mode": "max", "group_keys": ("loss.type",),
            "baseline": "loss.type=triplet", "date": "2026-11-25 12:00 UTC"}
    return render_markdown(STUDY, agg, failed_trials(trials), meta)


@pytest.fixture(scope="module")
def built(store, tmp_path_factory):
    before = store["client"].get_run(store["parent"]).info
    out = tmp_path_factory.mktemp("report")
    report = build_report(STUDY, store["uri"], out)
    return {"report": report, "out": out, "before": before}


def _row(trials, group, seed):
    return trials[(trials["group"] == group) & (trials["seed"] == seed)].iloc[0]


def test_latest_parent_and_its_children_only(store, trials):
    info = find_study(STUDY, store["uri"])
    assert info.parent_run_id == store["parent"]
    assert (info.metric, info.mode, info.group_keys, info.baseline) == ("rank1", "max", ("loss.type",),
                                                                        "loss.type=triplet")
    assert len(trials) == len(TRIALS)
    assert "stray" not in set(trials["run_name"])
    assert list(trials["run_name"][:2]) == ["expat/seed=1", "triplet/seed=1"]  # trial start order
    bare_path = str(store["root"] / "mlflow.db")  # a bare SQLite path is accepted too
    old = collect_trials(STUDY, bare_path, parent_run_id=store["old_parent"])[1]
    assert list(old["rank1"]) == [11.0]


def test_final_metrics_are_last_logged_step(trials):
    peaked = _row(trials, "loss.type=expat", 1)
    assert (peaked["rank1"], peaked["mAP"], peaked["mINP"]) == (94.0, 87.0, 60.0)  # not the epoch-2 peak 99
    early_eval = _row(trials, "loss.type=triplet", 2)  # last eval at epoch 3, loss until epoch 4
    assert (early_eval["rank1"], early_eval["mAP"], early_eval["loss"], early_eval["epoch"]) == (91.0, 81.0, 2.5, 4)
    assert early_eval["loss.type"] == "triplet" and early_eval["status"] == "FINISHED"
    failed = _row(trials, "loss.type=expat_center", 2)
    assert failed["status"] == "FAILED" and failed["failure_reason"] == "RuntimeError: CUDA out of memory"
    assert list(finished_mask(trials)).count(True) == 6
    assert trials["seed"].dtype == "Int64"


def test_history_and_curve_stats(store, trials):
    info = find_study(STUDY, store["uri"])
    hist = load_history(info, trials[finished_mask(trials)], ("rank1", "loss"))
    assert set(hist["run_id"]) == {rid for (g, s), rid in store["ids"].items() if (g, s) not in REASONS}
    resumed = hist[(hist["run_id"] == store["ids"][("loss.type=expat", 2)]) & (hist["metric"] == "loss")]
    assert list(resumed["step"]) == [1, 2, 3, 4] and list(resumed["value"]) == [5.0, 4.0, 3.0, 2.0]
    assert _row(trials, "loss.type=expat", 2)["loss"] == 2.0
    stats = curve_stats(hist).set_index(["group", "metric", "step"])
    assert stats.loc[("loss.type=triplet", "rank1", 4), ["mean", "count"]].tolist() == [91.25, 2]
    assert stats.loc[("loss.type=triplet", "rank1", 3), "count"] == 1  # seed 2 evaluated at epoch 3 instead
    assert stats.loc[("loss.type=expat", "rank1", 2), "std"] == pytest.approx(62.932504)  # 99 and 10


def test_aggregate_means_stds_and_deltas(agg):
    assert list(agg.index) == ["loss.type=triplet", "loss.type=expat", "loss.type=expat_center", "loss.type=broken"]
    assert list(agg["n"]) == [3, 2, 1, 0] and list(agg["n_failed"]) == [0, 0, 1, 1]
    base = agg.loc["loss.type=triplet"]
    # rank1 90, 91, 92.5: mean 91.1667, sample var (1.3611 + 0.0278 + 1.7778) / 2 = 1.5833
    assert base["rank1_mean"] == pytest.approx(91.166667) and base["rank1_std"] == pytest.approx(1.258306)
    assert base["mAP_mean"] == pytest.approx(80.166667) and base["mAP_std"] == pytest.approx(0.763763)
    assert base["mINP_mean"] == pytest.approx(52.0) and base["mINP_std"] == pytest.approx(2.0)
    expat = agg.loc["loss.type=expat"]
    assert expat["rank1_std"] == pytest.approx(0.707107) and expat["mAP_mean"] == pytest.approx(87.5)
    assert expat["rank1_delta"] == pytest.approx(3.333333) and expat["mAP_delta"] == pytest.approx(7.333333)
    center = agg.loc["loss.type=expat_center"]  # the failed seed (rank1 1.0) is not averaged in
    assert center["rank1_mean"] == pytest.approx(94.7) and pd.isna(center["rank1_std"])
    assert center["rank1_delta"] == pytest.approx(3.533333)
    assert base["rank1_delta"] == 0.0 and pd.isna(agg.loc["loss.type=broken", "rank1_mean"])


def test_markdown_table_cells(markdown):
    lines = {line.split(" | ")[0].lstrip("| "): line for line in markdown.splitlines() if line.startswith("| ")}
    assert lines["loss.type=triplet (baseline)"] == (
        "| loss.type=triplet (baseline) | 3 | 91.17 ± 1.26 | — | 80.17 ± 0.76 | — "
        "| 52.00 ± 2.00 | — | 91.2 (80.2) |")
    assert lines["loss.type=expat"] == (
        "| loss.type=expat | 2 | 94.50 ± 0.71 | +3.33 | **87.50 ± 0.71** | +7.33 "
        "| 61.00 ± 1.41 | +9.00 | 94.5 (87.5) |")
    assert lines["loss.type=expat_center"] == (
        "| loss.type=expat_center | 1 (+1 failed) | **94.70 ± n/a** | +3.53 | 86.80 ± n/a | +6.63 "
        "| **63.00 ± n/a** | +11.00 | 94.7 (86.8) |")
    assert lines["loss.type=broken"] == (
        "| loss.type=broken | 0 (+1 failed) | failed | — | failed | — | failed | — | failed |")
    assert "| Group | n | Rank-1 | Δ Rank-1 | mAP | Δ mAP | mINP | Δ mINP | Top1 (mAP) |" in markdown


def test_markdown_header_and_failed_section(store, markdown):
    assert markdown.startswith(f"# Study report: {STUDY}\n")
    assert "- Trials: 6 finished, 2 failed or unfinished (8 total)" in markdown
    assert f"`{store['parent']}`" in markdown and "`rank1` (max)" in markdown and "2026-11-25" in markdown
    failed = markdown.split("## Failed trials")[1]
    assert "| expat_center/seed=2 | loss.type=expat_center | 2 | FAILED | RuntimeError: CUDA out of memory |" in failed
    assert "ValueError: loss is NaN \\| epoch 1" in failed  # a pipe in a reason must not break the table


def test_no_baseline_means_no_delta_columns(trials):
    table = results_table(aggregate(trials, ("rank1", "mAP"), None), None)
    assert "Δ" not in table.splitlines()[0]
    assert table.splitlines()[2].startswith("| loss.type=expat | 2 | 94.50 ± 0.71 | **87.50 ± 0.71** | 94.5 (87.5) |")


def test_build_report_writes_files_and_logs_artifacts(store, built):
    out = built["out"]
    assert built["report"] == out / "report.md"
    text = built["report"].read_text()
    assert "## Failed trials" in text and "![Learning curves](learning_curves.png)" in text
    for name in ("metrics_bar.png", "learning_curves.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert len(pd.read_csv(out / "trials.csv")) == len(TRIALS)
    client = store["client"]
    logged = {a.path for a in client.list_artifacts(store["parent"], "report")}
    assert logged == {f"report/{n}" for n in ("report.md", "metrics_bar.png", "learning_curves.png", "trials.csv",
                                            "table.csv", "table.tex")}
    after = client.get_run(store["parent"]).info
    assert (after.status, after.end_time) == (built["before"].status, built["before"].end_time) == (
        "FINISHED", built["before"].end_time)


def test_missing_study_or_store_is_a_report_error(store, tmp_path):
    with pytest.raises(ReportError, match="no_such_study") as err:
        find_study("no_such_study", store["uri"])
    assert store["uri"] in str(err.value) and "python -m ablation.run --study no_such_study" in str(err.value)
    with pytest.raises(ReportError, match="not found"):
        find_study(STUDY, store["uri"], parent_run_id="0" * 32)
    missing = tmp_path / "nowhere" / "mlflow.db"
    with pytest.raises(ReportError, match="no MLflow database"):
        find_study(STUDY, f"sqlite:///{missing}")
    assert not missing.exists()  # MLflow would have created an empty store there


def test_reads_are_retried_through_a_tracking_outage(store, monkeypatch):
    """Every read of the report builder goes through the driver's ``retry``: a call that fails the way a
    restarting server fails (connection refused, after MLflow's own HTTP retries) is repeated, not fatal."""
    expected = collect_trials(STUDY, store["uri"])
    failed = []
    for name in ("get_experiment_by_name", "search_runs", "get_metric_history"):
        real = getattr(MlflowClient, name)

        def flaky(self, *args, _real=real, _name=name, **kwargs):
            if _name not in failed:  # the first call of each kind meets the outage
                failed.append(_name)
                raise ConnectionError("Connection refused: the tracking server is restarting")
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(MlflowClient, name, flaky)
    info, trials = collect_trials(STUDY, store["uri"])
    history = load_history(info, trials, ("rank1",))
    assert failed == ["get_experiment_by_name", "search_runs", "get_metric_history"]
    assert info == expected[0]
    pd.testing.assert_frame_equal(trials, expected[1])
    assert len(history) > 0


def test_cli_exit_code_2_and_no_ray_or_torch(store):
    """Runs the CLI as ``python -m`` would (runpy), then lists what got imported before the exit."""
    # The shared names, the dataset catalogue and the two small file helpers the store checks (tracking.store) use:
    # no heavy imports, and nothing of ablation.
    light = ("core", "core.names", "core.catalogue", "core.cli", "core.files", "core.locks")
    code = (f"LIGHT = {light!r}\n"
            "import runpy, sys\n"
            "sys.argv = ['reports.build', '--study', 'no_such_study', '--tracking-uri', sys.argv[1]]\n"
            "try:\n    runpy.run_module('reports.build', run_name='__main__')\n"
            "except SystemExit as e:\n"
            "    bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'torch', 'core', 'ablation')\n"
            "                 and m not in LIGHT)\n"
            "    print('imported:', bad); raise")
    proc = subprocess.run([sys.executable, "-c", code, store["uri"]], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert proc.stdout.strip() == "imported: []"
    assert "Traceback" not in proc.stderr
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "no_such_study" in error_lines[0] and store["uri"] in error_lines[0]


def test_protocol_names_the_sysu_setting_and_cmc_form_and_the_regdb_direction():
    from reports.collect import protocol
    sysu = {"data.dataset": "sysu_mm01", "eval.sysu_mode": "indoor", "eval.sysu_shot": "multi",
            "eval.sysu_cmc": "official", "eval.trials": "10", "eval.regdb_direction": "unread"}
    assert protocol(sysu) == "SYSU-MM01 indoor-search multi-shot, official CMC, 10 gallery draws"
    regdb = {"data.dataset": "regdb", "eval.sysu_cmc": "unread", "eval.regdb_direction": "t2v"}
    assert protocol(regdb).startswith("RegDB, main direction t2v")
    assert protocol({"data.dataset": "market1501", "eval.sysu_cmc": "unread", "eval.regdb_direction": "unread"}) is None


def test_comparison_section_pairs_by_seed_bolds_cis_that_exclude_zero_and_names_welch_rows():
    """The report's "Comparison with the baseline" section, on trials made here. Expected numbers come from
    scipy.stats directly: row ``a`` shares the baseline's seeds (listed in another order) and is paired seed by seed,
    ``b`` has the same values on seeds the baseline never ran and gets Welch's test (and is named under the table),
    ``c`` has one pair and no test; p is Holm-corrected over the two rows tested."""
    import math

    from scipy import stats as sps

    from reports.tables import comparisons

    base, a_values = [60.0, 70.0, 80.0], [61.0, 71.2, 80.8]  # per-seed differences 1.0, 1.2, 0.8
    rows = [("base", s, v) for s, v in zip((0, 1, 2), base)]
    rows += [("a", s, v) for s, v in zip((2, 0, 1), (80.8, 61.0, 71.2))]
    rows += [("b", s, v) for s, v in zip((10, 11, 12), a_values)]
    rows += [("c", 0, 65.0)]
    trials = pd.DataFrame(rows, columns=["group", "seed", "rank1"])
    trials["mAP"], trials["status"], trials["failure_reason"] = trials["rank1"] / 2, "FINISHED", None
    trials["run_name"] = [f"{g}/seed={s}" for g, s in zip(trials["group"], trials["seed"])]
    agg = aggregate(trials, ("rank1", "mAP"), "base")
    comps = comparisons(trials, agg, ("rank1",), "base")
    text = render_markdown("cmp", agg, failed_trials(trials), {"parent_run_id": "p", "baseline": "base"}, comps)
    section = text.split("## Comparison with the baseline")[1].split("## Failed trials")[0]
    lines = {line.split(" | ")[0].lstrip("| "): line for line in section.splitlines() if line.startswith("| ")}

    paired = sps.ttest_rel(a_values, base)
    welch = sps.ttest_ind(a_values, base, equal_var=False)
    half = sps.t.ppf(0.975, 2) * 0.2 / math.sqrt(3)  # sd of the differences 0.2, 2 df
    holm_a = 2 * paired.pvalue  # the smaller of two p-values: times 2
    holm_b = max(holm_a, welch.pvalue)  # the larger: times 1, never below the one before
    assert holm_a < 0.05 < holm_b
    lo, hi = welch.confidence_interval(0.95)
    assert lines["a"] == f"| a | paired | 3 pairs | **+1.00 [{1 - half:+.2f}, {1 + half:+.2f}]** | {holm_a:.3f} | — |"
    b = lines["b"].split(" | ")
    assert b[:5] == ["| b", "Welch", "3 vs 3", f"+1.00 [{lo:+.2f}, {hi:+.2f}]", f"{holm_b:.3f}"]  # CI holds 0
    assert int(b[5].rstrip(" |")) > 3  # not detected with 3 seeds: how many would detect it
    assert lines["c"] == "| c | n/a | 1 pair | +5.00 (n/a) | n/a | — |"
    assert "Welch's unequal-variance t-test" in section and section.rstrip().endswith("for: `b`.")


def test_table_csv_and_tex_carry_the_cis_the_paired_difference_and_the_best_mean_in_bold(built):
    """table.csv: per group n, mean, sample std and the 95% CI of the mean (scipy's t interval, computed here), and
    per compared metric the paired difference (the mean of per-seed differences on shared seeds: 4.0 for expat,
    not the 3.33 between the group means), its test and Holm p; table.tex: a booktabs table with each column's best
    mean in bold."""
    from scipy import stats as sps

    out = built["out"]
    table = pd.read_csv(out / "table.csv", keep_default_na=False, na_values=[""]).set_index("group")
    base = pd.Series([90.0, 91.0, 92.5])
    lo, hi = sps.t.interval(0.95, len(base) - 1, loc=base.mean(), scale=sps.sem(base))
    row = table.loc["loss.type=triplet"]
    assert (row["n"], row["n_failed"]) == (3, 0)
    assert (row["rank1_mean"], row["rank1_std"]) == (pytest.approx(91.166667), pytest.approx(1.258306))
    assert (row["rank1_ci_low"], row["rank1_ci_high"]) == (pytest.approx(lo), pytest.approx(hi))
    expat = table.loc["loss.type=expat"]
    assert expat["rank1_test"] == "paired" and expat["rank1_diff"] == pytest.approx(4.0)  # seeds 1, 2: +4, +4
    assert expat["mAP_diff"] == pytest.approx(7.0) and expat["rank1_p_holm"] == 0.0
    assert table.loc["loss.type=expat_center", "rank1_test"] == "n/a"  # one finished seed: one pair, no test
    tex = (out / "table.tex").read_text()
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    lines = {line.split(" & ")[0]: line for line in tex.splitlines() if " & " in line}
    assert lines["loss.type=expat"].startswith(r"loss.type=expat & 2 & 94.50 $\pm$ 0.71 & \textbf{87.50 $\pm$ 0.71} &")
    assert lines[r"loss.type=expat\_center"].startswith(r"loss.type=expat\_center & 1 & \textbf{94.70} & 86.80 &")


def test_cli_on_a_study_with_no_finished_trial_writes_the_report_and_exits_1(tmp_path, capsys):
    """The report shows why (each trial's failure); the exit status and one stderr line say nothing finished."""
    from reports.build import main
    uri = new_store_uri(tmp_path / 'mlflow.db')
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment("allfail", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(exp_id, run_name="allfail", tags={
        "kind": "study", "study": "allfail", "study.metric": "rank1", "study.mode": "max",
        "study.group_keys": "loss.type", "study.baseline": "loss.type=triplet", "study.ray_path": str(tmp_path)})
    for loss_type in ("triplet", "expat"):
        run = client.create_run(exp_id, run_name=f"{loss_type}/seed=0", tags={
            "mlflow.parentRunId": parent.info.run_id, "kind": "trial", "study": "allfail",
            "group": f"loss.type={loss_type}", "seed": "0", "trial_id": loss_type,
            "failure_reason": "NonFiniteLossError: loss became nan"})
        client.log_param(run.info.run_id, "loss.type", loss_type)
        client.set_terminated(run.info.run_id, "FAILED")
    assert main(["--study", "allfail", "--tracking-uri", uri, "--out", str(tmp_path / "out"), "--no-log"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if "mlflow.store.db.utils" not in line]
    report = tmp_path / "out" / "report.md"
    assert err == [f"error: study allfail has no finished trial; the report {report} lists each trial and why it "
                   f"did not finish"]  # (MLflow's own notice of a new store's tables aside)
    assert report.read_text().count("NonFiniteLossError: loss became nan") == 2
