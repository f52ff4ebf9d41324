"""Training checkpoints: everything needed to resume bit-for-bit at an epoch boundary."""
from __future__ import annotations

import os
import random
import zipfile
from pathlib import Path

import numpy as np
import torch

from core.config import ConfigError

CHECKPOINT_NAME = "last.pt"


def checkpoint_path(directory: str | os.PathLike) -> Path:
    return Path(directory) / CHECKPOINT_NAME


def save_checkpoint(directory: str | os.PathLike, state: dict) -> Path:
    """Write atomically (temp file + rename) so a kill mid-write never leaves a truncated checkpoint."""
    path = checkpoint_path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = dict(state, rng={"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                             "python": random.getstate()})
    tmp = path.with_suffix(".tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:  # a stop mid-write (Ctrl-C, SIGTERM) leaves the last whole checkpoint and nothing else
        tmp.unlink(missing_ok=True)
        raise
    return path


def check_checkpoint(directory: str | os.PathLike, fix: str = "delete it to start over, or pass --no-resume") -> None:
    """Refuse, in one line naming the file and ``fix``, a checkpoint that cannot be read: a folder in its place, or a
    file that is not a whole ``torch.save`` archive (zero bytes, truncated, other bytes). ``torch.save`` writes a
    zip archive, whose entries' checksums ``zipfile`` verifies without unpickling anything."""
    path = checkpoint_path(directory)
    if path.is_dir():
        raise ConfigError(f"checkpoint {path} is a folder, expected the file training writes; {fix}")
    if not path.exists():
        return
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        why = f"its entry {bad} fails its checksum" if bad else None
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        why = "zero bytes" if path.stat().st_size == 0 else f"not a whole checkpoint archive: {exc}"
    if why:
        raise ConfigError(f"checkpoint {path} is damaged ({why}); {fix}")


def load_checkpoint(directory: str | os.PathLike) -> dict | None:
    check_checkpoint(directory)
    path = checkpoint_path(directory)
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    rng = state.get("rng")
    if rng:
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
    return state
