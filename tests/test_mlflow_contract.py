"""The MLflow layout of a study (docs/ARCHITECTURE.md, "MLflow layout"), checked on a store a real study wrote.

One tiny study (2 losses x 2 seeds x 2 epochs) runs once for the module; every test reads its store, Ray's results
or the report that ``python -m reports.build`` makes of it. Expected values are computed here, independently of the
code under test: the schema's keys by walking the config dataclasses, the rounding by hand from Ray's unrounded
results, the table's mean and sample std from the runs' metric histories.
"""
import csv
import dataclasses
import math
import socket
import sqlite3
import statistics
import subprocess
import typing

import pytest

from core import config as config_module
from inprocess import run_main
from tracking.tags import KIND_STUDY, KIND_TRIAL, PARENT_ID_TAG
from studies import ROOT, TINY, history, output, ray_trials, run_study_here, study_runs, with_overrides

KIND_TAG, STUDY_TAG = "kind", "study"  # the contract's keys, as docs/ARCHITECTURE.md names them

pytestmark = pytest.mark.slow
NAME = "contract"
EPOCHS = 2
BODY = {**with_overrides(TINY, solver__epochs=EPOCHS), "seeds": [0, 1]}
# time_epoch and images_per_sec are measured, not trained: still rounded, but not part of the model's result
EVAL_KEYS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("contract")
    proc = run_study_here(workdir, NAME, BODY)
    assert proc.returncode == 0, output(proc)
    client, parents, children = study_runs(workdir, NAME)
    assert len(parents) == 1 and len(children) == 4, [r.info.run_name for r in children]
    assert all(r.info.status == "FINISHED" for r in children)
    return {"workdir": workdir, "client": client, "parent": parents[0], "children": children,
            "histories": {r.info.run_id: {k: history(client, r.info.run_id, k) for k in r.data.metrics}
                          for r in children}}


def schema_dotted_keys() -> set[str]:
    """Every leaf of the config schema as ``section.field``, found by walking the ``Config`` dataclass."""
    keys = set()

    def walk(cls, prefix):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                walk(tp, f"{prefix}{f.name}.")
            else:
                keys.add(f"{prefix}{f.name}")

    walk(config_module.Config, "")
    return keys


def test_every_logged_metric_value_has_six_significant_digits(study):
    client = study["client"]
    checked = 0
    for run in study["children"]:
        for key, points in study["histories"][run.info.run_id].items():
            assert [p.step for p in points] == list(range(1, EPOCHS + 1)), (run.info.run_name, key)
            for p in points:
                assert float(f"{p.value:.6g}") == p.value, (run.info.run_name, key, p.step, p.value)
                checked += 1
    assert checked >= 4 * EPOCHS * 10


def test_logged_metrics_are_rays_results_rounded_to_six_significant_digits(study):
    """Ray keeps the trial's values unrounded (result.json); MLflow holds each rounded by hand to 6 digits."""
    trials = ray_trials(study["parent"].data.tags["study.ray_path"])
    assert len(trials) == 4
    compared = 0
    for run in study["children"]:
        lines = trials[run.data.tags["trial_id"]]
        assert [line["epoch"] for line in lines] == list(range(1, EPOCHS + 1))
        for key, points in study["histories"][run.info.run_id].items():
            for p in points:
                raw = lines[p.step - 1][key]
                assert p.value == float(f"{raw:.6g}"), (run.info.run_name, key, p.step, raw, p.value)
                compared += 1
        # more digits than six exist in what Ray saw, so the rounding is a real one, not a no-op
        assert any(float(f"{line['loss']:.6g}") != line["loss"] for line in lines)
    assert compared >= 4 * EPOCHS * 10


def test_rank1_is_the_first_metric_of_every_epoch(study):
    """MLflow stores a batch's metrics in the order given: rank1 is the first row written at every step."""
    db = sqlite3.connect(study["workdir"] / "mlflow.db")
    try:
        for run in study["children"]:
            for step in range(1, EPOCHS + 1):
                keys = [k for (k,) in db.execute("SELECT key FROM metrics WHERE run_uuid = ? AND step = ? "
                                                 "ORDER BY rowid", (run.info.run_id, step))]
                assert keys and keys[0] == "rank1", (run.info.run_name, step, keys)
                assert len(keys) == len(set(keys))  # one value per metric and epoch
    finally:
        db.close()


