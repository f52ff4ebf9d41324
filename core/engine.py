"""The training loop: epochs, schedule, checkpoints, evaluation, and a reporter callback for each epoch.

The engine knows nothing about Ray or MLflow: whoever runs it passes a ``reporter(epoch, metrics, checkpoint_dir)``
callable (the ablation layer adapts it to ``ray.tune.report`` and MLflow; the CLI prints).
"""
from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np
import torch

from core.checkpoint import load_checkpoint, save_checkpoint
from core.config import Config, ConfigError, flatten_mapping, iteration_scheduled, to_dict, to_flat_dict
from core.names import EVAL_METRICS, ITER_EVALS, LOSS_METRICS
from core.data import set_loader_epoch
from core.factory import build_dataset, build_loaders, build_loss, build_model
from core.inference import evaluate
from core.optim import build_optimizer, build_scheduler

Reporter = Callable[[int, dict, Optional[str]], None]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training cannot continue meaningfully."""


@dataclass
class TrainResult:
    final: dict  # metrics of the last epoch (with the last evaluation)
    history: list = field(default_factory=list)  # one metrics dict per epoch
    checkpoint_dir: Optional[str] = None
    # the last evaluation's angle samples ({"pos": [...], "neg": [...]}, degrees) with eval.diagnostics, else {}
    angle_samples: dict = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_tf32(allow: bool) -> None:
    """``run.tf32``: whether CUDA matmuls and cuDNN convolutions may compute in TF32 (process-wide torch flags;
    cuDNN allows it by default, so FP32 must be asked for)."""
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow


def set_deterministic(on: bool) -> None:
    """``run.deterministic``: deterministic kernels only (process-wide torch flags). cuBLAS needs a fixed workspace
    for it, which it reads when the process first uses it: set here, before the trainer touches the GPU."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on)
    torch.backends.cudnn.deterministic = on


def resolve_device(name: str) -> torch.device:
    """``run.device`` as a torch device; ``cuda`` on a machine without a GPU is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device=cuda but no CUDA GPU is visible on this machine; use run.device=cpu or auto")
    return torch.device(name)


# Keys that scale the updates or the loss, and what they are compared with: the schema's default (a recipe's loss
# weights, None in the schema, are about 1).
DIVERGENCE_KEYS = ("solver.lr", "solver.weight_decay", "solver.weight_decay_bias", "solver.bias_lr_factor",
                   "loss.id_weight", "loss.metric_weight", "loss.center_weight", "loss.center_lr")


def divergence_hint(cfg: Config) -> str:
    """The fix a non-finite loss message gives: the keys set at least 100x above their default when there are
    any (the likely cause), else the learning rate and the loss weights."""
    defaults = to_flat_dict(Config())
    values = to_flat_dict(cfg)
    far = []
    for key in DIVERGENCE_KEYS:
        value, default = values[key], defaults[key] if defaults[key] is not None else 1.0
        if value is not None and default > 0 and value >= 100 * default:
            far.append(f"{key}={value:g} ({value / default:.3g}x its default {default:g})")
    if far:
        return f"lower {', '.join(far)}"
    return "lower solver.lr or check the loss weights"


# Keys a resumed run may change: where and how it runs, how it evaluates, and how long it trains. Any other
# change would continue one training under another's name (config.yaml records the new values).
RESUMABLE_CHANGES = ("run.", "eval.", "solver.epochs", "solver.max_iters", "data.num_workers",
                     "model.pretrained_expected")


def check_resumable(saved: dict, cfg: Config, checkpoint_dir: str) -> None:
    """Refuse to continue a checkpoint whose training settings differ from ``cfg``'s (one line naming them)."""
    old, new = flatten_mapping(saved), to_flat_dict(cfg)
    changed = [k for k, v in new.items() if k in old and old[k] != v and not k.startswith(RESUMABLE_CHANGES)]
    if changed:
        pairs = ", ".join(f"{k}: {old[k]!r} -> {new[k]!r}" for k in changed)
        raise ConfigError(f"the checkpoint in {checkpoint_dir} was trained with other settings ({pairs}); pass "
                          f"--no-resume to start over, or another run.output_dir")


