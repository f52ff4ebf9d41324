"""The reproduction studies (``search_spaces/reproduce_*.yaml``): each plans without the data, refuses to start
without its data root or weights in one line naming the key, and trains a step of its first trial on tiny data
written in the dataset's real on-disk layout. The CLI runs in this process (tests/inprocess.py) except for the
study that trains under Ray."""
import subprocess
from pathlib import Path

import pytest

from ablation.study import load_study, trial_config
from core.data import generate_market, generate_regdb, generate_sysu
from core.engine import train
from inprocess import run_main

ROOT = Path(__file__).resolve().parent.parent
STUDIES = ["reproduce_market", "reproduce_duke", "reproduce_sysu", "reproduce_regdb"]
# A step of the study's own settings at toy size: ResNet-18 from random weights, 64x32 images, one step, one eval.
TOY = {"model.arch": "resnet18", "model.pretrained": "none", "data.height": 64, "data.width": 32,
       "data.num_workers": 0, "solver.epochs": 1, "solver.max_steps_per_epoch": 1, "eval.every": 1,
       "eval.batch_size": 64}


EIGHT_CPUS = ("--num-cpus", "8")  # the machine the studies are written for (resources.cpu is checked against it)


def run_cli(tmp_path: Path, study: str, *sets: str) -> subprocess.CompletedProcess:
    argv = ["--study", study, "--tracking-uri", str(tmp_path / "mlflow.db"), "--storage-path",
            str(tmp_path / "ray_results"), *EIGHT_CPUS]
    for item in sets:
        argv += ["--set", item]
    return run_main("ablation.run", argv, cwd=tmp_path, timeout=120)


@pytest.mark.parametrize("study", STUDIES)
def test_reproduction_study_plans_without_data_and_refuses_to_start_without_it(tmp_path, study):
    plan = run_main("ablation.run", ["--study", study, "--dry-run"], cwd=ROOT, timeout=120)
    assert plan.returncode == 0, plan.stderr
    spec = load_study(study)
    assert spec.baseline_label() == "loss.type=triplet"
    assert bool(spec.targets) == (study != "reproduce_regdb")  # RegDB's published numbers are not in the README
    for sets, key in [((), "data.root"), (("data.root=/data/reid",), "model.pretrained")]:
        proc = run_cli(tmp_path, study, *sets)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
        assert key in lines[0] and f"set {key}=" in lines[0].replace("pass ", "set "), lines[0]
    assert not (tmp_path / "ray_results").exists() or not any((tmp_path / "ray_results").iterdir())


def _layout(study: str, tmp_path: Path) -> str:
    if study == "reproduce_regdb":
        return str(generate_regdb(tmp_path / "RegDB", num_ids=12, num_test_ids=4, images_per_modality=2))
    if study == "reproduce_sysu":
        generate_sysu(tmp_path / "sysu", num_ids=12, num_val_ids=2, num_test_ids=4, images_per_cam=2)
        return str(tmp_path / "sysu")
    generate_market(tmp_path / "reid", num_train_ids=16, num_test_ids=4, images_per_cam=2, num_junk=2,
                    num_distractors=2)
    # Duke's parser also takes a folder that holds the three image folders itself
    return str(tmp_path / "reid" / ("market1501" if study == "reproduce_duke" else ""))


@pytest.mark.parametrize("study", STUDIES)
def test_reproduction_study_trains_a_step_on_its_real_layout(tmp_path, study):
    spec = load_study(study, {**TOY, "data.root": _layout(study, tmp_path)})
    cfg = trial_config(spec, spec.plan[-1].params)  # the study's own algorithm settings, expAT last
    result = train(cfg, log=lambda s: None)
    assert result.final["epoch"] == 1 and 0.0 <= result.final["rank1"] <= 100.0
    if study == "reproduce_sysu":  # every SYSU-MM01 setting is logged
        assert {f"rank1_{m}_{s}" for m in ("all", "indoor") for s in ("single", "multi")} <= set(result.final)
    elif study == "reproduce_regdb":  # the last split, both directions
        assert cfg.data.regdb_trial == 10 and {"rank1_v2t", "rank1_t2v", "mAP_v2t", "mAP_t2v"} <= set(result.final)
    else:
        assert cfg.model.stem_relu is False  # the authors' RGB network


@pytest.mark.slow
def test_regdb_study_repeats_over_splits_and_reports_both_directions(tmp_path):
    """Two algorithms x 3 RegDB splits x 1 seed on generated RegDB-layout data: each row averages its 3 splits
    (checked against the child runs' own metrics), is paired with the baseline split by split, and shows both
    directions; trials.csv keeps the per-split numbers."""
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from studies import run_study_here
    root = generate_regdb(tmp_path / "RegDB", num_ids=12, num_test_ids=4, images_per_modality=2, num_trials=3)
    study = {"base": "quick", "overrides": {"data.dataset": "regdb", "data.root": str(root), "data.sampler": "pk",
                                           "data.batch_size": 16, "solver.epochs": 1, "solver.max_steps_per_epoch": 2},
             "axes": {"loss.type": ["triplet", "expat"]}, "splits": [1, 2, 3], "seeds": [0],
             "baseline": {"loss.type": "triplet"}, "resources": {"cpu": 1}}
    proc = run_study_here(tmp_path, "regdb_splits", study, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "6/6 trials finished, 0 failed" in proc.stdout
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("regdb_splits")
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("kind") == "trial"]
    assert sorted((r.data.tags["group"], r.data.tags["split"]) for r in runs) == sorted(
        (f"loss.type={t}", str(s)) for t in ("triplet", "expat") for s in (1, 2, 3))
    out = tmp_path / "outputs" / "reports" / "regdb_splits"
    trials = pd.read_csv(out / "trials.csv")
    assert sorted(trials["split"]) == [1, 1, 2, 2, 3, 3]
    table = pd.read_csv(out / "table.csv").set_index("group")
    for group in ("loss.type=triplet", "loss.type=expat"):
        mine = [r for r in runs if r.data.tags["group"] == group]
        assert table.loc[group, "n"] == 3
        for metric in ("rank1", "rank1_v2t", "rank1_t2v"):
            expected = sum(r.data.metrics[metric] for r in mine) / 3
            assert table.loc[group, f"{metric}_mean"] == pytest.approx(expected, abs=0.006), (group, metric)
    # paired split by split: one seed alone would leave a single pair, too few for a test
    assert table.loc["loss.type=expat", "rank1_test"] == "paired"
    report = (out / "report.md").read_text()
    assert "rank1_v2t" in report and "rank1_t2v" in report


