"""The effective configuration: auto and default weights resolved, and the keys a training does not read."""
from pathlib import Path

import pytest
import torch

from core.config import load_config
from core.effective import check_read, effective_params, resolve, signature, unread_keys
from core.names import UNREAD
from inprocess import run_main  # the CLI's main(argv) in process; tests/test_cli_smoke.py starts it fresh

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("preset, loss_type, neck, weights", [
    # docs/REPRODUCTION.md §5.1 (rgb_exp, one modality) and §5.2 (rgbir_exp): (id, metric, center) weights
    # of each recipe
    ("quick_market", "triplet", "no", (1.0, 1.0, None)),
    ("quick_market", "bnneck", "bnneck", (1.0, 1.0, None)),
    ("quick_market", "expat", "csbn", (1.0, 0.1, None)),
    ("quick_market", "expat_center", "csbn", (1.0, 0.001, 0.0005)),
    ("quick", "expat", "csbn", (1.0, 1.0, None)),
    ("quick", "expat_center", "csbn", (1.0, 1.0, 0.0005)),
])
def test_resolve_fills_in_the_neck_and_the_recipe_weights(preset, loss_type, neck, weights):
    cfg = load_config(preset, {"loss.type": loss_type})
    assert cfg.model.neck == "auto" and cfg.loss.metric_weight is None
    out = resolve(cfg)
    assert out.model.neck == neck
    assert (out.loss.id_weight, out.loss.metric_weight, out.loss.center_weight) == weights
    assert cfg.model.neck == "auto"  # a copy
    assert signature(out) == signature(cfg)  # resolving changes how it reads, not what trains


def test_keys_a_training_does_not_read_and_why():
    expat = unread_keys(load_config("quick", {"loss.type": "expat"}))
    assert expat["loss.margin"] == "by loss.type=expat; expAT's margin is loss.at_margin"
    assert {"loss.soft_margin", "loss.center_weight", "loss.center_lr"} <= set(expat)
    assert not {"loss.at_margin", "loss.weight_rgb2ir", "loss.metric_weight"} & set(expat)
    assert "model.modality_specific_bn" not in expat  # csbn on RGB-IR data: one BN per modality or shared
    assert "model.bn_groups" in expat  # cross_modal sampler, not the random triplets
    triplet = unread_keys(load_config("quick", {"loss.type": "triplet"}))
    assert "loss.margin" not in triplet and "loss.at_margin" in triplet
    assert {"model.modality_specific_bn", "model.test_feature", "model.bn_bias_learnable"} <= set(triplet)
    bnneck = unread_keys(load_config("quick", {"loss.type": "bnneck"}))
    assert "model.modality_specific_bn" in bnneck and "model.test_feature" not in bnneck
    market = unread_keys(load_config("quick_market", {"loss.type": "expat"}))
    assert {"loss.weight_rgb2ir", "model.modality_specific_bn", "eval.sysu_mode", "data.sysu_train_ids"} <= set(market)
    assert "single-modality" in market["loss.weight_rgb2ir"]


def test_iteration_evaluations_and_weights_checks_are_read_only_where_they_apply():
    by_epoch = unread_keys(load_config("quick", {"eval.every_iters": 100}))
    assert by_epoch["eval.every_iters"] == "with solver.step_unit=epoch (evaluations follow eval.every epochs)"
    for preset in ("sysu_paper", "regdb_paper"):  # every 5000 iterations, as the authors' saved checkpoints
        assert load_config(preset).eval.every_iters == 5000
        assert "eval.every_iters" not in unread_keys(load_config(preset))
    no_file = unread_keys(load_config("quick", {"model.pretrained": "none"}))
    assert {"model.pretrained_expected", "model.pretrained_sha256"} <= set(no_file)
    assert "no weights file is loaded" in no_file["model.pretrained_sha256"]
    with_file = unread_keys(load_config("quick", {"model.pretrained": "/w/resnet18.pth"}))
    assert not {"model.pretrained_expected", "model.pretrained_sha256"} & set(with_file)


def test_params_hold_resolved_values_and_mark_unread_keys():
    params = effective_params(load_config("quick", {"loss.type": "expat"}))
    assert params["model.neck"] == "csbn" and params["loss.metric_weight"] == 1.0
    assert params["loss.margin"] == UNREAD and params["loss.at_margin"] == 1.0
    assert params["solver.seed"] == 0


def test_check_read_names_the_key_and_the_fix():
    cfg = load_config("quick", {"loss.type": "bnneck"})
    check_read(cfg, ["loss.margin", "model.neck"])
    with pytest.raises(Exception, match="model.modality_specific_bn is not read with model.neck=bnneck"):
        check_read(cfg, ["model.modality_specific_bn"])


def test_unread_keys_change_nothing_in_the_model_and_loss():
    """What unread_keys promises, checked on the built parts: the same seed gives the same loss with an unread key
    changed, and a different loss with the neck changed."""
    from core.factory import build_loss, build_model

    def loss_of(overrides):
        cfg = load_config("quick", {"loss.type": "bnneck", **overrides})
        torch.manual_seed(0)
        model, crit = build_model(cfg, 6), build_loss(cfg, 6, 512)
        gen = torch.Generator().manual_seed(1)
        images = torch.randn(8, 3, 64, 32, generator=gen)
        batch = {"pids": torch.arange(4).repeat_interleave(2), "modality": torch.tensor([0, 1] * 4)}
        return crit(model.train()(images, modality=batch["modality"]), batch)[0].item()

    reference = loss_of({})
    assert loss_of({"model.modality_specific_bn": False, "loss.at_margin": 0.3}) == reference
    assert loss_of({"model.neck": "csbn"}) != reference


def test_training_cli_refuses_an_override_it_would_not_read(tmp_path):
    proc = run_main("core.train", ["--config", "quick", "loss.type=expat", "loss.margin=0.5",
                                   f"run.output_dir={tmp_path}"], cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "loss.margin is not read by loss.type=expat; expAT's margin is loss.at_margin" in proc.stderr
    assert not (tmp_path / "config.yaml").exists()


def test_single_modality_is_named_only_for_keys_the_rgb_ir_form_reads():
    market = unread_keys(load_config("quick_market", {"loss.type": "expat"}))
    assert market["loss.margin"] == "by loss.type=expat; expAT's margin is loss.at_margin"
    assert market["loss.weight_ir2rgb"].startswith("by loss.type=expat on single-modality data")
