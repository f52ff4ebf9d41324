"""Parsers for the real on-disk layouts of Market-1501, DukeMTMC-reID, SYSU-MM01 and RegDB, and the builder of each
``data.dataset`` of the catalogue (``core.catalogue``): its layout's parser, after its generator for generated data.

Parsers only list files and parse names/index files; they never decode images (see `images.validate_records`).
Every parser raises `DatasetError` with the expected layout when the root is missing or malformed, because a
wrong `data.root` is by far the most common failure when a study is launched on a new machine.
"""

from __future__ import annotations

import inspect
import os
import re
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Callable

from core.catalogue import (CATALOGUE, DUKE_LAYOUT, MARKET_LAYOUT, REGDB_DIRECTIONS, REGDB_LAYOUT, SYSU_IR_CAMS,
                            SYSU_LAYOUT, SYSU_RGB_CAMS, Dataset)

from .records import DatasetError, DatasetSplits, ImageRecord, relabel_pids
from .synthetic import GENERATORS, ensure_generated

_MARKET_SUBDIRS = ("bounding_box_train", "query", "bounding_box_test")
_REID_NAME = re.compile(r"([-\d]+)_c(\d)")

def _layout_error(dataset: str, root: Path, layout: str, problem: str) -> DatasetError:
    return DatasetError(f"{dataset}: {problem} (data.root = '{root}'). Expected layout: {layout}. "
                        f"Set data.root to the folder that holds the dataset.")


def _not_a_folder(root: Path) -> str:
    """Why ``root`` (not a folder) cannot be a dataset's root, for ``_layout_error``."""
    if root.exists():
        return f"root '{root}' is a file, expected the dataset's folder"
    return f"root folder '{root}' does not exist"


