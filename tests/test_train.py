"""The trainer end to end on generated data: every algorithm trains, training beats chance, resume is exact."""
import json
import math
from pathlib import Path

import pytest
import torch

from core.config import load_config
from core.engine import NonFiniteLossError, Trainer, train
from inprocess import run_main  # the CLI's main(argv) in process; tests/test_cli_smoke.py starts it fresh

ROOT = Path(__file__).resolve().parent.parent
TINY = {"data.synthetic_ids": 16, "solver.max_steps_per_epoch": 2, "eval.trials": 2, "run.progress": False,
        "data.batch_size": 16}


@pytest.mark.parametrize("preset", ["quick", "quick_market"])
@pytest.mark.parametrize("loss_type", ["triplet", "bnneck", "expat", "expat_center"])
def test_every_algorithm_trains_and_reports(preset, loss_type):
    cfg = load_config(preset, {**TINY, "loss.type": loss_type, "solver.epochs": 1})
    seen = []
    result = train(cfg, reporter=lambda epoch, metrics, ckpt: seen.append((epoch, metrics)), log=lambda s: None)
    assert [e for e, _ in seen] == [1]
    m = result.final
    assert math.isfinite(m["loss"]) and m["loss"] > 0
    assert m["loss"] == pytest.approx(m["loss_id"] + m["loss_metric"] + m["loss_center"], rel=1e-5)
    assert (m["loss_center"] > 0) == (loss_type == "expat_center")
    for key in ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP"):
        assert 0.0 <= m[key] <= 100.0


def test_authors_triplet_sampler_with_separate_bn_groups():
    cfg = load_config("quick", {**TINY, "data.sampler": "triplets", "data.batch_size": 4, "solver.epochs": 1,
                                "model.bn_groups": "separate"})
    trainer = Trainer(cfg, log=lambda s: None)
    batch = next(iter(trainer.train_loader))
    assert batch["images"].shape[0] == 6 * 4 and "roles" in batch
    parts = trainer.train_step(batch)
    assert math.isfinite(parts["loss"]) and parts["loss_metric"] > 0


def test_short_training_clearly_beats_chance():
    """Six epochs on the generated Market-layout data: far above both the untrained model and random ranking."""
    cfg = load_config("quick_market", {"solver.epochs": 6, "eval.every": 6, "run.progress": False,
                                       "loss.type": "bnneck"})
    trainer = Trainer(cfg, log=lambda s: None)
    before = trainer.evaluate()
    after = trainer.fit().final
    # Chance: a random ranking finds a true match first with probability about (#matches / #gallery).
    gallery = trainer.splits.gallery
    query = trainer.splits.query
    chance_r1 = 100.0 * sum(sum(g.pid == q.pid and g.camid != q.camid for g in gallery) / len(gallery)
                            for q in query) / len(query)
    assert after["mAP"] > before["mAP"] + 15.0, (before, after)
    assert after["rank1"] > max(3 * chance_r1, before["rank1"] + 20.0), (chance_r1, before, after)


# Resume tests evaluate only after the last epoch and train on small images: they compare states, not accuracy.
RESUME = {**TINY, "solver.max_steps_per_epoch": 2, "eval.every": 100, "data.height": 32, "data.width": 16}