def test_child_params_are_exactly_the_schema_keys_with_resolved_values(study):
    expected = schema_dotted_keys()
    assert len(expected) > 50 and "loss.type" in expected and "model.neck" in expected
    for run in study["children"]:
        params = run.data.params
        assert set(params) == expected, (sorted(set(params) ^ expected))
        assert not [k for k, v in params.items() if v == "auto"], run.info.run_name
        assert params["model.neck"] in ("no", "csbn") and params["run.device"] == "cpu"


def test_run_tags_name_the_trial_the_commit_the_host_and_the_parent(study):
    parent = study["parent"]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert parent.data.tags[KIND_TAG] == KIND_STUDY and parent.data.tags[STUDY_TAG] == NAME
    assert parent.data.tags["study.metric"] == "rank1" and parent.data.tags["study.mode"] == "max"
    assert parent.data.tags["study.group_keys"] == "loss.type"
    assert parent.data.tags["study.baseline"] == "loss.type=triplet"
    assert parent.data.tags["study.algorithm"] == "grid" and parent.data.tags["git_commit"] == commit
    assert PARENT_ID_TAG not in parent.data.tags
    trial_ids = set()
    for run in study["children"]:
        tags = run.data.tags
        assert tags[PARENT_ID_TAG] == parent.info.run_id
        assert tags[KIND_TAG] == KIND_TRIAL and tags[STUDY_TAG] == NAME
        assert tags["git_commit"] == commit
        assert tags["hostname"] == socket.gethostname() and tags["node_id"]
        assert tags["trial_id"]
        trial_ids.add(tags["trial_id"])
        assert tags["group"] == f"loss.type={run.data.params['loss.type']}"
        assert tags["seed"] == run.data.params["solver.seed"]
        assert "stopped_early" not in tags and "failure_reason" not in tags and "phase" not in tags
    assert trial_ids == set(ray_trials(parent.data.tags["study.ray_path"]))  # one run per Tune trial


def test_report_table_is_the_mean_and_sample_std_of_the_final_metrics(study, tmp_path):
    workdir = study["workdir"]
    out = tmp_path / "report"
    proc = run_main("reports.build", ["--study", NAME, "--tracking-uri", str(workdir / "mlflow.db"), "--out",
                                      str(out), "--no-log"], cwd=workdir, timeout=300)
    assert proc.returncode == 0, output(proc)
    # final metric of a run: the value logged at its last step, from the metric history
    final: dict[str, dict[str, list[float]]] = {}
    for run in study["children"]:
        points = study["histories"][run.info.run_id]
        for key in ("rank1", "mAP", "mINP"):
            final.setdefault(run.data.tags["group"], {}).setdefault(key, []).append(points[key][-1].value)
    with open(out / "table.csv", newline="") as f:
        table = {row["group"]: row for row in csv.DictReader(f)}
    report = (out / "report.md").read_text()
    assert list(table) == ["loss.type=triplet", "loss.type=expat"]  # baseline first
    for group, metrics in final.items():
        row = table[group]
        assert int(row["n"]) == 2 and int(row["n_failed"]) == 0
        for key, values in metrics.items():
            mean, std = statistics.mean(values), statistics.stdev(values)  # sample std: ddof = 1
            assert math.isclose(float(row[f"{key}_mean"]), mean, rel_tol=1e-9, abs_tol=1e-9), (group, key)
            assert math.isclose(float(row[f"{key}_std"]), std, rel_tol=1e-9, abs_tol=1e-9), (group, key)
            cells = [c.strip().strip("*") for c in report_row(report, group).split("|")]
            assert f"{mean:.2f} ± {std:.2f}" in cells, (group, key, cells)
            if group != "loss.type=triplet":  # Δ: the group's mean minus the baseline's
                delta = mean - statistics.mean(final["loss.type=triplet"][key])
                assert f"{delta:+.2f}" in cells, (group, key, delta, cells)


