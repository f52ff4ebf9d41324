"""The report's Diagnostics section (reports.diagnostics) on a real MLflow SQLite store whose trials logged diag.*
metrics and angle samples with hand-chosen values, and on a study without diagnostics (eval.diagnostics=false)."""
from __future__ import annotations

import csv
import os

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param  # noqa: E402

from core.names import DIAG_SAMPLES_ARTIFACT  # noqa: E402
from reports.build import build_report  # noqa: E402
from reports.collect import collect_trials, load_run_json  # noqa: E402
from reports.diagnostics import OFF_NOTE, correlations, pooled_samples  # noqa: E402
from stores import new_store_uri  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*noload.*")
T0 = 1_800_000_000_000
# (group, seed, status, final rank1, final diag.pos_angle_mean, final diag.angle_auc, angle samples)
TRIALS = [
    ("loss.type=triplet", 0, "FINISHED", 10.0, 40.0, 0.50, {"pos": [10.0, 20.0], "neg": [80.0]}),
    ("loss.type=triplet", 1, "FINISHED", 20.0, 42.0, 0.60, {"pos": [10.0, 20.0], "neg": [80.0]}),
    ("loss.type=triplet", 2, "FINISHED", 30.0, 44.0, 0.70, {"pos": [10.0, 20.0], "neg": [80.0]}),
    ("loss.type=expat", 0, "FINISHED", 40.0, 30.0, 0.80, {"pos": [30.0], "neg": [90.0, 100.0]}),
    ("loss.type=expat", 1, "FINISHED", 50.0, 31.0, 0.90, {"pos": [30.0], "neg": [90.0, 100.0]}),
    ("loss.type=expat", 2, "FINISHED", 60.0, 32.0, 0.95, {"pos": [30.0], "neg": [90.0, 100.0]}),
    ("loss.type=expat", 3, "FAILED", 99.0, 99.0, 0.10, None),  # left out of every mean and correlation
]


def _study(client, root, name, with_diagnostics):
    exp = client.create_experiment(name, artifact_location=(root / name).as_uri())
    parent = client.create_run(exp, start_time=T0, run_name=name, tags={
        "kind": "study", "study": name, "study.metric": "rank1", "study.mode": "max",
        "study.group_keys": "loss.type", "study.baseline": "loss.type=triplet"})
    for n, (group, seed, status, r1, pos, auc, samples) in enumerate(TRIALS):
        run = client.create_run(exp, start_time=T0 + 1000 * (n + 1), run_name=f"{group}/seed={seed}", tags={
            "mlflow.parentRunId": parent.info.run_id, "kind": "trial", "study": name, "group": group,
            "seed": str(seed), "trial_id": f"t{n}"})
        rid = run.info.run_id
        final = {"rank1": r1, "mAP": r1 / 2}
        if with_diagnostics:  # epoch 1 differs from the final epoch 2; the negative angle is the same everywhere
            final.update({"diag.pos_angle_mean": pos, "diag.angle_auc": auc, "diag.neg_angle_mean": 80.0,
                          "diag.norm_rgb_mean": 5.0, "diag.norm_ir_mean": 3.0, "diag.modality_gap": 0.5,
                          "train.active_hinge_expat_bidir": 1.0})
        metrics = [Metric(k, v, T0, 2) for k, v in final.items()] + [Metric(k, v - 1, T0, 1) for k, v in final.items()]
        client.log_batch(rid, metrics=metrics, params=[Param("loss.type", group.split("=")[1])])
        if with_diagnostics and samples:
            client.log_dict(rid, samples, DIAG_SAMPLES_ARTIFACT)
        client.set_terminated(rid, status)
    client.set_terminated(parent.info.run_id, "FINISHED")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("diag_store")
    uri = new_store_uri(root / 'mlflow.db')
    client = MlflowClient(tracking_uri=uri)
    _study(client, root, "with_diag", True)
    _study(client, root, "no_diag", False)
    return uri


@pytest.fixture(scope="module")
def reports(store, tmp_path_factory):
    out = {}
    for name in ("with_diag", "no_diag"):
        folder = tmp_path_factory.mktemp(name)
        out[name] = (build_report(name, store, folder, log_to_mlflow=False).read_text(encoding="utf-8"), folder)
    return out


