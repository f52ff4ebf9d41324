"""Bad input through both CLIs (``python -m core.train``, ``python -m ablation.run``): refused with a non-zero exit
and ONE stderr line that names the problem and the fix, no traceback, and nothing already finished is lost.

Every case runs the real CLI (its ``main(argv)`` in this process, tests/inprocess.py; the fresh-interpreter runs
are in tests/test_cli_smoke.py) on a small generated dataset written in the real SYSU-MM01 layout (parsed by the
real parser, ``data.dataset=sysu_mm01``), damaged on disk the way real downloads get damaged. A study that must
reach Ray (a cluster address, the cluster's resources) runs in a fresh interpreter.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core.data import generate_sysu
from inprocess import run_main

ROOT = Path(__file__).resolve().parent.parent
TINY = ["solver.epochs=1", "solver.max_steps_per_epoch=1", "eval.trials=1", "run.progress=false",
        "data.synthetic_ids=16"]
STUDY = {"base": "quick", "overrides": {"solver.epochs": 1, "solver.max_steps_per_epoch": 1, "eval.trials": 1,
                                        "data.synthetic_ids": 16},
         "axes": {"loss.type": ["expat"]}, "seeds": [0], "resources": {"cpu": 1}}


@pytest.fixture(scope="module")
def sysu_master(tmp_path_factory) -> Path:
    """16 ids (11 train+val, 5 test), 2 images per camera: a complete, valid SYSU-MM01 folder."""
    root = tmp_path_factory.mktemp("sysu_master")
    generate_sysu(root, num_ids=16, num_val_ids=2, num_test_ids=5, images_per_cam=2)
    return root


@pytest.fixture
def sysu(sysu_master, tmp_path) -> Path:
    """A private copy to damage."""
    root = tmp_path / "sysu"
    shutil.copytree(sysu_master, root)
    return root


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "EXPAT_DATA_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}


def _cache(tmp_path: Path) -> dict:
    return {"EXPAT_DATA_CACHE": str(tmp_path / "cache")}


def _real_data(settings) -> bool:
    """A real dataset on disk does not read the generator's settings (data.synthetic_ids), so they are left out."""
    return "data.dataset=sysu_mm01" in settings


def train_cli(tmp_path: Path, *overrides: str, timeout: int = 300) -> subprocess.CompletedProcess:
    tiny = [t for t in TINY if not t.startswith("data.synthetic_")] if _real_data(overrides) else TINY
    argv = ["--config", "quick", f"run.output_dir={tmp_path / 'out'}", *tiny, *overrides]
    return run_main("core.train", argv, cwd=tmp_path, env=_cache(tmp_path), timeout=timeout)


def study_cli(tmp_path: Path, body: dict, *extra: str, timeout: int = 300,
              fresh: bool = False) -> subprocess.CompletedProcess:
    """``python -m ablation.run`` on ``body``: in this process, or in a fresh interpreter (``fresh``) for a study
    that reaches Ray."""
    if _real_data(extra):
        body = {**body, "overrides": {k: v for k, v in body["overrides"].items()
                                      if not k.startswith("data.synthetic_")}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(body))
    argv = ["--study", str(path), "--num-cpus", "2", "--tracking-uri", str(tmp_path / "mlflow.db"),
            "--storage-path", str(tmp_path / "ray_results"), *extra]
    if not fresh:
        return run_main("ablation.run", argv, cwd=tmp_path, env=_cache(tmp_path), timeout=timeout)
    return subprocess.run([sys.executable, "-m", "ablation.run", *argv], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=timeout)


