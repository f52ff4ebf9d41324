"""The dataset catalogue (core.catalogue) is the one list of datasets: the config's allowed names, the builders of
core.data, the generators, the options a dataset reads and the RegDB direction's spelling all agree with it; and
core imports no module cycle (core.data.datasets <-> core.data.synthetic was one)."""
import ast
import inspect
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from core.catalogue import CATALOGUE, DATASET_NAMES, DATASET_OPTION_KEYS, PROTOCOLS, dataset
from core.config import DataConfig, EvalConfig, _field_types, load_config, schema_keys
from core.names import REGDB_DIRECTION_METRICS, REGDB_DIRECTIONS

ROOT = Path(__file__).resolve().parent.parent


def test_config_allows_exactly_the_catalogued_datasets():
    assert typing.get_args(_field_types(DataConfig)["dataset"]) == DATASET_NAMES == tuple(CATALOGUE)
    for name, entry in CATALOGUE.items():
        assert entry.name == name and entry.protocol in PROTOCOLS
        assert load_config(None, {"data.dataset": name, "data.sampler": "pk"}).data.dataset == name
        assert dataset(name) is entry


def test_every_catalogued_dataset_has_a_builder_parser_and_generator():
    from core.data import DATASETS
    from core.data.datasets import PARSERS, _accepted_options
    from core.data.synthetic import GENERATORS
    assert list(DATASETS) == list(CATALOGUE)
    generated = {e.generator for e in CATALOGUE.values() if e.generator}
    assert generated == set(GENERATORS)  # every generator feeds a dataset, every generated dataset has one
    for name, entry in CATALOGUE.items():
        assert entry.parser in PARSERS
        builder = DATASETS[name]
        if entry.generator:
            assert name.startswith("synthetic_") and not entry.on_disk
            assert builder.parser is PARSERS[entry.parser] and builder.generator_kind == entry.generator
        else:
            assert builder is PARSERS[entry.parser] and entry.on_disk
        # what the factory passes from the config is what the builder accepts, for both eval splits
        for split in ("test", "val"):
            cfg = load_config(None, {"data.dataset": name, "data.sampler": "pk", "eval.split": split})
            assert set(entry.loader_options(cfg)) <= _accepted_options(builder), (name, split)


def test_dataset_options_are_schema_keys_read_only_where_the_catalogue_says():
    from core.effective import unread_keys
    assert set(DATASET_OPTION_KEYS) <= set(schema_keys())
    for name, entry in CATALOGUE.items():
        unread = unread_keys(load_config(None, {"data.dataset": name, "data.sampler": "pk"}))
        for key in DATASET_OPTION_KEYS:
            assert (key in unread) == (key not in entry.options), (name, key)
    assert CATALOGUE["regdb"].options.keys() == {"data.regdb_trial", "eval.regdb_direction"}
    assert {"data.sysu_train_ids", "eval.sysu_mode", "eval.sysu_shot"} <= CATALOGUE["sysu_mm01"].options.keys()


def test_regdb_direction_has_one_spelling():
    import numpy as np
    import torch

    from core.data import parse_regdb
    from core.eval.regdb import DIRECTIONS, evaluate_regdb_both
    assert typing.get_args(_field_types(EvalConfig)["regdb_direction"]) == REGDB_DIRECTIONS == DIRECTIONS
    assert inspect.signature(parse_regdb).parameters["mode"].default in REGDB_DIRECTIONS
    assert {m.rsplit("_", 1)[1] for m in REGDB_DIRECTION_METRICS} == set(REGDB_DIRECTIONS)
    both = evaluate_regdb_both(torch.eye(2), torch.eye(2), np.array([0, 1]), np.array([0, 1]))
    assert tuple(both) == REGDB_DIRECTIONS
    assert load_config("regdb_paper").eval.regdb_direction in REGDB_DIRECTIONS


def test_paper_tables_name_datasets_as_papers_do():
    from reports.paper import dataset_name
    assert dataset_name(["sysu_mm01"]) == "SYSU-MM01" and dataset_name(["dukemtmc"]) == "DukeMTMC-reID"
    assert dataset_name(["market1501", "regdb", "market1501"]) == "Market-1501 + RegDB"
    assert dataset_name(["my_own"]) == "my_own"


def _core_imports() -> dict[str, set[str]]:
    """core module -> the core modules it imports (at any depth of its code, lazily or not)."""
    graph: dict[str, set[str]] = {}
    for path in (ROOT / "core").rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        module, package = ".".join(parts), ".".join(rel.parts[:-1])
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
                deps.add(base)
                deps |= {f"{base}.{a.name}" for a in node.names}
        graph[module] = deps
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


def test_core_has_no_module_import_cycle():
    graph = _core_imports()
    # a package's __init__ re-exporting its submodules is not a cycle with them: leave out submodule -> own package
    for m in graph:
        graph[m] = {d for d in graph[m] if not m.startswith(d + ".")}
    assert "core.data.datasets" not in graph["core.data.synthetic"]
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                pytest.fail(f"import cycle: {' -> '.join(path[path.index(d):] + [d])}")
            if d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


@pytest.mark.parametrize("module", ["core.catalogue", "core.config", "core.data.datasets", "core.data.synthetic"])
def test_each_module_imports_alone(module):
    proc = subprocess.run([sys.executable, "-c", f"import sys, {module}; "
                           "print(','.join(m for m in ('torch', 'cv2') if m in sys.modules))"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    if module in ("core.catalogue", "core.config"):  # read by the config validation: no heavy imports
        assert proc.stdout.strip() == ""


def test_core_imports_neither_ray_nor_mlflow():
    """The trainer stands alone: importing every module of core (in one fresh interpreter) loads no Ray and no
    MLflow module."""
    code = ("import importlib, pkgutil, sys, core\n"
            "names = [m.name for m in pkgutil.walk_packages(core.__path__, 'core.')]\n"
            "for name in names:\n    importlib.import_module(name)\n"
            "print(len(names), '|', ','.join(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'mlflow'})))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    count, heavy = (part.strip() for part in proc.stdout.split("|"))
    assert int(count) > 20 and heavy == "", proc.stdout  # every module imported; none pulled in ray or mlflow