def test_diagnostics_table_has_mean_and_std_over_seeds_beside_rank1(reports):
    text, _ = reports["with_diag"]
    section = text.split("## Diagnostics")[1]
    # triplet: pos angle 40, 42, 44 -> 42 ± 2; Rank-1 10, 20, 30 -> 20 ± 10. expat: 30, 31, 32 -> 31 ± 1 (failed seed out)
    assert "| loss.type=triplet | 20 ± 10 | 42 ± 2 | 80 ± 0 | 0.6 ± 0.1 |" in section
    assert "| loss.type=expat | 50 ± 10 | 31 ± 1 | 80 ± 0 | 0.883 ± 0.076 |" in section
    assert "![Angle distributions at the last evaluation](angles.png)" in section
    assert "![Diagnostics per epoch](diagnostics.png)" in section
    assert "Which diagnostic tracks accuracy" in section and "not that it causes it" in section


def test_spearman_correlation_matches_a_hand_count(store):
    _, trials = collect_trials("with_diag", store)
    corr = correlations(trials, "rank1").set_index("diagnostic")
    # the angle AUC rises with Rank-1 over the six finished trials: rho = 1
    assert corr.at["diag.angle_auc", "rho"] == pytest.approx(1.0)
    # pos angle ranks 4 5 6 1 2 3 against Rank-1 ranks 1..6: sum d^2 = 6 * 9 = 54, rho = 1 - 6 * 54 / (6 * 35)
    assert corr.at["diag.pos_angle_mean", "rho"] == pytest.approx(1 - 6 * 54 / (6 * 35))
    assert corr.at["diag.pos_angle_mean", "n"] == 6
    assert corr.at["diag.neg_angle_mean", "rho"] != corr.at["diag.neg_angle_mean", "rho"]  # constant: NaN


def test_plots_and_csv_columns(reports):
    _, folder = reports["with_diag"]
    assert (folder / "angles.png").stat().st_size > 0 and (folder / "diagnostics.png").stat().st_size > 0
    rows = {r["group"]: r for r in csv.DictReader(open(folder / "table.csv"))}
    assert float(rows["loss.type=triplet"]["diag.pos_angle_mean_mean"]) == pytest.approx(42.0)
    assert float(rows["loss.type=expat"]["diag.pos_angle_mean_std"]) == pytest.approx(1.0)
    trials = list(csv.DictReader(open(folder / "trials.csv")))
    assert sorted(float(t["diag.pos_angle_mean"]) for t in trials) == [30, 31, 32, 40, 42, 44, 99]


def test_a_study_without_diagnostics_says_so_and_has_no_plots_or_columns(reports):
    text, folder = reports["no_diag"]
    assert "## Diagnostics\n\n" + OFF_NOTE in text
    assert not (folder / "angles.png").exists() and not (folder / "diagnostics.png").exists()
    assert not any(c.startswith(("diag.", "train.")) for c in next(csv.reader(open(folder / "table.csv"))))


def test_angle_samples_are_read_back_and_pooled_over_each_rows_finished_seeds(store):
    info, trials = collect_trials("with_diag", store)
    per_run = {r: load_run_json(info, r, DIAG_SAMPLES_ARTIFACT) for r in trials["run_id"]}
    assert sum(v is None for v in per_run.values()) == 1  # the failed trial logged none
    pooled = pooled_samples(trials, ["loss.type=triplet", "loss.type=expat"], per_run)
    assert sorted(pooled["loss.type=triplet"]["pos"]) == [10.0] * 3 + [20.0] * 3
    assert sorted(pooled["loss.type=expat"]["neg"]) == [90.0] * 3 + [100.0] * 3
    assert load_run_json(info, trials["run_id"][0], "no/such.json") is None



def test_the_report_names_only_diagnostics_that_evaluations_log():
    """The table's and the curves' columns are metric names of core.names: a renamed diagnostic cannot silently
    drop out of the report."""
    from core.names import DIAG_METRICS
    from reports.diagnostics import CURVE_METRICS, TABLE_METRICS
    assert set(TABLE_METRICS) <= set(DIAG_METRICS) and set(CURVE_METRICS) <= set(DIAG_METRICS)
    assert {"diag.norm_rgb_mean", "diag.pooled_norm_ir_std"} <= set(DIAG_METRICS)


def test_the_report_cli_reads_the_angle_samples_without_progress_bars(store, tmp_path):
    """MLflow draws a progress bar on stderr for every artifact it downloads (here one per finished trial); the
    report CLI turns them off (tracking.defaults), so what it prints is the report's own lines."""
    from inprocess import run_main
    proc = run_main("reports.build", ["--study", "with_diag", "--tracking-uri", store, "--out", str(tmp_path / "r"),
                                      "--no-log"], cwd=tmp_path, env={"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": None})
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "r" / "report.md").is_file()
    assert "Downloading artifacts" not in proc.stdout + proc.stderr, proc.stderr
