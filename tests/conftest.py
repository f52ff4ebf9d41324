"""Every test writes generated datasets and image caches under one temporary folder, never in ~/.cache."""
import os
from collections import Counter

import pytest


@pytest.fixture(autouse=True)
def _isolated_data_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EXPAT_DATA_CACHE", str(tmp_path_factory.getbasetemp() / "data_cache"))


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread_per_worker():
    """Under ``-n 2`` two test processes share the two cores: torch's default pool (one thread per core) in each
    would put four busy threads on two cores, and torch's threads spin while they wait."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch
        torch.set_num_threads(1)


@pytest.fixture
def count_reads(monkeypatch):
    """``calls = count_reads(module)``: from then on, ``calls[path]`` counts the images ``module`` decodes (its
    ``read_image``, wrapped for the test)."""
    def install(module) -> Counter:
        calls = Counter()
        real = module.read_image

        def counting(path):
            calls[path] += 1
            return real(path)

        monkeypatch.setattr(module, "read_image", counting)
        return calls
    return install


# The longest modules of a full run (make test, measured 2026-12-03), longest first; the others follow by their number
# of slow tests.
LONGEST_FIRST = ("test_faults", "test_scaleout", "test_security", "test_benchmarks")


def pytest_collection_modifyitems(config, items):
    """Long modules first: run in parallel (``-n 2 --dist loadscope``, one module at a time per worker, so a module's
    shared study runs once), the long modules start early and the quick ones fill the gaps, instead of a long one
    left running alone at the end."""
    slow = Counter(item.module.__name__ for item in items if item.get_closest_marker("slow"))
    order = {id(item): i for i, item in enumerate(items)}

    def rank(item):
        name = item.module.__name__
        return (LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST), -slow[name], order[id(item)])

    items.sort(key=rank)
