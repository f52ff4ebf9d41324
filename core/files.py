"""Small file-system helpers shared by the trainer, the study driver and the tracking store (light imports only)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def cache_base(cache_dir: str | os.PathLike | None = None) -> Path:
    """The machine-wide cache folder (generated datasets, image caches, the empty tracking-store schema):
    ``cache_dir``, else ``$EXPAT_DATA_CACHE``, else ``~/.cache/expat_ablate``; outside the repository and shared
    by all trials."""
    base = cache_dir or os.environ.get("EXPAT_DATA_CACHE") or Path.home() / ".cache" / "expat_ablate"
    return Path(base).expanduser().resolve()


def probe_write(folder: Path) -> None:
    """Really create (and remove) a file in ``folder``: ``os.access`` answers yes to root even on read-only mounts."""
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".expat-write-check-"):
        pass
