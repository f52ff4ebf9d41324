"""Backbone, necks and the assembled re-ID model (ResNet-18 on 64x32 inputs to stay fast on CPU)."""
import copy

import pytest
import torch
import torchvision

from core.models import NECKS, ReIDModel, ResNetBackbone, build_head, load_pretrained

C = 7


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def images(n=4, h=64, w=32):
    return torch.randn(n, 3, h, w)


def test_last_stride_one_doubles_the_layer4_map():
    x = images(2)
    assert ResNetBackbone("resnet18", last_stride=2)(x).shape == (2, 512, 2, 1)
    assert ResNetBackbone("resnet18", last_stride=1)(x).shape == (2, 512, 4, 2)


def test_resnet50_bottleneck_last_stride():
    net = ResNetBackbone("resnet50", last_stride=1)
    block = net.layer4[0]
    assert block.conv2.stride == (1, 1) and block.downsample[0].stride == (1, 1)
    assert net.feat_dim == 2048
    assert net(images(1)).shape == (1, 2048, 4, 2)


def test_backbone_rejects_unknown_arch_and_stride():
    with pytest.raises(ValueError, match="resnet18"):
        ResNetBackbone("resnet34")
    with pytest.raises(ValueError):
        ResNetBackbone("resnet18", last_stride=3)


@pytest.mark.parametrize("neck", ["no", "bnneck", "csbn"])
def test_training_output_shapes(neck):
    model = ReIDModel("resnet18", C, neck).train()
    out = model(images(4))
    assert set(out) == {"global_feat", "neck_feat", "logits"}
    assert out["global_feat"].shape == out["neck_feat"].shape == (4, 512)
    assert out["logits"].shape == (4, C)
    if neck == "no":
        assert out["neck_feat"] is out["global_feat"]


def test_neck_no_classifier_has_bias():
    head = build_head("no", 512, C)
    assert head.neck is None and head.classifier.bias is not None


@pytest.mark.parametrize("neck", ["bnneck", "csbn"])
def test_bn_neck_init_and_frozen_bias(neck):
    head = build_head(neck, 512, 300, num_modalities=2)
    for bn in head.neck.bns:
        assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
        assert not bn.bias.requires_grad and bn.weight.requires_grad
    assert head.classifier.bias is None
    assert 0.0009 < head.classifier.weight.std().item() < 0.0011
    learnable = build_head(neck, 512, C, bn_bias_learnable=True)
    assert all(bn.bias.requires_grad for bn in learnable.neck.bns)


def test_number_of_bns_per_neck():
    assert len(build_head("bnneck", 16, C, num_modalities=2).neck.bns) == 1
    assert len(build_head("csbn", 16, C, num_modalities=2).neck.bns) == 2
    assert len(build_head("csbn", 16, C, num_modalities=1).neck.bns) == 1
    assert len(build_head("csbn", 16, C, num_modalities=2, modality_specific=False).neck.bns) == 1
    # bnneck is one shared BN by definition: modality_specific belongs to csbn and is refused elsewhere
    with pytest.raises(ValueError, match="csbn neck only"):
        build_head("bnneck", 16, C, num_modalities=2, modality_specific=True)


def test_unknown_neck_lists_valid_names():
    assert set(NECKS) == {"no", "bnneck", "csbn"}
    with pytest.raises(ValueError, match="no, bnneck, csbn"):
        build_head("bnneck ", 16, C)
    with pytest.raises(ValueError):
        ReIDModel("resnet18", C, "bn_neck")


def test_csbn_routes_rows_to_their_modality_bn():
    head = build_head("csbn", 6, C, num_modalities=2).train()
    ref = copy.deepcopy(head.neck.bns)
    feat = torch.randn(8, 6)
    modality = torch.tensor([0, 1, 1, 0, 0, 1, 0, 1])
    neck_feat, logits = head(feat, modality)
    rgb, ir = modality == 0, modality == 1
    torch.testing.assert_close(neck_feat[rgb], ref[0](feat[rgb]))
    torch.testing.assert_close(neck_feat[ir], ref[1](feat[ir]))
    bn_rgb, bn_ir = head.neck.bns  # running mean starts at 0, momentum 0.1, own rows only
    torch.testing.assert_close(bn_rgb.running_mean, 0.1 * feat[rgb].mean(0))
    torch.testing.assert_close(bn_ir.running_mean, 0.1 * feat[ir].mean(0))
    assert not torch.allclose(bn_rgb.running_mean, bn_ir.running_mean)
    assert logits.shape == (8, C)


