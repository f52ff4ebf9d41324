"""Inputs refused before any work, in one stderr line naming the key (or file) and the fix, exit status 2, under
``--dry-run`` too: the CLIs' ``main(argv)`` called in-process (nothing trains, no Ray starts)."""
from __future__ import annotations

import pytest
import yaml

STUDY = {"base": "quick", "overrides": {"solver.epochs": 1}, "axes": {"loss.type": ["triplet", "expat"]},
         "seeds": [0], "resources": {"cpu": 1}}


def refused(capsys, main, argv) -> str:
    """The one stderr line of a refusal (exit status 2, nothing on stdout)."""
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err, (out, err)
    return err


def study_refusal(capsys, tmp_path, body, *extra, dry_run=True) -> str:
    from ablation.run import main
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(body) if isinstance(body, dict) else body)
    return refused(capsys, main, ["--study", str(path), *(["--dry-run"] if dry_run else []), *extra])


def test_an_overrides_key_also_varied_by_an_axis_or_a_variant_is_refused(capsys, tmp_path):
    err = study_refusal(capsys, tmp_path, {**STUDY, "overrides": {"loss.type": "expat"}})
    assert "overrides sets loss.type, a key the study varies" in err and "remove it from overrides" in err
    variants = {**STUDY, "axes": {}, "overrides": {"model.neck": "no"},
                "variants": {"a": {"model.neck": "bnneck"}, "b": {"model.neck": "csbn"}}}
    assert "overrides sets model.neck" in study_refusal(capsys, tmp_path, variants)
    # --set against an axis: the same rule, named as --set
    assert "--set loss.type sets a key the study varies" in study_refusal(capsys, tmp_path, STUDY, "--set",
                                                                          "loss.type=expat")


@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity"])
def test_infinite_floats_are_refused_like_nan(capsys, tmp_path, value):
    from core.train import main
    err = refused(capsys, main, ["--config", "quick", f"solver.lr={value}", f"run.output_dir={tmp_path}"])
    assert f"solver.lr: {value!r} is not a finite number" in err
    err = study_refusal(capsys, tmp_path, STUDY, "--set", f"solver.lr={value}")
    assert "solver.lr" in err and "not a finite number" in err
    yaml_inf = yaml.safe_dump({**STUDY, "overrides": {"solver.lr": 0.1}}).replace("0.1", ".inf")
    assert "solver.lr: inf is not a finite number" in study_refusal(capsys, tmp_path, yaml_inf)


def test_sizes_beyond_the_documented_bounds_are_refused(capsys, tmp_path):
    MAX_IMAGE_SIDE = 1024  # README.md's bound
    err = study_refusal(capsys, tmp_path, STUDY, "--set", f"data.height={MAX_IMAGE_SIDE + 1}")
    assert f"data.height: {MAX_IMAGE_SIDE + 1} is out of range; it must be in 16..{MAX_IMAGE_SIDE}" in err
    search = {**STUDY, "axes": {}, "search": {"algorithm": "optuna", "num_samples": 10_001,
                                              "space": {"loss.at_margin": {"type": "float", "low": 0.1, "high": 1}}}}
    assert "search.num_samples must be a whole number in 1..10000, got 10001" in study_refusal(capsys, tmp_path,
                                                                                                 search)


def test_a_study_file_that_is_not_utf8_or_is_a_folder_is_named_as_such(capsys, tmp_path):
    from ablation.run import main
    path = tmp_path / "binary.yaml"
    path.write_bytes(bytes(range(128, 256)) * 4)
    err = refused(capsys, main, ["--study", str(path), "--dry-run"])
    assert f"study file {path} is not UTF-8 text" in err
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    assert f"study file {folder} is a folder, expected a YAML file" in refused(capsys, main,
                                                                              ["--study", str(folder), "--dry-run"])


def test_empty_variants_are_refused(capsys, tmp_path):
    err = study_refusal(capsys, tmp_path, {**STUDY, "axes": {}, "variants": {}})
    assert "'variants' is empty; list at least one row" in err


def test_core_train_takes_a_flag_among_the_overrides(capsys, tmp_path):
    """``--eval-only`` after a key=value is read as the flag (its own refusal: no checkpoint to evaluate)."""
    from core.train import main
    err = refused(capsys, main, ["--config", "quick", f"run.output_dir={tmp_path}", "--eval-only",
                                 "solver.epochs=1"])
    assert "--eval-only: no checkpoint in" in err


@pytest.mark.parametrize("resources, needle", [({"cpu": 64}, "resources.cpu=64 per trial but the largest Ray node "
                                                              "(this machine) has 2 CPUs"),
                                               ({"cpu": 1, "gpu": 1}, "resources.gpu=1 per trial")])
