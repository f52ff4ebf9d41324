"""Every test writes generated datasets and image caches under one temporary folder, never in ~/.cache."""
import pytest


@pytest.fixture(autouse=True)
def _isolated_data_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EXPAT_DATA_CACHE", str(tmp_path_factory.getbasetemp() / "data_cache"))
