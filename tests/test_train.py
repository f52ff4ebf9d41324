"""The trainer end to end on generated data: every algorithm trains, training beats chance, resume is exact."""
import json
import math
import os
from pathlib import Path

import pytest
import torch

from core.config import load_config
from core.engine import NonFiniteLossError, Trainer, train
from inprocess import run_main  # the CLI's main(argv) in process; tests/test_cli_smoke.py starts it fresh

ROOT = Path(__file__).resolve().parent.parent
# 32x16 images: these tests check what is trained, reported and resumed, not how well (the chance test trains at 64x32)
TINY = {"data.synthetic_ids": 16, "solver.max_steps_per_epoch": 2, "eval.trials": 2, "run.progress": False,
        "data.batch_size": 16, "data.height": 32, "data.width": 16}


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


@pytest.fixture
def restore_tf32_flags():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("tf32", [False, True])
def test_run_tf32_sets_both_torch_flags_before_training(tf32, restore_tf32_flags):
    # Start from the opposite setting, so only the trainer can have put the flags where they end up.
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not tf32
    Trainer(load_config("quick", {**TINY, "solver.epochs": 1, "run.tf32": tf32}), log=lambda s: None)
    assert torch.backends.cuda.matmul.allow_tf32 is tf32 and torch.backends.cudnn.allow_tf32 is tf32


def test_paper_presets_compute_in_fp32():
    # The authors' GPUs had no TF32; the quick presets keep torch's faster default.
    for preset in ("market_paper", "duke_paper", "sysu_paper", "regdb_paper"):
        assert load_config(preset).run.tf32 is False, preset
    assert load_config("quick").run.tf32 is True


@pytest.fixture
def restore_deterministic_flags(monkeypatch):
    saved = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")  # recorded as found, so it is put back after the test
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    yield
    torch.use_deterministic_algorithms(saved[0])
    torch.backends.cudnn.deterministic = saved[1]


@pytest.mark.parametrize("on", [False, True])
def test_run_deterministic_sets_torch_flags_before_training(on, restore_deterministic_flags):
    # From the opposite setting, so only the trainer can have put the flags where they end up.
    torch.use_deterministic_algorithms(not on)
    torch.backends.cudnn.deterministic = not on
    Trainer(load_config("quick", {**TINY, "solver.epochs": 1, "run.deterministic": on}), log=lambda s: None)
    assert torch.are_deterministic_algorithms_enabled() is on and torch.backends.cudnn.deterministic is on
    # cuBLAS's fixed workspace, without which torch refuses deterministic GPU matmuls
    assert os.environ.get("CUBLAS_WORKSPACE_CONFIG") == (":4096:8" if on else None)


@pytest.mark.parametrize("preset,overrides", [("quick", {"loss.type": "expat_center", "model.neck": "csbn"}),
                                              ("quick_market", {"loss.type": "triplet"})])