def test_csbn_eval_uses_each_modality_running_stats():
    model = ReIDModel("resnet18", C, "csbn", num_modalities=2).train()
    x = images(8)
    model(x, torch.tensor([0] * 4 + [1] * 4))
    model.eval()
    with torch.no_grad():
        as_rgb = model(x[:2], torch.zeros(2, dtype=torch.long))
        as_ir = model(x[:2], torch.ones(2, dtype=torch.long))
    assert not torch.allclose(as_rgb, as_ir)


@pytest.mark.parametrize(
    "neck, test_feature, expected",
    [("no", "after", "global_feat"), ("bnneck", "after", "neck_feat"), ("bnneck", "before", "global_feat"),
     ("csbn", "after", "neck_feat"), ("csbn", "before", "global_feat")],
)
def test_eval_feature_selection(neck, test_feature, expected):
    """In eval mode the model returns the pooled backbone feature or that feature through the neck BN's running
    statistics, computed here by hand: (x - running_mean) / sqrt(running_var + eps) * weight + bias."""
    model = ReIDModel("resnet18", C, neck, test_feature=test_feature)
    with torch.no_grad():
        model(images(4))  # give the BN non-trivial running stats
    model.eval()
    x = images(3)
    with torch.no_grad():
        feat = model(x)
        pooled = model.backbone(x).mean(dim=(2, 3))
    if expected == "global_feat":
        ref = pooled
    else:
        bn = model.head.neck.bns[0]
        assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
        ref = (pooled - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
        assert not torch.allclose(ref, pooled, atol=1e-3)  # the two choices are distinguishable
    assert feat.shape == (3, 512)
    torch.testing.assert_close(feat, ref, rtol=1e-4, atol=1e-5)


def test_invalid_test_feature():
    with pytest.raises(ValueError, match="after"):
        ReIDModel("resnet18", C, "bnneck", test_feature="post")


def test_bn_groups_equals_separate_forward_calls():
    model = ReIDModel("resnet18", C, "csbn", num_modalities=2).train()
    twin = copy.deepcopy(model)
    x = images(8)
    modality = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    with torch.no_grad():  # train-mode BN (batch stats, running-stat updates) without autograd cost
        grouped = model(x, modality, bn_groups=4)
        chunks = [twin(x[i:i + 2], modality[i:i + 2]) for i in range(0, 8, 2)]
        whole = copy.deepcopy(twin)(x, modality)
    for key in ("global_feat", "neck_feat", "logits"):
        torch.testing.assert_close(grouped[key], torch.cat([c[key] for c in chunks]))
    for (name, buf), (_, ref) in zip(model.named_buffers(), twin.named_buffers()):
        torch.testing.assert_close(buf, ref, msg=name)
    # one forward over the whole batch normalises differently
    assert not torch.allclose(whole["global_feat"], grouped["global_feat"])
    with pytest.raises(ValueError, match="divide"):
        model(x, modality, bn_groups=3)


def test_channels_last_input_gives_same_output():
    model = ReIDModel("resnet18", C, "bnneck").eval()
    x = images(2)
    with torch.no_grad():
        torch.testing.assert_close(
            model(x.to(memory_format=torch.channels_last)), model(x), rtol=1e-4, atol=1e-5
        )


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_backbone_matches_torchvision_resnet_on_the_same_weights(arch):
    """Same module names and shapes as torchvision's ResNet, and the same function: its state dict loads strictly
    and both give the same layer4 map (last stride 2, torchvision's own network)."""
    source = getattr(torchvision.models, arch)(weights=None).eval()
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    ours = ResNetBackbone(arch, last_stride=2).eval()
    ours.load_state_dict(state, strict=True)
    x = images(2, 64, 64)
    with torch.no_grad():
        trunk = torch.nn.Sequential(*list(source.children())[:-2])
        torch.testing.assert_close(ours(x), trunk(x))


def test_backbone_init_follows_torchvision():
    """Kaiming fan_out convs (std sqrt(2 / fan_out)) and BN at weight 1 / bias 0, as torchvision initialises."""
    net = ResNetBackbone("resnet50")
    w = net.layer3[0].conv2.weight  # 256 -> 256, 3x3: fan_out = 256 * 9
    assert abs(w.std().item() - (2 / (256 * 9)) ** 0.5) < 0.002
    assert torch.equal(net.layer2[1].bn3.weight, torch.ones(512))
    assert torch.equal(net.layer2[1].bn3.bias, torch.zeros(512))


def test_load_pretrained_from_local_file(tmp_path):
    source = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)  # includes fc.*, which is ignored
    model = ReIDModel("resnet18", C, "bnneck", pretrained_path=str(path))
    torch.testing.assert_close(model.backbone.conv1.weight, source.conv1.weight)
    torch.testing.assert_close(model.backbone.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var)


