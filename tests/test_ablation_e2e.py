"""A tiny study end to end on real Ray and real MLflow: runs, nesting, report, resume, failed trials."""
import json
import signal

import pytest

# TINY stays importable from here: other study tests build on the end-to-end tests' tiny study
from studies import TINY, run_study_here, study_runs  # noqa: F401

pytestmark = pytest.mark.slow


def test_tiny_study_end_to_end(tmp_path):
    sigint = signal.getsignal(signal.SIGINT)
    proc = run_study_here(tmp_path, "tiny", TINY)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the process goes on with its own Ctrl-C handler (a notebook's KeyboardInterrupt), not the study's Tune's
    assert signal.getsignal(signal.SIGINT) is sigint
    # stderr is a pipe here: one progress line per ended trial, and no Ray status table
    progress = [line for line in proc.stderr.splitlines() if line.startswith(("finished ", "failed "))]
    assert len(progress) == 2 and "2/2 ended, 2 finished, 0 running, 0 failed | best rank1" in progress[-1], proc.stderr
    assert "Trial status" not in proc.stderr + proc.stdout
    assert "deprecated" not in proc.stdout + proc.stderr  # the grid's param space is current Tune API
    client, parents, children = study_runs(tmp_path, "tiny")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent_id = parents[0].info.run_id
    assert sorted(r.info.run_name for r in children) == ["expat/seed=0", "triplet/seed=0"]
    for run in children:
        assert run.data.tags["mlflow.parentRunId"] == parent_id
        assert run.info.status == "FINISHED"
        assert run.data.tags["group"] == f"loss.type={run.data.params['loss.type']}"
        assert run.data.tags["seed"] == "0" and run.data.params["solver.seed"] == "0"
        # params hold what trained: the resolved neck; a key the loss does not read says so
        loss_type = run.data.params["loss.type"]
        assert run.data.params["model.neck"] == {"triplet": "no", "expat": "csbn"}[loss_type]
        assert run.data.params["loss.margin"] == {"triplet": "0.3", "expat": "unread"}[loss_type]
        assert run.data.params["loss.metric_weight"] == "1.0"
        assert 0.0 <= run.data.metrics["rank1"] <= 100.0 and "mAP" in run.data.metrics
        history = client.get_metric_history(run.info.run_id, "rank1")
        assert [m.step for m in history] == [1]
        artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
        assert "config.yaml" in artifacts
    report = (tmp_path / "outputs" / "reports" / "tiny" / "report.md").read_text()
    assert "- Protocol: SYSU-MM01 all-search single-shot, standard CMC, 2 gallery draws" in report
    assert "loss.type=triplet" in report and "loss.type=expat" in report
    # Ray's own records key the trial's values by config keys, not by an index alone
    ray_params = [json.loads(p.read_text()) for p in (tmp_path / "ray_results").glob("tiny-*/run_trial_*/params.json")]
    assert sorted(p["loss.type"] for p in ray_params) == ["expat", "triplet"]
    assert all(p["solver.seed"] == 0 for p in ray_params)
    assert "report" in [a.path for a in client.list_artifacts(parent_id)]
    # Resuming a finished study re-runs nothing and duplicates no run.
    again = run_study_here(tmp_path, "tiny", TINY, "--resume", "--no-report")
    assert again.returncode == 0, again.stderr[-3000:]
    _, parents2, children2 = study_runs(tmp_path, "tiny")
    assert len(parents2) == 1 and len(children2) == 2
    assert all(r.info.status == "FINISHED" for r in children2)


def test_trials_hand_tune_at_most_one_checkpoint_per_interval_and_always_their_last(tmp_path):
    """Tune copies each handed checkpoint into the storage path: with an interval longer than the trial, only the
    last epoch's checkpoint is handed over; with 0, every epoch's."""
    epochs = 2
    for interval in (3600, 0):
        body = {**TINY, "overrides": {**TINY["overrides"], "solver.epochs": epochs}, "axes": {"loss.type": ["expat"]},
                "baseline": {}, "checkpoint_interval_s": interval}
        proc = run_study_here(tmp_path, f"ckpt{interval}", body, "--no-report")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        (result,) = (tmp_path / "ray_results").glob(f"ckpt{interval}-*/run_trial_*/result.json")
        handed = [json.loads(line).get("checkpoint_dir_name") is not None for line in result.read_text().splitlines()]
        assert handed == ([False] * (epochs - 1) + [True] if interval else [True] * epochs)


def test_failed_trial_is_recorded_and_the_study_goes_on(tmp_path):
    # eval.diagnostics=false here as well (this study's launch is shared): no diag.* / train.* metric, no angle
    # samples, and a report that says why its Diagnostics section is empty
    body = {**TINY, "axes": {"loss.type": ["expat"], "loss.metric_weight": [1.0, 1e39]}, "baseline": {},
            "overrides": {**TINY["overrides"], "eval.diagnostics": False}}
    proc = run_study_here(tmp_path, "fails", body)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 failed" in proc.stdout
    client, parents, children = study_runs(tmp_path, "fails")
    assert parents[0].info.status == "FINISHED"
    by_weight = {r.data.params["loss.metric_weight"]: r for r in children}
    assert by_weight["1.0"].info.status == "FINISHED"
    failed = by_weight["1e+39"]
    assert failed.info.status == "FAILED"
    assert "NonFiniteLossError" in failed.data.tags["failure_reason"]
    report = (tmp_path / "outputs" / "reports" / "fails" / "report.md").read_text()
    assert "NonFiniteLossError" in report
    finished = by_weight["1.0"]
    assert finished.data.metrics["rank1"] >= 0 and finished.data.params["eval.diagnostics"] == "False"
    assert not [k for k in finished.data.metrics if k.startswith(("diag.", "train."))]
    assert [a.path for a in client.list_artifacts(finished.info.run_id, "diagnostics")] == []
    assert "## Diagnostics\n\nNo diagnostics: no finished trial logged `diag.*` metrics" in report
    assert not (tmp_path / "outputs" / "reports" / "fails" / "angles.png").exists()


def test_search_selects_on_validation_and_the_table_is_the_refit_on_test(tmp_path):
    body = {**TINY, "axes": {}, "baseline": {}, "overrides": {**TINY["overrides"], "loss.type": "expat"},
            "search": {"algorithm": "optuna", "num_samples": 2, "seed": 0, "refit_seeds": [0, 1],
                       "space": {"loss.at_margin": {"type": "float", "low": 0.2, "high": 1.5}}},
            "scheduler": {"type": "asha", "grace_period": 1}}
    proc = run_study_here(tmp_path, "search", body)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _, parents, children = study_runs(tmp_path, "search")
    search = [r for r in children if r.data.tags.get("phase") == "search"]
    refit = [r for r in children if r.data.tags.get("phase") == "refit"]
    assert len(search) == 2 and len(refit) == 2 and len(children) == 4
    assert all(r.data.params["eval.split"] == "val" for r in search)
    assert all(r.data.params["eval.split"] == "test" for r in refit)
    assert sorted(r.data.params["solver.seed"] for r in refit) == ["0", "1"]
    # the refit trains the search trial that scored best on the validation split (ties: any of the best)
    best = max(r.data.metrics["rank1"] for r in search)
    winners = {r.data.params["loss.at_margin"] for r in search if r.data.metrics["rank1"] == best}
    assert {r.data.params["loss.at_margin"] for r in refit} <= winners
    assert len({r.data.params["loss.at_margin"] for r in refit}) == 1
    assert parents[0].data.tags["study.selected"] == refit[0].data.tags["group"]
    report = (tmp_path / "outputs" / "reports" / "search" / "report.md").read_text()
    assert "Selection: 2 search trials selected the configuration on the validation split" in report
    assert "Trials: 2 finished" in report  # the table counts the refit trials only
    # importance and the best trial come from the search trials (the refit trials share one configuration)
    best_search = max(search, key=lambda r: r.data.metrics["rank1"])
    assert "## Parameter importance" in report and "Best trial: `" in report
    assert report.split("Best trial: `")[1].split("`")[0] in {r.info.run_name for r in search
                                                             if r.data.metrics["rank1"] == best_search.data.metrics["rank1"]}