def test_resources_beyond_this_machine_are_refused_before_any_work_and_named_by_the_dry_run(
        capsys, tmp_path, resources, needle, monkeypatch):
    """A local study that asks more than this machine has is refused before the driver starts (nothing of Ray or
    MLflow is touched); ``--dry-run`` still shows the plan (a plan may be meant for a cluster) and names the problem
    in one stderr line."""
    import torch

    import ablation.driver
    from ablation.run import main
    if resources.get("gpu") and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.setattr(ablation.driver, "run_study", lambda *a, **k: pytest.fail("the study started"))
    err = study_refusal(capsys, tmp_path, {**STUDY, "resources": resources}, "--num-cpus", "2", dry_run=False)
    assert needle in err and "lower resources" in err
    assert main(["--study", str(tmp_path / "s.yaml"), "--num-cpus", "2", "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert "2 trials" in out and "triplet/seed=0" in out
    assert err.count("\n") == 1 and err.startswith("note: a run here would be refused: ") and needle in err, err


def test_run_device_cuda_in_a_study_without_a_gpu_is_refused(capsys, tmp_path, monkeypatch):
    import torch

    import ablation.driver
    monkeypatch.setattr(ablation.driver, "run_study", lambda *a, **k: pytest.fail("the study started"))
    body = {**STUDY, "overrides": {**STUDY["overrides"], "run.device": "cuda"}}
    if not torch.cuda.is_available():
        err = study_refusal(capsys, tmp_path, body, dry_run=False)
        assert "run.device=cuda but no CUDA GPU is visible on this machine" in err
    err = study_refusal(capsys, tmp_path, {**body, "resources": {"cpu": 1, "gpu": 0}})
    assert "run.device=cuda but resources.gpu=0 gives trials no GPU" in err


def test_an_existing_path_of_the_wrong_kind_is_named_as_such(capsys, tmp_path):
    from core.train import main
    folder, file = tmp_path / "weights", tmp_path / "market.txt"
    folder.mkdir()
    file.write_text("not a dataset")
    base = ["--config", "quick_market", f"run.output_dir={tmp_path / 'out'}"]
    err = refused(capsys, main, [*base, f"model.pretrained={folder}"])
    assert f"model.pretrained: '{folder}' is a folder, expected a weights file" in err
    err = refused(capsys, main, [*base, "data.dataset=market1501", f"data.root={file}"])
    assert f"root '{file}' is a file, expected the dataset's folder" in err


def test_a_baseline_naming_some_axes_selects_its_row_or_names_the_missing_keys(capsys, tmp_path):
    from ablation.run import main
    body = {**STUDY, "axes": {"loss.type": ["triplet", "expat"], "model.neck": ["bnneck"]},
            "baseline": {"loss.type": "triplet"}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(body))
    code, (out, err) = main(["--study", str(path), "--dry-run"]), capsys.readouterr()
    assert code == 0 and "triplet/neck=bnneck/seed=0" in out, err  # one neck: nothing to choose
    two = {**body, "axes": {"loss.type": ["triplet", "expat"], "solver.lr": [0.1, 0.2]}}
    err = study_refusal(capsys, tmp_path, two)
    assert "baseline names ['loss.type'] but not the axes ['solver.lr']" in err and "give each of them" in err


def test_a_baseline_matching_no_row_of_a_big_plan_is_summarised(capsys, tmp_path):
    lrs = [round(0.01 * i, 2) for i in range(1, 301)]
    err = study_refusal(capsys, tmp_path, {**STUDY, "axes": {"solver.lr": lrs}, "baseline": {"solver.lr": 9.0}})
    assert "matches no row of the plan" in err and "and 290 more (--dry-run lists them)" in err and len(err) < 1000


def test_sysu_split_files_that_share_ids_are_named_as_the_data_problem(tmp_path):
    from core.data import DatasetError, generate_sysu
    from core.data.datasets import parse_sysu_mm01, read_sysu_ids
    generate_sysu(tmp_path, num_ids=16, num_val_ids=2, num_test_ids=5, images_per_cam=1)
    exp = tmp_path / "exp"
    train = read_sysu_ids(exp / "train_id.txt")
    test = read_sysu_ids(exp / "test_id.txt")
    (exp / "test_id.txt").write_text(",".join(str(i) for i in [*test, train[0]]))
    with pytest.raises(DatasetError, match=f"exp/train_id.txt and exp/test_id.txt in {tmp_path} share the ids "
                                           f"\\[{train[0]}\\]; an identity belongs to one split only"):
        parse_sysu_mm01(tmp_path)
