"""``model.pretrained`` naming a file that is not a state dict of the arch (random bytes, text, a truncated download,
another network's keys or shapes) is refused before any work, in one line naming the file and the problem: exit 2
from ``python -m core.train`` and from ``python -m ablation.run`` before Ray or MLflow start."""
import os

import pytest
import torch

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
