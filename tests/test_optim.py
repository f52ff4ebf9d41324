"""Learning-rate schedule and parameter groups against the numbers the authors' settings give."""
import pytest
import torch

from core.optim import build_optimizer, build_scheduler, lr_factor


@pytest.mark.parametrize("epoch, expected", [(1, 3.815e-5), (9, 3.1535e-4), (10, 3.5e-4), (39, 3.5e-4),
                                             (40, 3.5e-5), (69, 3.5e-5), (70, 3.5e-6), (120, 3.5e-6)])
def test_rgb_schedule_matches_reid_strong_baseline(epoch, expected):
    # warmup factor 0.01 over 10 epochs: epoch e trains at 3.5e-4 * (0.01 * (1 - e/10) + e/10)
    assert 3.5e-4 * lr_factor(epoch, [40, 70], 0.1, 0.01, 10) == pytest.approx(expected, rel=1e-9)


def test_rgb_ir_iteration_schedule():
    f = lambda t: lr_factor(t, [10000, 20000], 0.1, 1 / 3, 500)  # noqa: E731
    assert 3e-4 * f(1) == pytest.approx(3e-4 * (1 / 3 * (1 - 1 / 500) + 1 / 500))
    assert f(500) == 1.0 and f(9999) == 1.0
    assert f(10000) == pytest.approx(0.1) and f(29999) == pytest.approx(0.01)


def test_bias_groups_and_frozen_parameters():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    model[1].bias.requires_grad_(False)
    opt = build_optimizer(model, "adam", lr=3e-4, weight_decay=5e-4, bias_lr_factor=2.0, weight_decay_bias=0.0)
    groups = {id(g["params"][0]): g for g in opt.param_groups}
    assert len(groups) == 3  # frozen BN bias excluded
    assert groups[id(model[0].bias)]["lr"] == pytest.approx(6e-4)
    assert groups[id(model[0].bias)]["weight_decay"] == 0.0
    assert groups[id(model[0].weight)]["lr"] == pytest.approx(3e-4)
    assert groups[id(model[0].weight)]["weight_decay"] == 5e-4
    sched = build_scheduler(opt, milestones=[2], gamma=0.5, warmup_factor=1.0, warmup=0)
    opt.step()
    sched.step()  # after step 1: step 2 trains at half the lr, every group from its own initial lr
    assert groups[id(model[0].weight)]["lr"] == pytest.approx(1.5e-4)
    assert groups[id(model[0].bias)]["lr"] == pytest.approx(3e-4)


def _scheduled_lrs(steps: int, milestones, gamma, warmup_factor, warmup, lr=3.5e-4, resume_after=None):
    """The lr each step ``1..steps`` trains at under ``build_scheduler`` (stepped after every step); with
    ``resume_after``, optimizer and scheduler are rebuilt from their state dicts after that step, as a resumed
    training does."""
    model = torch.nn.Linear(2, 1)

    def build():
        opt = build_optimizer(model, "sgd", lr=lr, weight_decay=0.0, bias_lr_factor=1.0, weight_decay_bias=0.0)
        return opt, build_scheduler(opt, milestones, gamma, warmup_factor, warmup)

    opt, sched = build()
    seen = []
    for t in range(1, steps + 1):
        seen.append(opt.param_groups[0]["lr"])
        model(torch.ones(1, 2)).sum().backward()
        opt.step()
        sched.step()
        if t == resume_after:
            saved_opt, saved_sched = opt.state_dict(), sched.state_dict()
            opt, sched = build()
            opt.load_state_dict(saved_opt)
            sched.load_state_dict(saved_sched)
    return seen


@pytest.mark.parametrize("resume_after", [None, 9, 40])
def test_lambda_lr_scheduler_gives_the_reference_formula_at_every_epoch(resume_after):
    lrs = _scheduled_lrs(120, [40, 70], 0.1, 0.01, 10, resume_after=resume_after)
    assert lrs == [3.5e-4 * lr_factor(t, [40, 70], 0.1, 0.01, 10) for t in range(1, 121)]  # the same floats
    assert lrs[0] == pytest.approx(3.815e-5) and lrs[39] == pytest.approx(3.5e-5) and lrs[69] == pytest.approx(3.5e-6)


def test_lambda_lr_scheduler_gives_the_reference_formula_at_every_iteration():
    lrs = _scheduled_lrs(1200, [500, 1000], 0.1, 1 / 3, 50, lr=3e-4, resume_after=777)
    assert lrs == [3e-4 * lr_factor(t, [500, 1000], 0.1, 1 / 3, 50) for t in range(1, 1201)]
