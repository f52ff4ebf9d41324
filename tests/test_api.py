"""The Python API (ablation.api): plan_study is the CLI's plan, run_study hands the driver the CLI's resolved store
and folder and returns the outcome with the study's trials as the report reads them. The driver is replaced here
(the study itself runs in the end-to-end tests)."""
from mlflow.tracking import MlflowClient

import ablation.driver
from ablation.api import plan_study, run_study
from ablation.study import load_study
from tracking.tags import StudyTags, TrialTags
from stores import new_store_uri


def test_plan_study_is_the_plan_of_the_study_file():
    spec = plan_study("loss_comparison", {"solver.epochs": 1})
    assert [t.name for t in spec.plan] == [t.name for t in load_study("loss_comparison").plan]
    assert spec.overrides["solver.epochs"] == 1 and spec.total_trials == len(spec.plan)


def test_run_study_returns_the_outcome_and_the_trials_of_its_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = new_store_uri(tmp_path / 'mlflow.db')
    client = MlflowClient(uri)
    exp = client.create_experiment("loss_comparison")
    parent = client.create_run(exp, run_name="loss_comparison", tags=StudyTags(
        study="loss_comparison", metric="rank1", mode="max", group_keys=("loss.type",)).to_tags()).info.run_id
    for i, (group, seed) in enumerate([("loss.type=expat", 0), ("loss.type=triplet", 1)]):
        run = client.create_run(exp, run_name=f"t{i}", tags=TrialTags(
            parent_run_id=parent, trial_id=f"t{i}", study="loss_comparison", group=group, seed=seed).to_tags())
        client.log_metric(run.info.run_id, "rank1", 50.0 + i, step=1)
        client.set_terminated(run.info.run_id, "FINISHED")
    given = {}

    def driver_run(spec, **kwargs):
        given.update(kwargs, study=spec.name)
        return ablation.driver.StudyOutcome(spec.name, parent, kwargs["tracking_uri"], "/r/x", 2, 2, 0, "/out/r.md")

    monkeypatch.setattr(ablation.driver, "run_study", driver_run)
    result = run_study("loss_comparison", {"solver.epochs": 1}, tracking_uri="mlflow.db", build_report=True)
    assert given["tracking_uri"] == uri and given["storage_path"] == str(tmp_path / "ray_results")
    assert result.outcome.exit_code == 0 and result.report_path == "/out/r.md"
    assert list(result.trials["group"]) == ["loss.type=expat", "loss.type=triplet"]
    assert list(result.trials["seed"]) == [0, 1] and list(result.trials["rank1"]) == [50.0, 51.0]


def test_run_study_checks_this_machine_as_the_cli_does_before_the_driver_starts(tmp_path, monkeypatch):
    import dataclasses

    import pytest

    from ablation.study import StudyError
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ablation.driver, "run_study", lambda *a, **k: pytest.fail("the driver started"))
    spec = dataclasses.replace(plan_study("loss_comparison", {"solver.epochs": 1}), resources={"cpu": 4})
    with pytest.raises(StudyError, match=r"resources.cpu=4 per trial but the largest Ray node \(this machine\) has "
                                         r"2 CPUs"):
        run_study(spec, num_cpus=2)


def test_the_cli_and_the_api_resolve_the_store_and_the_ray_folder_alike(tmp_path, monkeypatch):
    from ablation.api import locations
    monkeypatch.chdir(tmp_path)
    assert locations() == (f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "ray_results"))
    assert locations("sqlite:///m.db", "r")[0] == f"sqlite:///{tmp_path / 'm.db'}"
    assert locations("http://h:5000")[0] == "http://h:5000"
