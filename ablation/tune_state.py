"""Tune's experiment-state files: a last-known-good copy while a study runs, and repair before ``--resume``.

Tune rewrites these files in place after every trial checkpoint; a driver killed with SIGKILL meanwhile can leave
one empty, and ``Tuner.restore`` then fails (and Tune starts an unrelated new experiment).
"""
from __future__ import annotations

import json
import os
import pickletools
import shutil
from pathlib import Path

from ablation.study import StudyError

# Tune's own state files at the top of the experiment folder (trial statuses, searcher / variant-generator state).
_STATE_PATTERNS = ("experiment_state-*.json", "basic-variant-state-*.json", "searcher-state-*.pkl")
BACKUP_EVERY_S = 2.0


def _state_files(ray_path: str) -> list[Path]:
    return sorted(f for pattern in _STATE_PATTERNS for f in Path(ray_path).glob(pattern))


def _backup_of(state: Path) -> Path:
    return state.with_name(f".{state.name}.good")


def _intact(path: Path) -> bool:
    """Whether a state file reads back whole (Tune writes them in place, so a SIGKILL can leave them empty).

    Tune's state files are JSON or pickles (``basic-variant-state-*.json`` is a pickle despite its name); a pickle
    is checked by walking its opcodes to the final STOP, which builds no object.
    """
    try:
        data = path.read_bytes()
    except OSError:
        return False
    if not data:
        return False
    try:
        json.loads(data)
        return True
    except ValueError:
        pass
    try:
        return any(op.name == "STOP" for op, _, _ in pickletools.genops(data))
    except Exception:  # noqa: BLE001 - a truncated pickle
        return False


def _replace_with_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f"{dst.name}.tmp{os.getpid()}")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)  # atomic: a reader sees the old or the new file, never half of one


def backup_experiment_state(ray_path: str) -> None:
    """Keep a last-known-good copy of each of Tune's state files next to it."""
    for state in _state_files(ray_path):
        backup = _backup_of(state)
        try:
            if backup.exists() and backup.stat().st_mtime >= state.stat().st_mtime:
                continue
        except OSError:
            continue
        if _intact(state):
            _replace_with_copy(state, backup)


def repair_experiment_state(ray_path: str) -> list[str]:
    """Before ``Tuner.restore``: put back the last good copy of every state file a killed driver left broken.

    Tune rewrites its experiment state in place after every trial checkpoint; a driver SIGKILLed meanwhile leaves
    an empty file, and restoring from it fails (Tune then starts an unrelated new experiment). Returns the names of
    the files repaired; raises StudyError when a broken file has no good copy.
    """
    repaired = []
    for state in _state_files(ray_path):
        if _intact(state):
            continue
        backup = _backup_of(state)
        if not _intact(backup):
            raise StudyError(f"Tune's state file {state} is damaged (the study driver was killed while writing it) "
                             f"and has no intact copy; start the study again without --resume")
        _replace_with_copy(backup, state)
        repaired.append(state.name)
    return repaired
