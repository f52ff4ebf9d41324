"""Training checkpoints: everything needed to resume bit-for-bit at an epoch boundary."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

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


def load_checkpoint(directory: str | os.PathLike) -> dict | None:
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