def _find_dataset_dir(dataset: str, root: str | os.PathLike, candidates: list[str], required: tuple[str, ...],
                      layout: str) -> Path:
    """Return the first candidate folder (relative to root) that holds every required entry."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise _layout_error(dataset, root, layout, _not_a_folder(root))
    for rel in candidates:
        folder = root / rel
        if all((folder / name).exists() for name in required):
            return folder
    tried = "; ".join(f"{root / rel} (missing {', '.join(n for n in required if not (root / rel / n).exists())})"
                      for rel in candidates if (root / rel).is_dir())
    problem = f"could not find {', '.join(required)} under '{root}'"
    if tried:
        problem += f"; folders tried: {tried}"
    raise _layout_error(dataset, root, layout, problem)


# ---------------------------------------------------------------------------------------------- Market / Duke


def parse_reid_filename(name: str) -> tuple[int, int] | None:
    """`0002_c1s1_000451_03.jpg` -> (2, 0): pid and 0-based camid (RSB regex `([-\\d]+)_c(\\d)`)."""
    match = _REID_NAME.search(name)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2)) - 1


def _parse_reid_dir(dataset: str, folder: Path, num_cams: int, drop_junk: bool) -> list[ImageRecord]:
    records, unparsed = [], []
    for path in sorted(folder.glob("*.jpg")):
        parsed = parse_reid_filename(path.name)
        if parsed is None:
            unparsed.append(path.name)
            continue
        pid, camid = parsed
        if drop_junk and pid == -1:
            continue
        if not 0 <= camid < num_cams:
            raise DatasetError(f"{dataset}: camera c{camid + 1} in '{path}' is outside c1..c{num_cams}; "
                               f"is data.dataset right for this folder?")
        records.append(ImageRecord(str(path), pid, camid, 0))
    if unparsed:
        warnings.warn(f"{dataset}: skipped {len(unparsed)} file(s) in '{folder}' whose names do not match "
                      f"'<pid>_c<cam>...jpg', e.g. {unparsed[:3]}")
    if not records:
        raise DatasetError(f"{dataset}: no usable images '<pid>_c<cam>...jpg' in '{folder}'. Check data.root.")
    return records


def _parse_reid(dataset: str, name: str, folder: Path, num_cams: int, drop_junk: bool) -> DatasetSplits:
    train, query, gallery = (_parse_reid_dir(dataset, folder / sub, num_cams, drop_junk) for sub in _MARKET_SUBDIRS)
    train, num = relabel_pids(train)
    return DatasetSplits(name, train, query, gallery, num, cross_modal=False, info={"dir": str(folder)})


def parse_market1501(root: str | os.PathLike) -> DatasetSplits:
    """Market-1501: junk (pid -1) dropped everywhere, distractors (pid 0) kept in the gallery, camid 0-based."""
    folder = _find_dataset_dir("Market-1501", root,
                               ["market1501", "Market-1501-v15.09.15", "market1501/Market-1501-v15.09.15", "."],
                               _MARKET_SUBDIRS, MARKET_LAYOUT)
    return _parse_reid("Market-1501", "market1501", folder, num_cams=6, drop_junk=True)


def parse_dukemtmc(root: str | os.PathLike) -> DatasetSplits:
    """DukeMTMC-reID: no filtering (as RSB), c1..c8 -> camid 0..7."""
    folder = _find_dataset_dir("DukeMTMC-reID", root, ["dukemtmc-reid/DukeMTMC-reID", "DukeMTMC-reID", "."],
                               _MARKET_SUBDIRS, DUKE_LAYOUT)
    return _parse_reid("DukeMTMC-reID", "dukemtmc", folder, num_cams=8, drop_junk=False)


# ---------------------------------------------------------------------------------------------- SYSU-MM01

_SYSU_REQUIRED = ("exp/train_id.txt", "exp/val_id.txt", "exp/test_id.txt",
                  *(f"cam{c}" for c in SYSU_RGB_CAMS + SYSU_IR_CAMS))


def read_sysu_ids(path: Path) -> list[int]:
    """Read one comma-separated line of ids (a trailing newline or comma is tolerated)."""
    text = Path(path).read_text().strip()
    try:
        return sorted(int(tok) for tok in re.split(r"[,\s]+", text) if tok)
    except ValueError as exc:
        raise DatasetError(f"SYSU-MM01: '{path}' must hold one comma-separated line of integer ids ({exc}).") from None


def _sysu_images(folder: Path, ids: list[int], cams: tuple[int, ...]) -> list[ImageRecord]:
    records = []
    for pid in ids:
        for cam in cams:
            modality = 1 if cam in SYSU_IR_CAMS else 0
            for path in sorted((folder / f"cam{cam}" / f"{pid:04d}").glob("*.jpg")):
                records.append(ImageRecord(str(path), pid, cam, modality))
    return records


def parse_sysu_mm01(root: str | os.PathLike, train_ids: str = "train", eval_ids: str = "test") -> DatasetSplits:
    """SYSU-MM01.

    train_ids: "train" = the 296 ids of train_id.txt (the authors' code, docs/REPRODUCTION.md §8.2) or "train+val"
    = the usual 395-id protocol. eval_ids: "test" (the protocol) or "val" (the authors' validation during training).
    query = every IR image (cam3, cam6) of the eval ids; gallery = every RGB image (cam1,2,4,5) of the eval ids,
    i.e. the full pool from which the eval module samples each trial's gallery. camid = camera number.
    """
    folder = _find_dataset_dir("SYSU-MM01", root, [".", "SYSU-MM01"], _SYSU_REQUIRED, SYSU_LAYOUT)
    split_ids = {s: read_sysu_ids(folder / "exp" / f"{s}_id.txt") for s in ("train", "val", "test")}
    choices = {"train": split_ids["train"], "train+val": sorted(set(split_ids["train"]) | set(split_ids["val"]))}
    if train_ids not in choices:
        raise DatasetError(f"SYSU-MM01: train_ids='{train_ids}' is not one of {sorted(choices)}.")
    if eval_ids not in ("test", "val"):
        raise DatasetError(f"SYSU-MM01: eval_ids='{eval_ids}' is not one of ['test', 'val'].")
    train_list, eval_list = choices[train_ids], split_ids[eval_ids]
    for source in ["train", "val"] if train_ids == "train+val" else ["train"]:
        shared = sorted(set(split_ids[source]) & set(eval_list)) if source != eval_ids else []
        if shared:  # the split files themselves overlap: a data problem, not a setting
            raise DatasetError(f"SYSU-MM01: exp/{source}_id.txt and exp/{eval_ids}_id.txt in {folder} share the ids "
                               f"{shared[:5]}{' ...' if len(shared) > 5 else ''}; an identity belongs to one split "
                               f"only: restore the split files from the SYSU-MM01 release")
    if set(train_list) & set(eval_list):
        raise DatasetError(f"SYSU-MM01: train_ids='{train_ids}' overlaps eval_ids='{eval_ids}'; "
                           f"use train_ids='train' when validating on 'val'.")
    train = _sysu_images(folder, train_list, SYSU_RGB_CAMS + SYSU_IR_CAMS)
    query = _sysu_images(folder, eval_list, SYSU_IR_CAMS)
    gallery = _sysu_images(folder, eval_list, SYSU_RGB_CAMS)
    for split, records in (("train", train), ("query", query), ("gallery", gallery)):
        if not records:
            raise _layout_error("SYSU-MM01", Path(root), SYSU_LAYOUT,
                                f"no {split} images found in cam*/<pid:04d>/*.jpg for the ids in exp/*_id.txt")
    train, num = relabel_pids(train)
    return DatasetSplits("sysu_mm01", train, query, gallery, num, cross_modal=True,
                         info={"dir": str(folder), "train_ids": train_ids, "eval_ids": eval_ids})


# ---------------------------------------------------------------------------------------------- RegDB


def _read_regdb_index(root: Path, name: str, modality: int) -> list[ImageRecord]:
    path = root / "idx" / name
    if not path.is_file():
        raise _layout_error("RegDB", root, REGDB_LAYOUT, f"index file '{path}' does not exist")
    records = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DatasetError(f"RegDB: {path}:{lineno}: expected 'relative/path label', got {line!r}.")
        records.append(ImageRecord(str(root / parts[0]), int(parts[1]), modality, modality))
    if not records:
        raise DatasetError(f"RegDB: index file '{path}' is empty.")
    return records


def parse_regdb(root: str | os.PathLike, trial: int = 1, mode: str = "t2v") -> DatasetSplits:
    """RegDB trial 1..10. camid = modality (0 visible, 1 thermal).

    mode "t2v" (the authors' only direction: query = test thermal, gallery = test visible) or "v2t" (the
    spelling of ``eval.regdb_direction``; the evaluation scores both directions whichever is the query).
    """
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise _layout_error("RegDB", root_path, REGDB_LAYOUT, _not_a_folder(root_path))
    if not 1 <= int(trial) <= 10:
        raise DatasetError(f"RegDB: trial={trial} must be in 1..10.")
    if mode not in REGDB_DIRECTIONS:
        raise DatasetError(f"RegDB: mode='{mode}' is not one of {list(REGDB_DIRECTIONS)}.")
    split = {(s, m): _read_regdb_index(root_path, f"{s}_{name}_{trial}.txt", m)
             for s in ("train", "test") for m, name in ((0, "visible"), (1, "thermal"))}
    train, num = relabel_pids(split["train", 0] + split["train", 1])
    q, g = (1, 0) if mode == "t2v" else (0, 1)
    return DatasetSplits("regdb", train, split["test", q], split["test", g], num, cross_modal=True,
                         info={"dir": str(root_path), "trial": int(trial), "mode": mode})


# ---------------------------------------------------------------------------------------------- registry


PARSERS: dict[str, Callable[..., DatasetSplits]] = {
    "market1501": parse_market1501,
    "dukemtmc": parse_dukemtmc,
    "sysu_mm01": parse_sysu_mm01,
    "regdb": parse_regdb,
}


def _generated(entry: Dataset, parser: Callable[..., DatasetSplits]) -> Callable[..., DatasetSplits]:
    """Builder of a generated dataset: generate it once under root, then parse it with the real parser.

    Options named in the generator's signature go to the generator, the rest to the parser.
    """
    kind = entry.generator

    def build(root, **options):
        gen_names = set(inspect.signature(GENERATORS[kind]).parameters) - {"root"}
        gen_opts = {k: v for k, v in options.items() if k in gen_names}
        folder = ensure_generated(kind, root, **gen_opts)
        splits = parser(folder, **{k: v for k, v in options.items() if k not in gen_names})
        return replace(splits, name=entry.name)

    build.__doc__ = f"Generated {kind} dataset (core.data.synthetic), parsed by {parser.__name__}."
    build.parser = parser  # type: ignore[attr-defined]
    build.generator_kind = kind  # type: ignore[attr-defined]
    return build


# data.dataset -> builder(root, **options), one per catalogue entry
DATASETS: dict[str, Callable[..., DatasetSplits]] = {
    name: _generated(entry, PARSERS[entry.parser]) if entry.generator else PARSERS[entry.parser]
    for name, entry in CATALOGUE.items()}


def _accepted_options(builder: Callable) -> set[str]:
    names = set(inspect.signature(builder).parameters) - {"root", "options"}
    if hasattr(builder, "parser"):
        names |= set(inspect.signature(builder.parser).parameters) - {"root"}
        names |= set(inspect.signature(GENERATORS[builder.generator_kind]).parameters) - {"root"}
    return names


def build_splits(name: str, root: str | os.PathLike, **options) -> DatasetSplits:
    """Parse dataset `name` under `root`; `options` are the parser's keyword options (e.g. train_ids, trial)."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset '{name}' (data.dataset); valid names: {', '.join(DATASETS)}.")
    builder = DATASETS[name]
    unknown = set(options) - _accepted_options(builder)
    if unknown:
        raise DatasetError(f"dataset '{name}' does not accept option(s) {sorted(unknown)}; "
                           f"accepted: {sorted(_accepted_options(builder))}.")
    return builder(root, **options)
