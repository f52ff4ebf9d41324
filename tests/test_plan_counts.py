"""The trial counts of a study (search, refit, total) are the plan's, and --estimate counts every trial the driver
runs: also the refit trials of a grid study with early stopping (ASHA selects there, so the winner is refit)."""
import pytest

from ablation.estimate import for_study
from ablation.study import load_study

TRIAL = dict(device="cpu", iterations=10, images_per_iteration=8, evaluations=1, step_s=1.0, eval_s=5.0,
             test_images=100)  # one trial: 10 x 1 s + 5 s = 15 s


def _grid_asha(tmp_path, refit_seeds="[0, 1, 2]"):
    path = tmp_path / "grid_asha.yaml"
    path.write_text("base: quick\n"
                    "overrides: {solver.epochs: 4, eval.every: 1, loss.type: expat}\n"
                    "axes: {loss.at_margin: [0.5, 1.0]}\n"
                    "seeds: [0, 1]\n"
                    f"search: {{algorithm: grid, refit_seeds: {refit_seeds}}}\n"
                    "scheduler: {type: asha, grace_period: 1}\n"
                    "resources: {cpu: 1}\n"
                    "max_concurrent: 2\n")
    return load_study(str(path))


def test_grid_with_asha_counts_its_refit_trials(tmp_path, monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    spec = _grid_asha(tmp_path)
    assert spec.selects and len(spec.plan) == 4
    assert (spec.search_trials, spec.refit_trials, spec.total_trials) == (4, 3, 7)
    est = for_study(spec, **TRIAL)
    assert est.trials == 7 and est.concurrency == 2
    # two waves of search trials, then two of refit trials (the refit starts once the search ended)
    assert est.study_s == pytest.approx(4 * 15)
    assert "study: 7 trials, 2 at once" in est.describe(spec.name)


@pytest.mark.parametrize("study, counts", [("loss_comparison", (12, 0, 12)), ("tpe_asha", (8, 3, 11))])
def test_shipped_studies_count_as_the_driver_runs_them(study, counts):
    spec = load_study(study)
    assert (spec.search_trials, spec.refit_trials, spec.total_trials) == counts
    assert for_study(spec, **TRIAL).trials == counts[2]