def test_load_pretrained_without_num_batches_tracked_and_with_module_prefix(tmp_path):
    source = torchvision.models.resnet18(weights=None)
    state = {f"module.{k}": v for k, v in source.state_dict().items() if "num_batches_tracked" not in k}
    path = tmp_path / "old.pth"
    torch.save(state, path)
    backbone = ResNetBackbone("resnet18")
    load_pretrained(backbone, path)
    torch.testing.assert_close(backbone.layer1[0].conv1.weight, source.layer1[0].conv1.weight)


def test_load_pretrained_errors_name_the_path(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        ReIDModel("resnet18", C, "bnneck", pretrained_path=str(missing))
    wrong = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), wrong)
    with pytest.raises(ValueError, match="r18.pth"):
        load_pretrained(ResNetBackbone("resnet50"), wrong)
    shape = tmp_path / "shape.pth"
    state = torchvision.models.resnet18(weights=None).state_dict()
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(state, shape)
    with pytest.raises(ValueError, match="shape.pth"):
        load_pretrained(ResNetBackbone("resnet18"), shape)


def test_frozen_bias_gets_no_gradient_and_classifier_is_shared():
    head = build_head("csbn", 16, C, num_modalities=2).train()
    feat = torch.randn(4, 16, requires_grad=True)
    neck_feat, logits = head(feat, torch.tensor([0, 0, 1, 1]))
    (logits.sum() + neck_feat.pow(2).sum()).backward()
    assert all(bn.bias.grad is None for bn in head.neck.bns)
    assert all(bn.weight.grad is not None for bn in head.neck.bns)
    assert sum(1 for m in head.modules() if isinstance(m, torch.nn.Linear)) == 1


def test_stem_relu_off_differs_from_torchvision_exactly_at_the_stem_relu():
    """stem_relu=True is torchvision's forward; stem_relu=False is the same network with only the ReLU after bn1
    left out (the authors' RGB code), computed here from torchvision's own submodules."""
    source = torchvision.models.resnet18(weights=None).eval()
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    with_relu, without_relu = (ResNetBackbone("resnet18", last_stride=2, stem_relu=flag).eval() for flag in (True, False))
    with_relu.load_state_dict(state, strict=True)
    without_relu.load_state_dict(state, strict=True)  # the same weights: the flag changes no parameter
    x = images(2, 64, 64)
    with torch.no_grad():
        stem = source.maxpool(source.bn1(source.conv1(x)))
        expected = source.layer4(source.layer3(source.layer2(source.layer1(stem))))
        torch.testing.assert_close(with_relu(x), torch.nn.Sequential(*list(source.children())[:-2])(x))
        torch.testing.assert_close(without_relu(x), expected)
        assert not torch.allclose(without_relu(x), with_relu(x))


def test_paper_presets_skip_the_stem_relu_only_for_the_rgb_code():
    from core.config import load_config
    rgb = {name: load_config(name, {"data.root": "/d"}).model.stem_relu for name in ("market_paper", "duke_paper")}
    rgbir = {name: load_config(name, {"data.root": "/d"}).model.stem_relu for name in ("sysu_paper", "regdb_paper")}
    assert rgb == {"market_paper": False, "duke_paper": False}
    assert rgbir == {"sysu_paper": True, "regdb_paper": True}
    model = ReIDModel("resnet18", C, "bnneck", stem_relu=False)
    assert isinstance(model.backbone.relu, torch.nn.Identity)