def report_row(report: str, group: str) -> str:
    """The results-table line of ``group`` in report.md."""
    table = report[report.index("## Results"):report.index("## Comparison")]
    (line,) = [line for line in table.splitlines()
               if line.startswith("| ") and line.split("|")[1].strip().split(" (baseline)")[0] == group]
    return line



def test_every_evaluated_epoch_logs_every_diag_metric_and_the_trial_its_angle_samples(study):
    """Generated SYSU data is cross-modal: all 21 diag.* metrics (angles, separability, norms of both modalities
    and of the pre-neck feature, modality gap), and the train.* counters of the trial's mining loss term, at every
    epoch (eval.every=1); the angle samples of the last evaluation as one JSON artifact."""
    import json
    from core.names import DIAG_METRICS, DIAG_SAMPLES_ARTIFACT, MINING_TERMS, TRAIN_STATS
    assert len(DIAG_METRICS) == 21 and {"diag.pos_angle_mean", "diag.neg_angle_p5", "diag.angle_auc",
                                        "diag.norm_ir_mean", "diag.modality_angle_shift"} <= set(DIAG_METRICS)
    client = study["client"]
    for run in study["children"]:
        hist = study["histories"][run.info.run_id]
        for key in DIAG_METRICS:
            assert [m.step for m in hist.get(key, [])] == list(range(1, EPOCHS + 1)), (run.info.run_name, key)
        train_keys = [k for k in hist if k.startswith("train.")]
        # one mining term per trial here (triplet or bi-directional expAT), with its three per-epoch statistics
        assert any(set(train_keys) == {f"train.{stat}_{term}" for stat in TRAIN_STATS} for term in MINING_TERMS), \
            train_keys
        assert all([m.step for m in hist[k]] == list(range(1, EPOCHS + 1)) for k in train_keys)
        samples = json.loads(open(client.download_artifacts(run.info.run_id, DIAG_SAMPLES_ARTIFACT, dst_path=str(
            study["workdir"] / run.info.run_id))).read())
        pos, neg = samples["pos"], samples["neg"]
        assert 0 < len(pos) <= 4000 and 0 < len(neg) <= 4000 and pos == sorted(pos)
        assert all(0 <= a <= 180 for a in pos + neg)
        if len(pos) < 4000:  # every positive angle of the last evaluation: its mean is the last logged mean
            assert statistics.mean(pos) == pytest.approx(hist["diag.pos_angle_mean"][-1].value, abs=0.01)


def test_the_studys_report_shows_the_diagnostics_beside_rank1(study):
    """The report ablation.run wrote for the study: the Diagnostics table holds, per row, the mean and sample std
    of the trials' final diag.* metrics (read back from the runs here), both plots and the correlation table."""
    folder = study["workdir"] / "outputs" / "reports" / NAME
    report = (folder / "report.md").read_text()
    section = report.split("## Diagnostics")[1].split("\n## ")[0]
    for group in {r.data.tags["group"] for r in study["children"]}:
        finals = [r.data.metrics for r in study["children"] if r.data.tags["group"] == group]
        pos = [m["diag.pos_angle_mean"] for m in finals]
        auc = [m["diag.angle_auc"] for m in finals]
        row = next(line for line in section.splitlines() if line.startswith(f"| {group} |"))
        cells = [c.strip() for c in row.split("|")[1:-1]]
        assert cells[2] == f"{statistics.mean(pos):.3g} ± {statistics.stdev(pos):.2g}", (row, pos)
        assert cells[4] == f"{statistics.mean(auc):.3g} ± {statistics.stdev(auc):.2g}", (row, auc)
    assert "modality gap" in section and "norm IR" in section  # generated SYSU data is cross-modal
    assert "![Angle distributions at the last evaluation](angles.png)" in section
    assert (folder / "angles.png").stat().st_size > 0 and (folder / "diagnostics.png").stat().st_size > 0
    assert "| `diag.angle_auc` |" in section.split("Which diagnostic tracks accuracy")[1]
    with open(folder / "table.csv") as f:
        assert "diag.modality_gap_mean" in next(csv.reader(f))
