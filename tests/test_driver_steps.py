"""The study driver's close step: the outcome's exit status (the study itself runs in the end-to-end tests)."""
import pytest

from ablation.driver import StudyOutcome


@pytest.mark.parametrize("total, finished, failed, code", [(4, 4, 0, 0), (4, 1, 3, 0), (4, 0, 4, 1), (0, 0, 0, 0)])
def test_a_study_whose_every_trial_failed_exits_1(total, finished, failed, code):
    outcome = StudyOutcome("s", "parent", "sqlite:////tmp/m.db", "/tmp/ray/s", total, finished, failed, None)
    assert outcome.exit_code == code
    assert outcome.summary().startswith(f"study s: {finished}/{total} trials finished, {failed} failed")


def test_a_report_that_cannot_be_built_after_training_says_how_to_build_it(tmp_path, monkeypatch, capsys):
    """The trials are in the store; a report failure (e.g. the server down at that moment) is one line that says so
    and gives the command that builds it later, not a traceback."""
    import ablation.driver
    from ablation.run import main
    from reports.collect import ReportError

    def report_fails(spec, **kwargs):
        raise ReportError("tracking server http://127.0.0.1:9 is not reachable")

    monkeypatch.setattr(ablation.driver, "run_study", report_fails)
    monkeypatch.chdir(tmp_path)
    assert main(["--study", "loss_comparison", "--set", "solver.epochs=1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "study loss_comparison trained, but its report could not be built" in err[0]
    assert "python -m reports.build --study loss_comparison --tracking-uri sqlite:///" in err[0]


def test_tune_verbosity_reaches_the_fit_step_as_an_argument_not_through_the_environment(tmp_path, monkeypatch):
    import os

    import ablation.driver as driver
    seen = {}

    def opened(spec, *args):
        return driver.OpenStudy(spec=spec, client=None, tracking_uri="sqlite:////m.db", experiment_id="1",
                                parent_id="p", ray_path=str(tmp_path / "s-1"), resumed=False, started_ray=False,
                                ctx=None)

    def fit(study):
        seen["verbose"] = study.verbose
        return [], []

    monkeypatch.setattr(driver, "open_study", opened)
    monkeypatch.setattr(driver, "fit_study", fit)
    monkeypatch.setattr(driver, "close_study", lambda study, *args: "closed")
    before = dict(os.environ)
    assert driver.run_study("spec", "sqlite:////m.db", str(tmp_path), verbose=2) == "closed"
    assert seen == {"verbose": 2} and dict(os.environ) == before
