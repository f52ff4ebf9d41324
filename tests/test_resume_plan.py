"""``--resume`` continues a study only with the plan it started with (Tune names trials by their plan index)."""
import pytest
from mlflow.tracking import MlflowClient

from ablation.driver import check_same_plan
from ablation.study import StudyError, load_study
from ablation.tracking import create_parent_run, ensure_experiment, find_parent_run
from tracking.tags import StudyTags


def _store(tmp_path, study, trials, names):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
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
