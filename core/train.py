"""``python -m core.train --config PRESET [key=value ...]``: train, evaluate, checkpoint and resume one model."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from core.cli import ArgumentParser, interrupted_status, refuse, short_warnings, stop_like_ctrl_c, stop_signal_name
from core.config import Config, ConfigError, list_presets, load_config, parse_overrides, to_yaml
from core.files import probe_write


def check_machine(cfg: Config) -> None:
    """Settings that are valid in general but impossible on this machine (or files it lacks), refused before any
    work."""
    from core.engine import resolve_device
    from core.factory import check_inputs
    resolve_device(cfg.run.device)
    cpus = os.cpu_count() or 1
    if cfg.run.threads > cpus:
        raise ConfigError(f"run.threads={cfg.run.threads} but this machine has {cpus} CPUs; set run.threads to at "
                          f"most {cpus} (0 = torch's default)")
    check_inputs(cfg)


def check_output_dir(out: Path, need_checkpoint: bool, no_resume: bool) -> None:
    """``run.output_dir`` can be written (checked by writing, before data and model are built); ``--eval-only``
    needs a checkpoint there."""
    from core.checkpoint import check_checkpoint, checkpoint_path
    if not no_resume:
        check_checkpoint(out / "checkpoint")  # a damaged one is refused before data and model are built
    if need_checkpoint:
        if no_resume:
            raise ConfigError("--eval-only evaluates the checkpoint in run.output_dir and --no-resume ignores it; "
                              "pass one of them")
        if not checkpoint_path(out / "checkpoint").is_file():
            raise ConfigError(f"--eval-only: no checkpoint in {out / 'checkpoint'}; train first or set "
                              f"run.output_dir to a finished run's folder")
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe_write(out)
    except OSError as exc:
        raise ConfigError(f"run.output_dir {out} cannot be written ({exc.strerror}); set run.output_dir to a "
                          f"writable folder") from None


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m core.train", description=__doc__)
    p.add_argument("--config", default="quick", help=f"preset name ({', '.join(list_presets())}) or a YAML path")
    p.add_argument("--no-resume", action="store_true", help="start over even if the output folder has a checkpoint")
    p.add_argument("--eval-only", action="store_true", help="evaluate the checkpoint in run.output_dir and exit")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. loss.type=triplet loss.margin=0.5")
    args = p.parse_intermixed_args(argv)  # a --flag may stand among the key=value overrides
    with stop_like_ctrl_c():  # SIGTERM (a scheduler's stop) ends the run as Ctrl-C does
        return run(args)


def run(args) -> int:
    short_warnings()
    try:
        cfg = load_config(args.config, args.overrides)
        check_machine(cfg)
        from core.effective import check_read, resolve
        check_read(cfg, parse_overrides(args.overrides))  # an override this training never reads changes nothing
        from core.factory import with_pretrained_sha256
        # config.yaml and the checkpoint hold the neck and loss weights that trained, and the ImageNet file's hash
        cfg = with_pretrained_sha256(resolve(cfg))
        check_output_dir(Path(cfg.run.output_dir), need_checkpoint=args.eval_only, no_resume=args.no_resume)
    except ConfigError as exc:
        return refuse(exc, "config error")

    from core.data import DatasetError
    from core.engine import NonFiniteLossError, Trainer, format_metrics

    out = Path(cfg.run.output_dir).resolve()
    history_file = out / "history.jsonl"

    def reporter(epoch: int, metrics: dict, checkpoint_dir: str | None) -> None:
        with history_file.open("a") as f:
            f.write(json.dumps(metrics) + "\n")

    try:
        trainer = Trainer(cfg, checkpoint_dir=str(out / "checkpoint"), reporter=reporter)
        resumed = False if args.no_resume else trainer.resume()
        if args.eval_only:
            print(format_metrics({"epoch": trainer.epoch, "images_per_sec": 0.0, **trainer.evaluate()}))
            return 0
        # Written only once the data and model are known to be usable: a refused run keeps a finished one's files.
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(to_yaml(cfg))
        if resumed:  # the checkpoint's history is the record: a stop between a checkpoint and its history line,
            # or after epochs that no checkpoint holds (trained again now), leaves the file one line short or long
            history_file.write_text("".join(json.dumps(metrics) + "\n" for metrics in trainer.history))
        elif history_file.exists():
            history_file.unlink()
        result = trainer.fit()
    except (DatasetError, ConfigError, NonFiniteLossError) as exc:
        return refuse(exc)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM; checkpoints are written whole or not at all
        print(f"interrupted ({stop_signal_name()}); run the same command again to continue from the last checkpoint "
              f"in {out}", file=sys.stderr)
        return interrupted_status()
    (out / "metrics.json").write_text(json.dumps(result.final, indent=2))
    print(f"final: {format_metrics(result.final)}\noutputs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
