"""A new SQLite tracking store is a copy of an empty store MLflow built (``tracking.store.seed_new_sqlite_store``):
the same schema, schema version and workspace as a store MLflow builds itself, its Default experiment made when
it is first opened, no migration run for the second store, and MLflow building the schema itself when the cache
folder cannot be used. An existing store is never replaced."""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import mlflow.store.db.utils as db_utils
from mlflow.tracking import MlflowClient

from tracking.store import open_tracking_store


def schema(path: Path) -> dict:
    """Tables with their columns, indexes with their columns, the schema version and the workspaces: what MLflow
    reads. (The order of a table's constraints in its CREATE statement differs between two builds by MLflow itself.)"""
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        indexes = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")]
        return {
            "tables": {t: sorted(db.execute(f'PRAGMA table_info("{t}")').fetchall()) for t in tables},
            "indexes": {i: db.execute(f'PRAGMA index_info("{i}")').fetchall() for i in indexes},
            "version": db.execute("SELECT * FROM alembic_version").fetchall(),
            "workspaces": db.execute("SELECT * FROM workspaces").fetchall(),
        }


def new_store(folder: Path) -> tuple[str, Path]:
    folder.mkdir()
    return f"sqlite:///{folder / 'mlflow.db'}", folder / "mlflow.db"


def test_a_seeded_store_is_the_store_mlflow_builds(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPAT_DATA_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # MLflow puts the Default experiment's artifacts under ./mlruns
    built_uri, built = new_store(tmp_path / "built")
    MlflowClient(built_uri).search_experiments()  # MLflow's own build, no seeding
    first_uri, _ = new_store(tmp_path / "first")
    open_tracking_store(first_uri)  # builds the empty template, then copies it
    assert list((tmp_path / "cache" / "mlflow_schema").glob("*.db")), "no template kept in the cache folder"

    def no_migrations(engine):
        raise AssertionError("MLflow ran its migrations for a store that should be a copy")
    monkeypatch.setattr(db_utils, "_initialize_tables", no_migrations)
    opened = time.time() * 1000
    seeded_uri, seeded = new_store(tmp_path / "seeded")
    client = open_tracking_store(seeded_uri)

    assert schema(seeded) == schema(built)
    default, = client.search_experiments()
    built_default, = MlflowClient(built_uri).search_experiments()
    assert (default.experiment_id, default.name) == ("0", "Default")
    assert default.creation_time >= opened - 1, "the Default experiment came with the copy, not made at first use"
    assert default.artifact_location == built_default.artifact_location
    # the store works as a new one: the first experiment is 1, runs and metrics are kept
    exp = client.create_experiment("study")
    assert exp == MlflowClient(built_uri).create_experiment("study") == "1"
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "rank1", 12.5, step=1)
    client.set_terminated(run.info.run_id)
    assert client.get_run(run.info.run_id).data.metrics == {"rank1": 12.5}


def test_an_existing_store_is_opened_as_it_is(tmp_path):
    uri, _ = new_store(tmp_path / "store")  # seeded from this worker's template (tests/conftest.py's cache folder)
    client = open_tracking_store(uri)
    exp = client.create_experiment("kept")
    again = open_tracking_store(uri)
    assert [e.name for e in again.search_experiments()] == ["kept", "Default"]
    assert again.get_experiment(exp).name == "kept"


def test_an_unusable_cache_folder_leaves_the_build_to_mlflow(tmp_path, monkeypatch):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("EXPAT_DATA_CACHE", str(blocker))
    uri, path = new_store(tmp_path / "store")
    client = open_tracking_store(uri)
    assert client.create_experiment("study") == "1"
    assert schema(path)["version"], "MLflow did not build the schema"
    assert blocker.read_text() == "a file where the cache folder would be"