def test_estimate_times_one_trial_and_writes_no_runs(tmp_path):
    """--estimate on generated SYSU-layout data: per-trial iterations and images follow the schedule (checked by
    hand: 16 ids -> 11 train ids x 4 RGB cameras x 2 images = 88 RGB anchors -> 11 batches of 8 triplets, 2 epochs
    -> 22 iterations of 48 images; sysu_paper evaluates every 5 epochs and after the last -> iteration 22, and
    with eval.every_iters=10 at iterations 10 and 20 -> 3 evaluations), the study's trials and concurrency are
    printed (--num-cpus 8 and 4 CPUs a trial -> 2 at once, on a machine of any size), and nothing is logged."""
    import re
    root = generate_sysu(tmp_path / "sysu", num_ids=16, num_val_ids=1, num_test_ids=4, images_per_cam=2)
    proc = run_main("ablation.run", ["--study", "reproduce_sysu", "--estimate", *EIGHT_CPUS,
                                     "--set", f"data.root={root}", "--set", "model.pretrained=none",
                                     "--set", "model.arch=resnet18", "--set", "data.height=64", "--set",
                                     "data.width=32", "--set", "solver.epochs=2", "--set", "data.num_workers=0",
                                     "--set", "eval.every_iters=10"],
                    cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"per trial: 22 iterations x 48 images = 1056 images seen, [\d.]+ s per iteration; "
                     r"3 evaluations x [\d.]+ s", proc.stdout), proc.stdout
    assert re.search(r"study: 6 trials, 2 at once; about \d+", proc.stdout), proc.stdout
    assert "estimate for study reproduce_sysu on cpu" in proc.stdout  # resources.gpu=0: its trials train on the CPU
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray_results").exists()


@pytest.mark.slow
def test_iteration_evaluations_weights_hash_and_the_test_selected_column_in_a_study(tmp_path):
    """One tiny iteration-scheduled trial with targets, eval.every_iters and a weights file other than the expected
    one: it warns and trains, logs the file's sha256 as a param and each evaluation at its iteration, and the report
    shows the best-on-test number in its own labelled column beside the final one."""
    import hashlib

    import torch

    from core.models import ResNetBackbone
    from studies import history, output, run_study_here, study_runs
    weights = tmp_path / "resnet18.pth"
    torch.save(ResNetBackbone("resnet18").state_dict(), weights)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    # 3 steps per epoch, 4 iterations: evaluations at iteration 2 (epoch 1) and 4 (the end, epoch 2)
    body = {"base": "quick", "overrides": {
        "solver.step_unit": "iter", "solver.max_iters": 4, "solver.epochs": 10, "solver.max_steps_per_epoch": 3,
        "eval.every": 100, "eval.every_iters": 2, "eval.trials": 1, "data.synthetic_ids": 16,
        "model.pretrained": str(weights), "model.pretrained_expected": "19c8e357"},
        "axes": {"loss.type": ["expat"]}, "seeds": [0], "resources": {"cpu": 1},
        "targets": {"source": "a test", "rows": [{"group": {"loss.type": "expat"}, "name": "expAT Loss",
                                                    "rank1": 38.57, "mAP": 38.61}]}}
    proc = run_study_here(tmp_path, "iters", body)
    assert proc.returncode == 0, output(proc)
    warned = [line for line in proc.stderr.splitlines() if line.startswith("warning: model.pretrained")]
    assert len(warned) == 1 and digest[:8] in warned[0] and "resnet18-19c8e357.pth" in warned[0], proc.stderr
    client, _, (trial,) = study_runs(tmp_path, "iters")
    assert trial.info.status == "FINISHED" and trial.data.params["model.pretrained_sha256"] == digest
    rank1, mean_ap = history(client, trial.info.run_id, "iter_rank1"), history(client, trial.info.run_id, "iter_mAP")
    assert [m.step for m in rank1] == [2, 4] and [m.step for m in mean_ap] == [2, 4]
    assert rank1[-1].value == trial.data.metrics["rank1"]  # the last iteration's evaluation is the final one
    best_r1, best_map = max((r.value, m.value) for r, m in zip(rank1, mean_ap))
    report = (tmp_path / "outputs" / "reports" / "iters" / "report.md").read_text()
    section = report.split("## Paper targets")[1]
    assert "Rank-1 best checkpoint on test (the authors' selection; optimistic)" in section
    final_r1, final_map = trial.data.metrics["rank1"], trial.data.metrics["mAP"]
    assert (f"| expAT Loss (`loss.type=expat`) | 38.57 | {final_r1:.2f} | {final_r1 - 38.57:+.2f} | {best_r1:.2f} "
            f"| 38.61 | {final_map:.2f} | {final_map - 38.61:+.2f} | {best_map:.2f} |") in section
