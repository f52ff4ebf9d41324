"""Learning-rate schedule and parameter groups against the numbers the authors' settings give."""
import pytest
import torch

from core.optim import build_optimizer, lr_factor, set_lr


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
    assert set_lr(opt, 0.5) == pytest.approx(1.5e-4)
    assert groups[id(model[0].bias)]["lr"] == pytest.approx(3e-4)
