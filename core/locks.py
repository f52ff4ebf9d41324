"""An exclusive advisory lock between processes (``fcntl.flock``), for work that many trials may start at once:
building a generated dataset or an image cache, creating a tracking store's schema."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def exclusive_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` for the block; the OS releases it if the process dies.

    ``path`` is an existing folder (locked as it is, nothing is written into it) or a lock file (created if
    missing). Where locks are unavailable (no ``fcntl``, or a file system without locks, such as some network
    mounts) the block runs unlocked: callers keep their results valid by an atomic rename or an idempotent step.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path = Path(path)
    fd = os.open(path, os.O_RDONLY) if path.is_dir() else os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            yield
            return
        yield
    finally:
        os.close(fd)  # releases the lock
