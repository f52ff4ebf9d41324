"""The study driver's close step: the outcome's exit status (the study itself runs in the end-to-end tests)."""
import pytest

from ablation.driver import StudyOutcome


@pytest.mark.parametrize("total, finished, failed, code", [(4, 4, 0, 0), (4, 1, 3, 0), (4, 0, 4, 1), (0, 0, 0, 0)])
def test_a_study_whose_every_trial_failed_exits_1(total, finished, failed, code):
    outcome = StudyOutcome("s", "parent", "sqlite:////tmp/m.db", "/tmp/ray/s", total, finished, failed, None)
    assert outcome.exit_code == code
    assert outcome.summary().startswith(f"study s: {finished}/{total} trials finished, {failed} failed")