class Trainer:
    def __init__(self, cfg: Config, checkpoint_dir: str | None = None, reporter: Reporter | None = None,
                 log: Callable[[str], None] = print):
        self.cfg, self.reporter, self.log = cfg, reporter, log
        self.checkpoint_dir = str(Path(checkpoint_dir).resolve()) if checkpoint_dir else None
        if cfg.run.threads:  # the trial's CPU share: torch's intra-op pool and OpenCV (image-cache builds, decoding)
            torch.set_num_threads(cfg.run.threads)
            cv2.setNumThreads(cfg.run.threads)
        seed_everything(cfg.solver.seed)
        set_tf32(cfg.run.tf32)
        set_deterministic(cfg.run.deterministic)
        self.device = resolve_device(cfg.run.device)
        self.splits = build_dataset(cfg)
        self.train_loader, self.query_loader, self.gallery_loader = build_loaders(cfg, self.splits)
        self.model = build_model(cfg, self.splits.num_train_pids).to(self.device)
        self.criterion = build_loss(cfg, self.splits.num_train_pids, self.model.feat_dim).to(self.device)
        if cfg.eval.diagnostics:  # active hinges and mined-pair angles per epoch (train.* metrics)
            self.criterion.enable_diagnostics()
        s = cfg.solver
        self.optimizer = build_optimizer(self.model, s.optimizer, s.lr, s.weight_decay, s.bias_lr_factor,
                                         s.weight_decay_bias)
        self.scheduler = build_scheduler(self.optimizer, s.milestones, s.gamma, s.warmup_factor, s.warmup)
        center_params = [p for p in self.criterion.parameters() if p.requires_grad]
        self.center_optimizer = torch.optim.SGD(center_params, lr=cfg.loss.center_lr) if center_params else None
        self.epoch = 0  # last finished epoch
        self.iteration = 0
        self.history: list[dict] = []
        self.angle_samples: dict = {}  # of the last evaluation (core.inference.diagnostics)
        self.every_iters = cfg.eval.every_iters if iteration_scheduled(cfg) else 0
        self._last_eval: tuple[int, dict] = (-1, {})  # (iteration, metrics): one evaluation per iteration

    # --- state -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "criterion": self.criterion.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "center_optimizer": self.center_optimizer.state_dict() if self.center_optimizer else None,
                "epoch": self.epoch, "iteration": self.iteration, "history": self.history,
                "config": to_dict(self.cfg)}

    def resume(self) -> bool:
        """Continue from ``checkpoint_dir`` when it holds a checkpoint (centers included, unlike rgb_exp)."""
        if not self.checkpoint_dir:
            return False
        state = load_checkpoint(self.checkpoint_dir)
        if state is None:
            return False
        check_resumable(state.get("config") or {}, self.cfg, self.checkpoint_dir)
        self.model.load_state_dict(state["model"])
        self.criterion.load_state_dict(state["criterion"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.center_optimizer and state.get("center_optimizer"):
            self.center_optimizer.load_state_dict(state["center_optimizer"])
        self.epoch, self.iteration, self.history = state["epoch"], state["iteration"], state["history"]
        if state.get("scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
        else:  # a checkpoint written before the scheduler was saved: the steps done are its whole state
            done = self.epoch if self.cfg.solver.step_unit == "epoch" else self.iteration
            self.scheduler.last_epoch = done
            for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
                group["lr"] = base * self.scheduler.lr_lambdas[0](done)
        self.log(f"resumed from {self.checkpoint_dir} after epoch {self.epoch}")
        return True

    # --- loop --------------------------------------------------------------------------------------------
    def _done(self) -> bool:
        s = self.cfg.solver
        return self.epoch >= s.epochs or (s.max_iters and self.iteration >= s.max_iters)

    def fit(self) -> TrainResult:
        while not self._done():
            self.epoch += 1
            metrics = self.train_one_epoch()
            last = self._done()
            if self.epoch % self.cfg.eval.every == 0 or last:
                metrics.update(self._evaluate_once())
            if last and self.every_iters:  # the final model is one of the checkpoints the authors scored
                metrics[ITER_EVALS][self.iteration] = self._evaluate_once()
            self.history.append(metrics)
            ckpt = None
            if self.checkpoint_dir and (self.epoch % self.cfg.run.checkpoint_every == 0 or last):
                save_checkpoint(self.checkpoint_dir, self.state_dict())
                ckpt = self.checkpoint_dir
            self.log(format_metrics(metrics))
            if self.reporter:
                self.reporter(self.epoch, metrics, ckpt)
        final = dict(self.history[-1]) if self.history else {}
        return TrainResult(final=final, history=self.history, checkpoint_dir=self.checkpoint_dir,
                           angle_samples=self.angle_samples)

    def train_one_epoch(self) -> dict:
        cfg, s = self.cfg, self.cfg.solver
        self.model.train()
        set_loader_epoch(self.train_loader, self.epoch)
        by_epoch = s.step_unit == "epoch"
        lr = self.optimizer.param_groups[0]["lr"] if by_epoch else None  # the lr the scheduler set for this step
        sums: dict[str, float] = {}
        steps = images = 0
        evals: dict[int, dict] = {}  # eval.every_iters: iteration -> its evaluation
        start = time.perf_counter()
        batches = self.train_loader
        if cfg.run.progress:
            from tqdm import tqdm
            batches = tqdm(batches, desc=f"epoch {self.epoch}", leave=False, dynamic_ncols=True)
        for batch in batches:
            if s.max_steps_per_epoch and steps >= s.max_steps_per_epoch:
                break
            if s.max_iters and self.iteration >= s.max_iters:
                break
            self.iteration += 1
            if not by_epoch:
                lr = self.optimizer.param_groups[0]["lr"]
            parts = self.train_step(batch)
            if not by_epoch:
                self.scheduler.step()
            if self.every_iters and self.iteration % self.every_iters == 0:
                evaluating = time.perf_counter()
                evals[self.iteration] = self._evaluate_once()  # (evaluate restores training mode)
                start += time.perf_counter() - evaluating  # time_epoch and img/s count training only
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            steps += 1
            images += batch["images"].shape[0]
            if cfg.run.progress:
                batches.set_postfix(loss=f"{parts['loss']:.3f}")
        elapsed = time.perf_counter() - start
        if by_epoch:
            self.scheduler.step()
        metrics = {"epoch": self.epoch, "lr": lr, "images_per_sec": images / max(elapsed, 1e-9),
                   "time_epoch": elapsed}
        metrics.update({k: v / max(steps, 1) for k, v in sums.items()})
        metrics.update(self.criterion.pop_diagnostics())  # one device read per epoch
        if self.every_iters:
            metrics[ITER_EVALS] = evals
        return metrics

    def train_step(self, batch: dict) -> dict[str, float]:
        dev = self.device
        batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
        groups = 6 if "roles" in batch and self.cfg.model.bn_groups == "separate" else None
        outputs = self.model(batch["images"], modality=batch["modality"], bn_groups=groups)
        loss, parts = self.criterion(outputs, batch)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"loss became {loss.item()} at epoch {self.epoch}, iteration "
                                     f"{self.iteration} (components: "
                                     f"{ {k: float(v) for k, v in parts.items()} }); "
                                     f"{divergence_hint(self.cfg)}")
        self.optimizer.zero_grad(set_to_none=True)
        if self.center_optimizer:
            self.center_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.center_optimizer:
            # The center loss is weighted inside the total; undo the weight so centers move at center_lr (RSB).
            weight = self.criterion.center_weight
            for p in self.center_optimizer.param_groups[0]["params"]:
                if p.grad is not None:
                    p.grad.mul_(1.0 / weight)
            self.center_optimizer.step()
        out = {"loss": float(loss.detach())}
        out.update({k: float(v) for k, v in parts.items()})
        return out

    def _evaluate_once(self) -> dict[str, float]:
        """``evaluate``, run at most once per iteration (an iteration evaluation can also end the epoch)."""
        if self._last_eval[0] != self.iteration:
            self._last_eval = (self.iteration, self.evaluate())
        return dict(self._last_eval[1])

    def evaluate(self) -> dict[str, float]:
        self.angle_samples = {}
        return evaluate(self.model, self.cfg, self.splits, self.query_loader, self.gallery_loader, self.device,
                        samples=self.angle_samples)


def format_metrics(m: dict) -> str:
    items = [f"epoch {m['epoch']}"]
    for k in (*LOSS_METRICS, *EVAL_METRICS):
        if k in m and m[k] is not None and not (isinstance(m[k], float) and math.isnan(m[k])):
            items.append(f"{k} {m[k]:.4g}")
    if m.get("lr") is not None:
        items.append(f"lr {m['lr']:.3g}")
    items.append(f"{m['images_per_sec']:.0f} img/s")
    return " | ".join(items)


def train(cfg: Config, reporter: Reporter | None = None, checkpoint_dir: str | None = None, resume: bool = True,
          log: Callable[[str], None] = print) -> TrainResult:
    """Train and evaluate ``cfg``; resume from ``checkpoint_dir`` when it holds a checkpoint and ``resume``."""
    trainer = Trainer(cfg, checkpoint_dir=checkpoint_dir, reporter=reporter, log=log)
    if resume:
        trainer.resume()
    return trainer.fit()