def assert_refused(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit code 2, exactly one line on stderr, no traceback, and the line names every needle."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    assert len(lines) == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _train_pid_dirs(root: Path, cam: int) -> list[Path]:
    train = {int(t) for name in ("train_id.txt", "val_id.txt")
             for t in (root / "exp" / name).read_text().strip().split(",")}
    return sorted(d for d in (root / f"cam{cam}").iterdir() if int(d.name) in train)


def _corrupt(path: Path) -> None:
    path.write_bytes(b"this is not a JPEG" * 10)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# ------------------------------------------------------------------------------------------- config


def _cuda_visible() -> bool:
    import torch
    return torch.cuda.is_available()


@pytest.mark.parametrize("overrides, needles", [
    (["loss.typo=1"], ["loss.typo", "loss.type"]),                      # unknown key, with the near match
    (["solver.epochs=abc"], ["solver.epochs", "integer"]),              # wrong type
    (["loss.margin=-0.5"], ["loss.margin", ">= 0"]),                    # out of range
    (["data.batch_size=30"], ["data.batch_size", "multiple of 4"]),     # batch not divisible by K
    ([f"run.threads={(os.cpu_count() or 1) + 1}"], ["run.threads", "at most"]),  # more CPUs than the machine
    (["run.device=cuda"], ["run.device=cuda", "run.device=cpu"]),       # a GPU the machine does not have
    (["model.pretrained=/no/such/weights.pth"], ["model.pretrained", "/no/such/weights.pth"]),
    (["solver.seed=-1"], ["solver.seed", "0..4294967295"]),              # numpy's seeds are unsigned 32-bit
    (["data.batch_size=4", "data.num_instances=4"], ["one identity", "data.batch_size to at least 8"]),
    (["data.dataset=sysu_mm01", "data.root=%tmp"], ["%tmp"]),           # not YAML: kept as text, then judged
])
def test_train_cli_refuses_bad_config(tmp_path, overrides, needles):
    if overrides == ["run.device=cuda"] and _cuda_visible():
        pytest.skip("this machine has a GPU")
    prefix = "error:" if "data.root=%tmp" in overrides else "config error:"  # a dataset error, after the config
    assert_refused(train_cli(tmp_path, *overrides, timeout=120), prefix, *needles)
    if prefix == "config error:":
        assert not (tmp_path / "out").exists()  # refused before anything was written


def test_train_cli_checks_its_output_folder_and_eval_only_before_any_work(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a regular file, not a folder")  # as root, chmod stops nothing: a path below a file does
    assert_refused(train_cli(tmp_path, f"run.output_dir={blocker / 'out'}", timeout=120), "run.output_dir",
                   "cannot be written")
    argv = ["--config", "quick", f"run.output_dir={tmp_path / 'empty'}", *TINY]
    for extra, needle in ((["--eval-only"], "no checkpoint in"), (["--eval-only", "--no-resume"], "one of them")):
        proc = run_main("core.train", argv[:2] + extra + argv[2:], cwd=tmp_path, env=_cache(tmp_path), timeout=120)
        assert_refused(proc, "--eval-only", needle)
    assert not (tmp_path / "empty").exists()


def test_study_cli_refuses_bad_config(tmp_path):
    assert_refused(study_cli(tmp_path, STUDY, "--set", "loss.typo=1"), "loss.typo", "loss.type")
    assert_refused(study_cli(tmp_path, STUDY, "--set", "solver.epochs=abc"), "solver.epochs", "integer")
    assert_refused(study_cli(tmp_path, {**STUDY, "axes": {"loss.margin": [0.3, -1.0]}}), "loss.margin", ">= 0")
    assert_refused(study_cli(tmp_path, {**STUDY, "overrides": {**STUDY["overrides"], "data.batch_size": 30}}),
                   "data.batch_size", "multiple of 4")
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray_results").exists()


@pytest.mark.slow
@pytest.mark.parametrize("resources, needle", [({"cpu": 3}, "resources.cpu=3"), ({"cpu": 1, "gpu": 1}, "resources.gpu=1")])
def test_study_cli_refuses_more_resources_than_the_cluster_has(tmp_path, resources, needle):
    # Ray would leave such a trial PENDING forever; the driver asks Ray what its nodes have and refuses up front.
    line = assert_refused(study_cli(tmp_path, {**STUDY, "resources": resources}, fresh=True), needle,
                          "largest Ray node")
    assert "lower" in line
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []  # no run was made


@pytest.mark.slow  # Ray's client tries the address for most of a minute before it gives up
def test_study_cli_refuses_a_ray_address_where_nothing_listens(tmp_path):
    import socket
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    line = assert_refused(study_cli(tmp_path, STUDY, "--address", f"127.0.0.1:{port}", timeout=60, fresh=True),
                          f"127.0.0.1:{port}", "ray start --head")
    assert "cannot connect to the Ray cluster" in line


# ------------------------------------------------------------------------------------------- dataset


def test_missing_root_and_wrong_layout(tmp_path, sysu):
    missing = tmp_path / "nowhere"
    for proc in (train_cli(tmp_path, "data.dataset=sysu_mm01", f"data.root={missing}"),
                 study_cli(tmp_path, STUDY, "--set", "data.dataset=sysu_mm01", "--set", f"data.root={missing}")):
        assert_refused(proc, f"root folder '{missing}' does not exist", "Expected layout", "Set data.root")
    shutil.rmtree(sysu / "exp")  # a layout without the split files
    for proc in (train_cli(tmp_path, "data.dataset=sysu_mm01", f"data.root={sysu}"),
                 study_cli(tmp_path, STUDY, "--set", "data.dataset=sysu_mm01", "--set", f"data.root={sysu}")):
        assert_refused(proc, "exp/train_id.txt", "Expected layout", "cam1/ .. cam6/")


@pytest.mark.parametrize("damage, needle", [(_corrupt, "cannot decode"), (_truncate, "truncated JPEG")])
def test_corrupt_or_truncated_image_stops_with_its_path(tmp_path, sysu, damage, needle):
    bad = sorted((sysu / "cam3").glob("*/*.jpg"))[3]
    damage(bad)
    data = ["data.dataset=sysu_mm01", f"data.root={sysu}"]
    assert_refused(train_cli(tmp_path, *data), needle, str(bad), "data.on_corrupt=skip")
    assert_refused(study_cli(tmp_path, STUDY, *[a for kv in data for a in ("--set", kv)]), needle, str(bad),
                   "data.on_corrupt=skip")


def test_corrupt_image_skipped_and_identity_without_ir_excluded_with_warnings(tmp_path, sysu):
    """data.on_corrupt=skip: a warning naming the file, then training. An identity with no IR image cannot fill
    the cross-modal sampler's K/2 IR slots: it is left out of training batches with a warning, and training goes
    on (identities with fewer images than K/2 in a modality are sampled with replacement, as the PK sampler of
    reid-strong-baseline does)."""
    bad = sorted((sysu / "cam1").glob("*/*.jpg"))[0]
    _corrupt(bad)
    no_ir = _train_pid_dirs(sysu, 3)[-1].name
    for cam in (3, 6):
        shutil.rmtree(sysu / f"cam{cam}" / no_ir)
    proc = train_cli(tmp_path, "data.dataset=sysu_mm01", f"data.root={sysu}", "data.on_corrupt=skip")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert any("data.on_corrupt=skip: skipped 1 unreadable image" in w for w in warnings), proc.stderr
    assert str(bad) in proc.stderr
    assert any("lack RGB or IR images" in w and "excluded" in w for w in warnings), proc.stderr
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["epoch"] == 1


def test_too_few_sampleable_identities_is_refused(tmp_path, sysu):
    # Remove the IR images of all but 3 training identities: a P x K batch of 8 identities cannot be filled.
    for pid_dir in _train_pid_dirs(sysu, 3)[3:]:
        for cam in (3, 6):
            shutil.rmtree(sysu / f"cam{cam}" / pid_dir.name, ignore_errors=True)
    data = ["data.dataset=sysu_mm01", f"data.root={sysu}"]
    for proc in (train_cli(tmp_path, *data),
                 study_cli(tmp_path, STUDY, *[a for kv in data for a in ("--set", kv)])):
        line = assert_refused(proc, "only 3 identities", "batch_size")
        assert "warning" not in line


def test_refused_rerun_keeps_the_finished_run(tmp_path, sysu):
    """A second run into the same output folder with a broken dataset leaves the first run's files as they were."""
    data = ["data.dataset=sysu_mm01", f"data.root={sysu}"]
    ok = train_cli(tmp_path, *data)
    assert ok.returncode == 0, ok.stderr[-3000:]
    out = tmp_path / "out"
    before = {p.name: p.read_bytes() for p in (out / "config.yaml", out / "metrics.json", out / "history.jsonl",
                                               out / "checkpoint" / "last.pt")}
    _corrupt(sorted((sysu / "cam2").glob("*/*.jpg"))[0])
    assert_refused(train_cli(tmp_path, *data, "loss.at_margin=0.5"), "cannot decode")
    after = {p.name: p.read_bytes() for p in (out / "config.yaml", out / "metrics.json", out / "history.jsonl",
                                              out / "checkpoint" / "last.pt")}
    assert after == before


def test_resume_refuses_changed_training_settings_and_continues_a_longer_schedule(tmp_path, sysu):
    data = ["data.dataset=sysu_mm01", f"data.root={sysu}"]
    assert train_cli(tmp_path, *data).returncode == 0
    checkpoint = (tmp_path / "out" / "checkpoint" / "last.pt").read_bytes()
    line = assert_refused(train_cli(tmp_path, *data, "loss.type=triplet", "solver.lr=0.01"), "--no-resume")
    assert "loss.type: 'expat' -> 'triplet'" in line and "solver.lr: 0.001 -> 0.01" in line
    assert (tmp_path / "out" / "checkpoint" / "last.pt").read_bytes() == checkpoint  # nothing trained or written
    longer = train_cli(tmp_path, *data, "solver.epochs=2", "eval.trials=2")  # how long and how to evaluate: allowed
    assert longer.returncode == 0, longer.stderr[-3000:]
    assert [json.loads(line)["epoch"] for line in (tmp_path / "out" / "history.jsonl").read_text().splitlines()] \
        == [1, 2]


def test_queries_without_a_true_match_are_refused_before_training(tmp_path, sysu):
    """Every IR query of test identity X is from camera 3 and X's only RGB images are in camera 2: SYSU's rule
    (camera-3 queries ignore camera 2) leaves no query a match, which evaluation would find only after training."""
    test_ids = {int(t) for t in (sysu / "exp" / "test_id.txt").read_text().strip().split(",")}
    for cam in (1, 4, 5, 6):  # RGB cameras other than 2, and IR camera 6
        for d in (sysu / f"cam{cam}").iterdir():
            if int(d.name) in test_ids:
                shutil.rmtree(d)
    line = assert_refused(train_cli(tmp_path, "data.dataset=sysu_mm01", f"data.root={sysu}"), "no query has a true match",
                          "camera-3 queries ignore camera 2")
    assert not (tmp_path / "out" / "checkpoint").exists() and "sysu_mm01" in line


# ------------------------------------------------------------------------------------------- study spec


@pytest.mark.parametrize("change, needles", [
    ({"axes": {"loss.typo": ["expat"]}}, ["loss.typo", "did you mean"]),
    ({"axes": {"loss.type": []}}, ["axis 'loss.type'", "empty"]),
    ({"search": {"algorithm": "hyperopt"}}, ["'hyperopt' is unknown", "optuna"]),
    ({"scheduler": {"type": "pbt"}}, ["'pbt' is unknown", "asha"]),
    ({"metric": "accuracy"}, ["'accuracy' is never reported", "rank1"]),
    ({"search": "optuna"}, ["'search' must be a mapping"]),
    ({"axes": {}, "search": {"algorithm": "optuna", "num_samples": "lots",
                             "space": {"solver.lr": {"type": "float", "low": 1e-4, "high": 1e-3}}}},
     ["search.num_samples must be a whole number"]),
    ({"axes": {}, "search": {"algorithm": "optuna", "num_samples": 2,
                             "space": {"solver.lr": {"type": "float", "low": "abc", "high": 1e-3}}}},
     ["search.space.solver.lr needs numbers"]),
    ({"resources": {"cpu": "two"}}, ["resources.cpu must be a number"]),
    ({"max_failures": "two"}, ["max_failures must be a whole number"]),   # used to fail only inside Tune
    ({"group_by": "loss.type"}, ["group_by must be a list"]),
    ({"seeds": [0, 0]}, ["seeds lists 0 more than once"]),
    ({"axes": {"loss.type": ["expat", "expat"]}}, ["axis 'loss.type' lists 'expat' more than once"]),
    ({"baseline": {"loss.type": "triplet"}}, ["baseline 'loss.type=triplet' matches no row"]),
])
def test_study_cli_refuses_bad_spec(tmp_path, change, needles):
    assert_refused(study_cli(tmp_path, {**STUDY, **change}, timeout=120), "study error:", *needles)
    assert not (tmp_path / "mlflow.db").exists()


def test_study_cli_refuses_set_on_a_key_the_study_varies(tmp_path):
    assert_refused(study_cli(tmp_path, STUDY, "--set", "loss.type=triplet", timeout=120), "--set loss.type",
                   "the study varies")