def test_deterministic_training_runs_and_changes_no_cpu_number(preset, overrides, restore_deterministic_flags):
    """Every op of these recipes has a deterministic version (torch raises for one that has not), and on the CPU,
    deterministic already, the numbers are the same bits either way."""
    finals = [train(load_config(preset, {**TINY, **overrides, "solver.epochs": 1, "run.deterministic": on,
                                         "run.device": "cpu"}), log=lambda s: None).final for on in (True, False)]
    assert finals[0]["loss"] == finals[1]["loss"] and finals[0]["mAP"] == finals[1]["mAP"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_deterministic_gpu_runs_of_one_seed_are_identical(restore_deterministic_flags):
    """Without run.deterministic two such runs differ from the first epoch (seen on an H200). The process first
    trains without the key and without cuBLAS's workspace setting (the fixture removes it), as a Ray worker reused
    from such a trial has."""
    cfg = {"data.synthetic_ids": 16, "solver.max_steps_per_epoch": 6, "eval.trials": 2, "run.progress": False,
           "solver.epochs": 2, "run.device": "cuda", "run.deterministic": True, "loss.type": "expat_center"}
    train(load_config("quick", {**cfg, "solver.epochs": 1, "run.deterministic": False}), log=lambda s: None)
    runs = [train(load_config("quick", cfg), log=lambda s: None).history for _ in range(2)]
    assert [h["loss"] for h in runs[0]] == [h["loss"] for h in runs[1]]
    assert runs[0][-1]["mAP"] == runs[1][-1]["mAP"]


@pytest.mark.slow  # six epochs of training: the suite's longest unit-level test
def test_short_training_clearly_beats_chance():
    """Six epochs on the generated Market-layout data: far above both the untrained model and random ranking.
    Two torch threads, whichever pool the test process has: the numbers depend on the threads' summation order."""
    cfg = load_config("quick_market", {"solver.epochs": 6, "eval.every": 6, "run.progress": False,
                                       "loss.type": "bnneck", "run.threads": 2})
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


# Resume tests evaluate only after the last epoch: they compare states, not accuracy. Deterministic kernels: the
# states compared are equal to rounding on a GPU too (device auto), where GPU runs of one seed differ otherwise.
RESUME = {**TINY, "solver.max_steps_per_epoch": 2, "eval.every": 100, "run.deterministic": True}


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
    with pytest.raises(NonFiniteLossError, match="loss became inf.*; lower loss.metric_weight=1e[+]39 "):
        train(cfg, log=lambda s: None)


def test_a_divergence_names_the_extreme_key_not_the_learning_rate():
    """Weight decay far above its default makes SGD diverge: the message names it, not solver.lr."""
    cfg = load_config("quick", {**TINY, "solver.optimizer": "sgd", "solver.weight_decay": 1e9, "solver.epochs": 1,
                                "solver.max_steps_per_epoch": 6})
    with pytest.raises(NonFiniteLossError, match=r"loss became nan.*; lower solver.weight_decay=1e\+09 \(2e\+12x its "
                                                 r"default 0.0005\)$"):
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


def test_eval_every_iters_evaluates_at_those_iterations_once_each():
    # 3 steps per epoch, 5 iterations in all, every 2: evaluations at 2 (epoch 1), 4 and the final 5 (epoch 2)
    cfg = load_config("quick", {**TINY, "solver.step_unit": "iter", "solver.max_iters": 5, "solver.epochs": 100,
                                "solver.max_steps_per_epoch": 3, "eval.every": 100, "eval.every_iters": 2})
    trainer = Trainer(cfg, log=lambda s: None)
    calls, modes, evaluate, step = [], [], trainer.evaluate, trainer.train_step
    trainer.evaluate = lambda: calls.append(trainer.iteration) or evaluate()
    trainer.train_step = lambda batch: modes.append(trainer.model.training) or step(batch)
    history = trainer.fit().history
    assert calls == [2, 4, 5]  # the final evaluation is not run twice
    assert modes == [True] * 5  # training goes on in training mode after an evaluation
    assert [sorted(h["iter_evals"]) for h in history] == [[2], [4, 5]]
    assert history[1]["iter_evals"][5]["rank1"] == history[1]["rank1"]
    assert "rank1" not in history[0] and set(history[0]["iter_evals"][2]) >= {"rank1", "mAP"}


def test_eval_every_iters_needs_an_iteration_schedule():
    cfg = load_config("quick", {**TINY, "solver.epochs": 1, "eval.every_iters": 1})  # step_unit=epoch
    assert "iter_evals" not in Trainer(cfg, log=lambda s: None).fit().history[0]


def test_sigterm_stops_the_cli_in_one_line_and_running_it_again_continues(tmp_path, capsys, monkeypatch):
    """SIGTERM (a scheduler's stop) after the first epoch's checkpoint: exit status 143, one line saying how to go on,
    the whole checkpoint and nothing half-written; the same command then trains the remaining epochs, each once."""
    import os
    import signal

    from core import engine
    from core.train import main
    out = tmp_path / "out"
    argv = ["--config", "quick", f"run.output_dir={out}", "solver.epochs=4",
            *(f"{k}={v}" for k, v in TINY.items())]
    saved = engine.save_checkpoint

    def save_then_sigterm(*args, **kwargs):  # the signal arrives right after the first checkpoint, however loaded
        saved(*args, **kwargs)               # the machine (a thread polling for the file could come too late)
        monkeypatch.setattr(engine, "save_checkpoint", saved)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(engine, "save_checkpoint", save_then_sigterm)
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    # SIGINT ignored, as in a job a shell script started in the background (and in pytest-xdist's workers): SIGTERM
    # must stop the training all the same
    previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        code = main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    err = capsys.readouterr().err
    assert code == 143, err
    assert err.count("\n") == 1 and err.startswith("interrupted (SIGTERM); run the same command again"), err
    assert str(out) in err
    assert sorted(p.name for p in (out / "checkpoint").iterdir()) == ["last.pt"]
    stopped_at = torch.load(out / "checkpoint" / "last.pt", weights_only=False)["epoch"]
    assert stopped_at < 4
    assert main(argv) == 0, capsys.readouterr().err
    assert [json.loads(s)["epoch"] for s in (out / "history.jsonl").read_text().splitlines()] == [1, 2, 3, 4]


def test_a_checkpoint_write_stopped_midway_leaves_the_last_whole_one(tmp_path, monkeypatch):
    from core import checkpoint
    checkpoint.save_checkpoint(tmp_path, {"epoch": 1})

    def stopped_midway(state, path):
        Path(path).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.torch, "save", stopped_midway)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_checkpoint(tmp_path, {"epoch": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    assert torch.load(tmp_path / "last.pt", weights_only=False)["epoch"] == 1


def _damage(path: Path, how: str) -> None:
    from core.checkpoint import save_checkpoint
    path.parent.mkdir(parents=True, exist_ok=True)
    if how == "folder":
        path.mkdir()
        return
    save_checkpoint(path.parent, {"epoch": 1, "weights": torch.zeros(1000)})
    whole = path.read_bytes()
    path.write_bytes({"zero bytes": b"", "truncated": whole[: len(whole) // 2],
                      "random bytes": bytes(range(256)) * 40}[how])


@pytest.mark.parametrize("how", ["zero bytes", "truncated", "random bytes", "folder"])
def test_a_damaged_checkpoint_is_refused_in_one_line_before_any_work(tmp_path, capsys, monkeypatch, how):
    """Named with the way out, before data or model are built (nothing written, no data generated); ``--no-resume``
    starts over, and the trainer (a study's trial) refuses it the same way."""
    monkeypatch.setenv("EXPAT_DATA_CACHE", str(tmp_path / "cache"))
    from core.checkpoint import load_checkpoint
    from core.config import ConfigError
    from core.train import main
    out = tmp_path / "out"
    ckpt = out / "checkpoint" / "last.pt"
    _damage(ckpt, how)
    argv = ["--config", "quick", f"run.output_dir={out}", "solver.epochs=1", *(f"{k}={v}" for k, v in TINY.items())]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"checkpoint {ckpt} is " in err, err
    assert "delete it to start over, or pass --no-resume" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint"]  # refused before anything was written
    assert not (tmp_path / "cache").exists()  # ... or any data generated
    with pytest.raises(ConfigError, match=f"checkpoint {ckpt} is "):
        load_checkpoint(ckpt.parent)
    if how == "truncated":  # the one case cheap enough to train: --no-resume starts over and overwrites it
        assert main(["--no-resume", *argv]) == 0, capsys.readouterr().err
        assert load_checkpoint(ckpt.parent)["epoch"] == 1
