"""``--resume`` continues a study only with the plan it started with (Tune names trials by their plan index)."""
import pytest
from mlflow.tracking import MlflowClient

from ablation.driver import check_ray_folder, check_same_plan
from ablation.study import StudyError, load_study
from ablation.tracking import create_parent_run, ensure_experiment, find_parent_run
from tracking.tags import StudyTags
from stores import new_store_uri


def _store(tmp_path, study, trials, names):
    client = MlflowClient(new_store_uri(tmp_path / 'mlflow.db'))
    exp = ensure_experiment(client, study)
    parent = create_parent_run(client, exp, StudyTags(study=study), params={"study.trials": trials})
    for name in names:
        client.create_run(exp, run_name=name, tags={"mlflow.parentRunId": parent, "kind": "trial"})
    return client, exp, find_parent_run(client, exp, study)


def test_resume_refuses_a_study_started_with_another_plan_in_one_line(tmp_path):
    spec = load_study("csbn_ablation")
    # csbn_ablation as it was before variants: 3 necks x 2 BN layouts x 2 seeds, YAML's `no` shown as False
    client, exp, parent = _store(tmp_path, "csbn_ablation", 12, ["neck=False/modality_specific_bn=True/seed=0"])
    with pytest.raises(StudyError, match="cannot resume: .*started with 12 trials, the plan now has 8.*without "
                                         "--resume"):
        check_same_plan(spec, client, exp, parent)


def test_resume_accepts_the_same_plan_and_refuses_renamed_rows(tmp_path):
    spec = load_study("loss_comparison")
    client, exp, parent = _store(tmp_path, "loss_comparison", 12, ["triplet/seed=0", "expat/seed=1"])
    check_same_plan(spec, client, exp, parent)  # a study started before this change, same rows: resumable
    client.create_run(exp, run_name="expAT/seed=0", tags={"mlflow.parentRunId": parent.info.run_id})
    with pytest.raises(StudyError, match="run 'expAT/seed=0' is not a trial of the current plan"):
        check_same_plan(spec, client, exp, parent)


def _started(tmp_path, ray_path, names):
    client = MlflowClient(new_store_uri(tmp_path / 'mlflow.db'))
    exp = ensure_experiment(client, "loss_comparison")
    parent = create_parent_run(client, exp, StudyTags(study="loss_comparison", ray_path=str(ray_path)),
                               params={"study.trials": 12})
    for name in names:
        client.create_run(exp, run_name=name, tags={"mlflow.parentRunId": parent, "kind": "trial"})
    return client, exp, find_parent_run(client, exp, "loss_comparison")


def test_resume_refuses_a_started_study_whose_ray_folder_is_gone(tmp_path):
    """Without Tune's folder every trial would start anew, finished ones under a second run: refused, naming it."""
    spec = load_study("loss_comparison")
    gone = tmp_path / "ray_results" / "loss_comparison-20260101-000000"
    client, exp, parent = _started(tmp_path, gone, ["triplet/seed=0"])
    with pytest.raises(StudyError, match=f"its Ray folder {gone} is gone .*restore it there, or run the study "
                                         f"without --resume"):
        check_ray_folder(spec, client, exp, parent, str(gone.parent))
    gone.mkdir(parents=True)
    check_ray_folder(spec, client, exp, parent, str(gone.parent))


def test_resume_before_any_trial_started_needs_no_ray_folder(tmp_path):
    spec = load_study("loss_comparison")
    client, exp, parent = _started(tmp_path, tmp_path / "ray_results" / "never-made", [])
    check_ray_folder(spec, client, exp, parent, str(tmp_path / "ray_results"))


def test_resume_with_another_storage_path_continues_in_the_recorded_one_and_says_so(tmp_path):
    spec = load_study("loss_comparison")
    recorded = tmp_path / "first" / "loss_comparison-20260101-000000"
    recorded.mkdir(parents=True)
    client, exp, parent = _started(tmp_path, recorded, ["triplet/seed=0"])
    with pytest.warns(UserWarning, match=f"started with --storage-path {recorded.parent}; --resume continues there "
                                         f"\\(not in {tmp_path / 'second'}\\)"):
        check_ray_folder(spec, client, exp, parent, str(tmp_path / "second"))


@pytest.mark.parametrize("resume", [False, True])
def test_a_study_whose_experiment_is_deleted_is_refused_with_the_ways_out(tmp_path, resume):
    """The UI's delete leaves the experiment in the store's trash under the study's name."""
    from ablation.driver import _open_store
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client, exp, parent = _started(tmp_path, tmp_path / "ray_results" / "x", ["triplet/seed=0"])
    client.delete_experiment(exp)
    with pytest.raises(StudyError, match=f"experiment 'loss_comparison' \\(id {exp}\\) is deleted in {uri}; restore "
                                         f"it .*mlflow experiments restore --experiment-id {exp}.*mlflow gc "
                                         f"--backend-store-uri {uri} --experiment-ids {exp}.*another name"):
        _open_store(load_study("loss_comparison"), uri, resume, str(tmp_path / "ray_results"))


def test_a_reopened_trial_run_continues_after_its_last_epoch_whatever_its_iteration_metrics(tmp_path):
    """A retried or resumed trial reopens its run and skips only the epochs it logged: the iter_* metrics of
    eval.every_iters (stepped by iteration, 5000) do not count as epochs."""
    from ablation.tracking import TrialRun
    from tracking.tags import TrialTags
    uri = new_store_uri(tmp_path / 'mlflow.db')
    client = MlflowClient(uri)
    exp = ensure_experiment(client, "iters")
    parent = create_parent_run(client, exp, StudyTags(study="iters"), params={})
    tags = TrialTags(parent_run_id=parent, trial_id="t0", study="iters", group="g")
    first = TrialRun(uri, exp, "t0", tags, params={})
    first.log_iterations(1, {5000: {"rank1": 10.0}})
    first.log_epoch(1, {"epoch": 1, "rank1": 10.0, "lr": 0.1})
    again = TrialRun(uri, exp, "t0", tags, params={})
    assert again.run_id == first.run_id and again.last_step == 1
    again.log_iterations(2, {10000: {"rank1": 20.0}})
    again.log_epoch(2, {"epoch": 2, "rank1": 20.0, "lr": 0.1})
    again.log_epoch(1, {"epoch": 1, "rank1": 99.0, "lr": 0.1})  # an epoch logged before the retry: not again
    assert [(m.step, m.value) for m in client.get_metric_history(first.run_id, "rank1")] == [(1, 10.0), (2, 20.0)]
    assert [m.step for m in client.get_metric_history(first.run_id, "iter_rank1")] == [5000, 10000]
