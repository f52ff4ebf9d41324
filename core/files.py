"""Small file-system checks shared by the training CLI and the study driver."""
from __future__ import annotations

import tempfile
from pathlib import Path


def probe_write(folder: Path) -> None:
    """Really create (and remove) a file in ``folder``: ``os.access`` answers yes to root even on read-only mounts."""
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".expat-write-check-"):
        pass
