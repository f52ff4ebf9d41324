"""Scratch tracking stores for tests that write runs by hand.

A new SQLite store is seeded the way a study's store is (``tracking.store.seed_new_sqlite_store``: a copy of an
empty store this MLflow version built, kept once per test worker), not built by MLflow's migrations (about 2 s of
CPU each). ``tests/test_store_seed.py`` checks that a seeded store is the store MLflow builds.
"""
from pathlib import Path

from tracking.store import seed_new_sqlite_store


def new_store_uri(db: Path) -> str:
    """The URI of a new SQLite tracking store at ``db`` (its folder made if needed)."""
    db.parent.mkdir(parents=True, exist_ok=True)
    seed_new_sqlite_store(db)
    return f"sqlite:///{db}"
