"""``model.pretrained`` naming a file that is not a state dict of the arch (random bytes, text, a truncated download,
another network's keys or shapes) is refused before any work, in one line naming the file and the problem: exit 2
from ``python -m core.train`` and from ``python -m ablation.run`` before Ray or MLflow start."""
import hashlib
import os

import pytest
import torch
import yaml

from core.config import ConfigError, load_config
from core.factory import check_inputs
from core.models import ResNetBackbone, load_pretrained
from test_bad_input import STUDY, assert_refused, study_cli, train_cli


def _random_bytes(path):
    path.write_bytes(os.urandom(4096))


def _text(path):
    path.write_text("resnet18 weights: see https://download.pytorch.org/models/\n")


def _truncated(path):
    torch.save(ResNetBackbone("resnet18").state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _wrong_keys(path):
    torch.save({"encoder.weight": torch.zeros(4, 4), "encoder.bias": torch.zeros(4)}, path)


def _other_arch(path):
    torch.save(ResNetBackbone("resnet50").state_dict(), path)


def _wrong_shape(path):
    state = ResNetBackbone("resnet18").state_dict()
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(state, path)


def _training_checkpoint(path):
    torch.save({"model": ResNetBackbone("resnet18").state_dict(), "epoch": 3}, path)


BAD = {  # how the file is made -> what the one line says about it
    "random_bytes": (_random_bytes, "is not a PyTorch checkpoint"),
    "text": (_text, "is not a PyTorch checkpoint"),
    "truncated": (_truncated, "is not a PyTorch checkpoint"),
    "wrong_keys": (_wrong_keys, "does not match resnet18"),
    "other_arch": (_other_arch, "does not match resnet18"),
    "wrong_shape": (_wrong_shape, "shape(s) differ"),
    "training_checkpoint": (_training_checkpoint, "is not a state dict"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_check_inputs_refuses_a_bad_pretrained_file(tmp_path, kind):
    make, problem = BAD[kind]
    path = tmp_path / f"{kind}.pth"
    make(path)
    with pytest.raises(ConfigError) as err:
        check_inputs(load_config("quick", {"model.pretrained": str(path)}))
    line = str(err.value)
    assert line.startswith("model.pretrained: ") and str(path) in line and problem in line and "\n" not in line


def test_a_good_state_dict_passes_and_loads(tmp_path):
    source = ResNetBackbone("resnet18")
    state = {f"module.{k}": v for k, v in source.state_dict().items() if "num_batches_tracked" not in k}
    state["fc.weight"] = torch.zeros(1000, 512)  # torchvision's classifier: ignored
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    check_inputs(load_config("quick", {"model.pretrained": str(path)}))
    backbone = ResNetBackbone("resnet18")
    load_pretrained(backbone, path)
    torch.testing.assert_close(backbone.layer4[1].conv2.weight, source.layer4[1].conv2.weight)


@pytest.mark.parametrize("kind", ["random_bytes", "text", "wrong_keys"])
def test_train_cli_refuses_a_bad_pretrained_file_in_one_line(tmp_path, kind):
    make, problem = BAD[kind]
    path = tmp_path / f"{kind}.pth"
    make(path)
    assert_refused(train_cli(tmp_path, f"model.pretrained={path}", timeout=120), "config error:",
                   "model.pretrained", str(path), problem)
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_study_cli_refuses_a_bad_pretrained_file_before_ray_starts(tmp_path):
    path = tmp_path / "weights.pth"
    _wrong_keys(path)
    body = {**STUDY, "overrides": {**STUDY["overrides"], "model.pretrained": str(path)}}
    assert_refused(study_cli(tmp_path, body, timeout=120), "model.pretrained", str(path), "does not match resnet18")
    assert not (tmp_path / "mlflow.db").exists()  # no store opened, no Tune experiment written
    assert not any((tmp_path / "ray_results").glob("*")) if (tmp_path / "ray_results").exists() else True


# --- which file: the paper presets expect torchvision's V1 ResNet-50 (resnet50-19c8e357.pth) ---------------------

@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory):
    """A loadable ResNet-50 state dict that is not torchvision's file, and its sha256 (computed here by hashlib)."""
    path = tmp_path_factory.mktemp("weights") / "resnet50-other.pth"
    torch.save(ResNetBackbone("resnet50").state_dict(), path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning: model.pretrained")]


def test_paper_preset_warns_in_one_line_naming_both_files(resnet50_file, capsys):
    path, digest = resnet50_file
    for preset in ("sysu_paper", "market_paper"):
        cfg = load_config(preset, {"model.pretrained": str(path), "data.root": "/data"})
        assert cfg.model.pretrained_expected == "19c8e357"  # torchvision's resnet50-19c8e357.pth
        check_inputs(cfg)  # a warning, not a refusal
    (line,) = _warnings(capsys.readouterr().err)  # once per file, not once per config
    assert str(path) in line and digest[:8] in line and "resnet50-19c8e357.pth" in line
    assert "model.pretrained_expected=any" in line


def test_the_expected_file_or_any_is_silent(resnet50_file, capsys):
    path, digest = resnet50_file
    for expected in (digest[:8], digest, "any"):
        check_inputs(load_config("sysu_paper", {"model.pretrained": str(path), "data.root": "/data",
                                                "model.pretrained_expected": expected}))
    assert capsys.readouterr().err == ""


def test_expected_hash_prefix_is_checked_as_hex():
    with pytest.raises(ConfigError, match="model.pretrained_expected"):
        load_config("quick", {"model.pretrained_expected": "resnet50-19c8e357.pth"})


def test_train_records_the_weights_hash_and_trains_after_the_warning(tmp_path, capsys, monkeypatch):
    from core.train import main
    path = tmp_path / "resnet18.pth"
    torch.save(ResNetBackbone("resnet18").state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setenv("EXPAT_DATA_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    code = main(["--config", "quick", f"run.output_dir={out}", "solver.epochs=1", "solver.max_steps_per_epoch=1",
                 "eval.trials=1", "run.progress=false", "data.synthetic_ids=16", f"model.pretrained={path}",
                 "model.pretrained_expected=19c8e357"])
    assert code == 0
    (line,) = _warnings(capsys.readouterr().err)
    assert digest[:8] in line and "resnet18-19c8e357.pth" in line
    saved = yaml.safe_load((out / "config.yaml").read_text())["model"]
    assert saved["pretrained_sha256"] == digest and saved["pretrained"] == str(path)