def _assert_same_state(a, b, where=""):
    """Nested state dicts (tensors, numbers, lists) equal to float rounding, key by key."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape, where
        assert torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-6), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (where, sorted(a), sorted(b))
        for k in a:
            _assert_same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def _interrupted_and_uninterrupted(tmp_path, overrides, stop_after, epochs):
    """An uninterrupted run of ``epochs`` epochs, and a run stopped after ``stop_after`` epochs then resumed to
    ``epochs``; returns both results, the epochs the resumed run's reporter saw, the checkpoint the stopped run
    left and both final checkpoints."""
    cfg = lambda n: load_config("quick", {**overrides, "solver.epochs": n})  # noqa: E731
    full_seen = []
    full = train(cfg(epochs), reporter=lambda e, m, c: full_seen.append(e), checkpoint_dir=str(tmp_path / "a"),
                 log=lambda s: None)
    assert full_seen == list(range(1, epochs + 1))
    train(cfg(stop_after), checkpoint_dir=str(tmp_path / "b"), log=lambda s: None)
    stopped = torch.load(tmp_path / "b" / "last.pt", weights_only=False)
    assert stopped["epoch"] == stop_after
    seen = []
    resumed = train(cfg(epochs), reporter=lambda e, m, c: seen.append(e), checkpoint_dir=str(tmp_path / "b"),
                    log=lambda s: None)
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=False)
    return full, resumed, seen, stopped, a, b


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    """Stopped after 2 of 3 epochs and run again: only epoch 3 is trained and reported, and the model, the
    optimizer's moments and step counts and the iteration count end equal to an uninterrupted run's."""
    full, resumed, seen, _, a, b = _interrupted_and_uninterrupted(tmp_path, RESUME, stop_after=2, epochs=3)
    assert seen == [3]  # a run retrained from scratch would report epochs 1, 2, 3
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert b["epoch"] == 3 and b["iteration"] == a["iteration"] == 3 * 2
    for key in ("loss", "loss_id", "loss_metric", "rank1", "mAP"):
        assert resumed.final[key] == pytest.approx(full.final[key], rel=1e-5, abs=1e-6), key
    _assert_same_state(a["model"], b["model"], "model")
    adam = b["optimizer"]["state"]
    assert adam and all(float(s["step"]) == 6 for s in adam.values())  # 3 epochs x 2 steps, not 1 x 2
    _assert_same_state(a["optimizer"], b["optimizer"], "optimizer")


def test_resume_restores_center_loss_centers_and_their_optimizer(tmp_path):
    """expAT + center loss stopped after 1 of 2 epochs and resumed: the centers (trained by their own SGD) and
    that SGD's state end equal to an uninterrupted run's (the centers moved during the resumed epoch, so centers
    restarted from their initial values would not)."""
    overrides = {**RESUME, "loss.type": "expat_center"}
    full, resumed, seen, stopped, a, b = _interrupted_and_uninterrupted(tmp_path, overrides, stop_after=1,
                                                                        epochs=2)
    assert seen == [2]
    assert b["epoch"] == 2 and b["iteration"] == a["iteration"] == 4
    assert set(b["criterion"]) == set(a["criterion"]) and any("center" in k for k in b["criterion"])
    for k in a["criterion"]:
        _assert_same_state(a["criterion"][k], b["criterion"][k], f"criterion.{k}")
        if "center" in k:
            assert not torch.allclose(stopped["criterion"][k], b["criterion"][k], atol=1e-4), k
    assert a["center_optimizer"] is not None and b["center_optimizer"] is not None
    _assert_same_state(a["center_optimizer"], b["center_optimizer"], "center_optimizer")
    _assert_same_state(a["optimizer"], b["optimizer"], "optimizer")
    _assert_same_state(a["model"], b["model"], "model")
    assert resumed.final["loss_center"] == pytest.approx(full.final["loss_center"], rel=1e-5)


def test_non_finite_loss_stops_with_a_clear_reason():
    cfg = load_config("quick", {**TINY, "loss.metric_weight": 1e39, "solver.epochs": 1})
    with pytest.raises(NonFiniteLossError, match="loss became inf"):
        train(cfg, log=lambda s: None)


def test_cli_trains_writes_outputs_and_refuses_bad_keys(tmp_path):
    env = {"EXPAT_DATA_CACHE": str(tmp_path / "cache")}
    argv = ["--config", "quick", f"run.output_dir={tmp_path / 'out'}", "solver.epochs=1", "data.synthetic_ids=16",
            "solver.max_steps_per_epoch=2", "eval.trials=2", "run.progress=false"]
    proc = run_main("core.train", argv, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    assert (out / "checkpoint" / "last.pt").is_file() and (out / "config.yaml").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epoch"] == 1 and "rank1" in metrics
    assert len((out / "history.jsonl").read_text().splitlines()) == 1
    bad = run_main("core.train", argv + ["loss.margn=0.3"], cwd=ROOT, env=env, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "loss.margn" in bad.stderr and "loss.margin" in bad.stderr


@pytest.mark.parametrize("unit", ["epoch", "iter"])
def test_lr_schedule_per_epoch_or_iteration_and_resumed(tmp_path, unit):
    """Each epoch's logged lr is the reference schedule's lr at that epoch (``solver.step_unit=epoch``) or at its
    last iteration (``iter``, 2 per epoch), and a run stopped after 2 of 4 epochs continues it where it was."""
    from core.optim import lr_factor
    sched = {"solver.step_unit": unit, "solver.warmup": 3, "solver.warmup_factor": 0.1, "solver.milestones": [3],
             "solver.gamma": 0.5, "eval.every": 100}
    full, resumed, _, _, a, b = _interrupted_and_uninterrupted(tmp_path, {**RESUME, **sched}, stop_after=2,
                                                               epochs=4)
    cfg = load_config("quick", {**RESUME, **sched})
    lr = cfg.solver.lr
    steps = [1, 2, 3, 4] if unit == "epoch" else [2, 4, 6, 8]
    expected = [lr * lr_factor(t, [3], 0.5, 0.1, 3) for t in steps]
    assert [h["lr"] for h in full.history] == pytest.approx(expected, rel=1e-12)
    assert [h["lr"] for h in resumed.history] == pytest.approx(expected, rel=1e-12)
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == steps[-1]


def test_checkpoint_without_scheduler_state_resumes_at_the_schedule_step(tmp_path):
    """A checkpoint written before the scheduler's state was saved continues at the step count it records."""
    from core.optim import lr_factor
    sched = {"solver.step_unit": "iter", "solver.warmup": 5, "solver.warmup_factor": 0.1, "solver.milestones": [6],
             "solver.gamma": 0.5}
    cfg = lambda n: load_config("quick", {**RESUME, **sched, "solver.epochs": n})  # noqa: E731
    train(cfg(2), checkpoint_dir=str(tmp_path), log=lambda s: None)
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    del state["scheduler"]
    torch.save(state, tmp_path / "last.pt")
    resumed = train(cfg(4), checkpoint_dir=str(tmp_path), log=lambda s: None)
    lr = cfg(4).solver.lr
    assert [h["lr"] for h in resumed.history] == pytest.approx(
        [lr * lr_factor(t, [6], 0.5, 0.1, 5) for t in (2, 4, 6, 8)], rel=1e-12)


