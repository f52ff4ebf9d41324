"""``python -m core.train --config PRESET [key=value ...]``: train, evaluate, checkpoint and resume one model."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.config import ConfigError, list_presets, load_config, to_yaml


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.train", description=__doc__)
    p.add_argument("--config", default="quick", help=f"preset name ({', '.join(list_presets())}) or a YAML path")
    p.add_argument("--no-resume", action="store_true", help="start over even if the output folder has a checkpoint")
    p.add_argument("--eval-only", action="store_true", help="evaluate the checkpoint in run.output_dir and exit")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. loss.type=triplet loss.margin=0.5")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2

    from core.data import DatasetError
    from core.engine import NonFiniteLossError, Trainer, format_metrics

    out = Path(cfg.run.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(to_yaml(cfg))
    history_file = out / "history.jsonl"

    def reporter(epoch: int, metrics: dict, checkpoint_dir: str | None) -> None:
        with history_file.open("a") as f:
            f.write(json.dumps(metrics) + "\n")

    try:
        trainer = Trainer(cfg, checkpoint_dir=str(out / "checkpoint"), reporter=reporter)
        resumed = False if args.no_resume else trainer.resume()
        if not resumed and history_file.exists():
            history_file.unlink()
        if args.eval_only:
            print(format_metrics({"epoch": trainer.epoch, "images_per_sec": 0.0, **trainer.evaluate()}))
            return 0
        result = trainer.fit()
    except (DatasetError, ConfigError, NonFiniteLossError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    (out / "metrics.json").write_text(json.dumps(result.final, indent=2))
    print(f"final: {format_metrics(result.final)}\noutputs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
