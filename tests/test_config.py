"""The typed config: presets, dotted overrides, and clear rejections naming the key."""
import pytest

from core.config import ConfigError, list_presets, load_config, parse_overrides, resolved_neck, schema_keys, \
    to_flat_dict


def test_every_preset_loads():
    assert {"quick", "quick_market", "market_paper", "duke_paper", "sysu_paper", "regdb_paper"} <= set(list_presets())
    for name in list_presets():
        overrides = {} if name.startswith("quick") else {"data.root": "/data"}
        load_config(name, overrides)


def test_overrides_are_typed_and_inherit_from_base():
    cfg = load_config("duke_paper", ["data.root=/d", "loss.margin=0.5", "solver.milestones=[30, 60]",
                                     "model.bn_bias_learnable=true", "loss.id_weight=null"])
    assert cfg.data.dataset == "dukemtmc" and cfg.model.arch == "resnet50"  # from market_paper
    assert cfg.loss.margin == 0.5 and isinstance(cfg.loss.margin, float)
    assert cfg.solver.milestones == [30, 60]
    assert cfg.model.bn_bias_learnable is True and cfg.loss.id_weight is None


def test_flat_keys_are_the_schema_keys():
    flat = to_flat_dict(load_config("quick"))
    assert list(flat) == schema_keys()
    assert {"loss.type", "loss.margin", "model.neck", "solver.seed"} <= set(flat)


@pytest.mark.parametrize("override, needle", [
    ("loss.margn=0.3", "loss.margn"),
    ("lossy.margin=0.3", "lossy.margin"),
    ("loss.margin=-0.1", "loss.margin"),
    ("loss.margin=abc", "loss.margin"),
    ("solver.epochs=1.5", "solver.epochs"),
    ("loss.type=arcface", "loss.type"),
    ("model.neck=bn", "model.neck"),
    ("data.batch_size=30", "data.batch_size"),
    ("data.num_instances=3", "data.num_instances"),
])
def test_bad_values_name_the_key(override, needle):
    with pytest.raises(ConfigError) as info:
        load_config("quick", [override])
    assert needle in str(info.value)


def test_unknown_key_suggests_the_near_one():
    with pytest.raises(ConfigError, match="did you mean.*loss.margin"):
        load_config("quick", {"loss.margn": 0.3})


def test_real_dataset_needs_a_root_before_it_runs_and_unknown_preset_lists_choices():
    from core.factory import check_inputs
    cfg = load_config("market_paper", {"model.pretrained": "none"})  # a plan can be shown without the root
    with pytest.raises(ConfigError, match="data.root is empty .* set data.root=/path/to/market1501"):
        check_inputs(cfg)
    with pytest.raises(ConfigError, match="quick"):
        load_config("no_such_preset")


def test_cross_modal_sampler_needs_rgb_ir_data():
    with pytest.raises(ConfigError, match="data.sampler=cross_modal"):
        load_config("quick_market", {"data.sampler": "cross_modal"})


def test_override_parsing_and_neck_resolution():
    assert parse_overrides(["a.b=1", "c.d=x", "e.f=[1, 2]"]) == {"a.b": 1, "c.d": "x", "e.f": [1, 2]}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["loss.margin"])
    assert resolved_neck(load_config("quick", {"loss.type": "triplet"})) == "no"
    assert resolved_neck(load_config("quick", {"loss.type": "bnneck"})) == "bnneck"
    assert resolved_neck(load_config("quick", {"loss.type": "expat_center"})) == "csbn"
    assert resolved_neck(load_config("quick", {"loss.type": "triplet", "model.neck": "csbn"})) == "csbn"
    assert load_config("quick", {"model.neck": False}).model.neck == "no"  # YAML's bare `no`


def test_auto_neck_covers_every_loss_recipe():
    from core.losses import RECIPES
    from core.necks import NECKS, RECIPE_NECK
    assert set(RECIPE_NECK) == set(RECIPES) and set(RECIPE_NECK.values()) <= set(NECKS)


def test_paper_presets_give_each_algorithm_its_own_neck():
    sysu = {"data.root": "/data"}
    assert resolved_neck(load_config("sysu_paper", {**sysu, "loss.type": "triplet"})) == "no"
    assert resolved_neck(load_config("sysu_paper", {**sysu, "loss.type": "bnneck"})) == "bnneck"
    assert resolved_neck(load_config("sysu_paper", {**sysu, "loss.type": "expat"})) == "csbn"
    assert resolved_neck(load_config("market_paper", {**sysu, "loss.type": "bnneck"})) == "bnneck"


@pytest.mark.parametrize("key, value, expected", [
    ("model.neck", False, "no"),  # YAML 1.1 reads a bare `no` (and `off`, `false`) as false
    ("data.on_corrupt", "stop", "stop"),
    ("loss.margin", "0.5", 0.5),
])
def test_values_take_the_schema_form(key, value, expected):
    from core.config import coerce_value
    assert coerce_value(key, value) == expected and type(coerce_value(key, value)) is type(expected)


@pytest.mark.parametrize("key, value", [("model.neck", True), ("data.root", False), ("model.pretrained", True)])
def test_a_yaml_boolean_without_a_word_for_it_is_refused_with_the_fix(key, value):
    from core.config import coerce_value
    with pytest.raises(ConfigError, match=f"{key}: got the YAML boolean .* quote the value"):
        coerce_value(key, value)


@pytest.fixture(scope="module")
def resnet50_weights(tmp_path_factory):
    """A torchvision ResNet-50 state dict on disk (random values: what the check reads is its keys and shapes)."""
    import torch
    import torchvision
    path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), path)
    return path


@pytest.mark.parametrize("preset", ["market_paper", "duke_paper", "sysu_paper", "regdb_paper"])
def test_paper_presets_refuse_to_train_from_random_weights_unless_asked(preset, resnet50_weights):
    from core.factory import check_inputs, pretrained_path
    with pytest.raises(ConfigError, match=r"model.pretrained: .*model.pretrained=none"):
        check_inputs(load_config(preset, {"data.root": "/d"}))
    chosen = load_config(preset, {"data.root": "/d", "model.pretrained": "none"})
    check_inputs(chosen)
    assert pretrained_path(chosen) is None
    weights = resnet50_weights
    given = load_config(preset, {"data.root": "/d", "model.pretrained": str(weights)})
    check_inputs(given)
    assert pretrained_path(given) == str(weights)


def test_regdb_paper_ends_on_iterations_alone():
    """One stopping rule: 30k iterations, with the epoch bound past them (2060 anchors / 8 = 257 batches an epoch)."""
    s = load_config("regdb_paper", {"data.root": "/d"}).solver
    assert s.max_iters == 30000 and s.step_unit == "iter" and s.epochs * (2060 // 8) > s.max_iters