def test_cli_eval_only_evaluates_the_checkpoint_and_no_resume_starts_over(tmp_path):
    """``--eval-only`` prints the metrics of the model in ``checkpoint/last.pt`` (the epoch it reached and the final
    metrics the training wrote, not an untrained model's) and writes nothing; ``--no-resume`` trains from scratch,
    even with a setting the checkpoint was not trained with (which a resumed run refuses)."""
    env = {"EXPAT_DATA_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "out"
    argv = ["--config", "quick", f"run.output_dir={out}", "solver.epochs=1", "data.synthetic_ids=16",
            "solver.max_steps_per_epoch=2", "eval.trials=2", "run.progress=false"]
    run = lambda *flags: run_main("core.train", argv[:2] + list(flags) + argv[2:], cwd=ROOT,  # noqa: E731
                                  env=env, timeout=300)
    trained = run()
    assert trained.returncode == 0, trained.stderr
    final = json.loads((out / "metrics.json").read_text())
    files = {p: p.read_bytes() for p in (out / "metrics.json", out / "history.jsonl", out / "checkpoint" / "last.pt")}

    evaluated = run("--eval-only")
    assert evaluated.returncode == 0, evaluated.stderr
    (line,) = [s for s in evaluated.stdout.splitlines() if s.startswith("epoch ")]
    printed = dict(item.rsplit(" ", 1) for item in line.split(" | "))
    assert printed["epoch"] == "1"  # the checkpoint's epoch; an untrained model is at epoch 0
    for key in ("rank1", "mAP", "mINP"):
        assert printed[key] == f"{final[key]:.4g}", (key, printed, final)
    assert {p: p.read_bytes() for p in files} == files  # evaluated only: nothing trained or rewritten

    again = run("--no-resume", "loss.at_margin=0.5")
    assert again.returncode == 0, again.stderr
    assert "resumed from" not in again.stdout
    assert [json.loads(s)["epoch"] for s in (out / "history.jsonl").read_text().splitlines()] == [1]
    assert "at_margin: 0.5" in (out / "config.yaml").read_text()
    assert torch.load(out / "checkpoint" / "last.pt", weights_only=False)["config"]["loss"]["at_margin"] == 0.5
