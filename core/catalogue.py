"""The dataset catalogue: one entry per ``data.dataset`` name, the one place that says what a dataset is.

Each entry says whether the dataset is cross-modal (RGB + IR), which evaluation protocol scores it, which parser
reads its on-disk layout (and the layout, as the one line an error shows), which generator writes that layout first
for the generated datasets, and which config keys it takes its options from (RegDB's split and direction, SYSU-MM01's
training ids and search mode / shot, ...). The config schema takes its allowed names from here, and the config
validation, ``core.effective``, ``core.factory``, ``core.inference`` and ``core.data.datasets`` read the entries
instead of testing dataset names themselves.

No heavy imports (no torch, numpy or cv2): ``core.config`` imports this module.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from core.names import REGDB_DIRECTIONS

# --- evaluation protocols (core.inference) ---------------------------------------------------------------------
REID = "reid"  # Market-1501 / DukeMTMC-reID: rank the gallery, dropping same identity + same camera
SYSU = "sysu"  # SYSU-MM01: IR queries against sampled RGB galleries, all/indoor x single/multi-shot, eval.trials draws
REGDB = "regdb"  # RegDB: one modality against the other, both directions (REGDB_DIRECTIONS) on every evaluation
PROTOCOLS = (REID, SYSU, REGDB)

# --- SYSU-MM01 cameras (read by its parser and written by its generator) -----------------------------------------
SYSU_RGB_CAMS = (1, 2, 4, 5)
SYSU_IR_CAMS = (3, 6)

# --- on-disk layouts, one line each (errors are printed as one line by the CLIs) ---------------------------------
MARKET_LAYOUT = ("<root>/market1501/ (or Market-1501-v15.09.15/, or <root> itself) holding bounding_box_train/, "
                 "query/ and bounding_box_test/ with files like 0002_c1s1_000451_03.jpg")
DUKE_LAYOUT = ("<root>/dukemtmc-reid/DukeMTMC-reID/ (or <root>/DukeMTMC-reID/, or <root> itself) holding "
               "bounding_box_train/, query/ and bounding_box_test/ with files like 0001_c2_f0046182.jpg")
SYSU_LAYOUT = ("<root>/ (or <root>/SYSU-MM01/) holding cam1/ .. cam6/ (cam1,2,4,5 = RGB, cam3,6 = IR) with one "
               "folder per id named {pid:04d} (e.g. cam1/0001/0001.jpg), and exp/train_id.txt, exp/val_id.txt, "
               "exp/test_id.txt (one comma-separated line of ids each)")
REGDB_LAYOUT = ("<root>/idx/{train,test}_{visible,thermal}_<trial>.txt (lines 'relative/path.bmp label', trial "
                "1..10) and the Visible/... and Thermal/... images they list, relative to <root>")

# --- config keys a dataset reads beyond those every training reads, and who reads them ---------------------------
# (key, what reads it: the phrase core.effective puts after "with data.dataset=NAME")
PROTOCOL_OPTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    REID: (),
    SYSU: tuple((k, "the SYSU-MM01 protocol only") for k in (
        "eval.sysu_mode", "eval.sysu_shot", "eval.trials", "eval.trial_seed", "eval.sysu_cmc",
        "eval.sysu_all_settings")),
    REGDB: (("eval.regdb_direction", "RegDB only"),),
}
PARSER_OPTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "market1501": (), "dukemtmc": (),
    "sysu_mm01": (("data.sysu_train_ids", "SYSU-MM01 layouts only"),),
    "regdb": (("data.regdb_trial", "RegDB only"),),
}
GENERATOR_OPTIONS: tuple[tuple[str, str], ...] = (("data.synthetic_ids", "generated data only"),
                                                  ("data.synthetic_seed", "generated data only"))


def _sysu_ids(cfg: Any) -> dict:
    # SYSU layouts validate on exp/val_id.txt, so the training keeps to train_id.txt (core.effective: the
    # data.sysu_train_ids choice is then not read)
    if cfg.eval.split == "val":
        return {"train_ids": "train", "eval_ids": "val"}
    return {"train_ids": cfg.data.sysu_train_ids}


def _sysu_generated(cfg: Any) -> dict:
    # 30% test and 10% validation identities, the rest for training (40 ids -> 24/4/12)
    n = cfg.data.synthetic_ids
    return {"num_ids": n, "num_test_ids": max(2, round(n * 0.3)), "num_val_ids": max(1, round(n * 0.1)),
            "seed": cfg.data.synthetic_seed}


def _market_generated(cfg: Any) -> dict:
    n = cfg.data.synthetic_ids
    test_ids = max(4, int(n * 0.4))
    return {"num_train_ids": n - test_ids, "num_test_ids": test_ids, "seed": cfg.data.synthetic_seed}


# config -> keyword options of a parser (core.data.datasets.PARSERS) and of a generator (core.data.synthetic)
_PARSER_ARGS: dict[str, Callable[[Any], dict]] = {
    "market1501": lambda cfg: {}, "dukemtmc": lambda cfg: {},
    "sysu_mm01": _sysu_ids,
    "regdb": lambda cfg: {"trial": cfg.data.regdb_trial},
}
_GENERATOR_ARGS: dict[str, Callable[[Any], dict]] = {"sysu": _sysu_generated, "market": _market_generated}


@dataclass(frozen=True)
class Dataset:
    """One ``data.dataset`` value."""

    name: str  # the data.dataset value
    title: str  # as papers name it
    cross_modal: bool  # RGB + IR images: cross-modal samplers, per-modality BN, the bi-directional losses
    protocol: str  # the evaluation protocol (PROTOCOLS)
    parser: str  # the parser of the on-disk layout (core.data.datasets.PARSERS)
    layout: str  # that layout, one line
    generator: Optional[str] = None  # core.data.synthetic.GENERATORS kind that writes the layout; None: on disk
    own_val_split: bool = False  # eval.split=val uses the layout's own validation ids, not a seeded hold-out

    @property
    def on_disk(self) -> bool:
        """Read from ``data.root`` (which must then be given), not generated into the cache."""
        return self.generator is None

    @property
    def options(self) -> dict[str, str]:
        """The config keys this dataset reads beyond the common ones -> what reads them (protocol, parser and
        generator options)."""
        own = PROTOCOL_OPTIONS[self.protocol] + PARSER_OPTIONS[self.parser]
        return dict(own + (GENERATOR_OPTIONS if self.generator else ()))

    def loader_options(self, cfg: Any) -> dict:
        """The keyword options of ``core.data.build_splits`` for ``cfg`` (parser's, then generator's)."""
        out = dict(_PARSER_ARGS[self.parser](cfg))
        if self.generator:
            out.update(_GENERATOR_ARGS[self.generator](cfg))
        return out


CATALOGUE: dict[str, Dataset] = {d.name: d for d in (
    Dataset("synthetic_sysu", "generated RGB-IR", cross_modal=True, protocol=SYSU, parser="sysu_mm01",
            layout=SYSU_LAYOUT, generator="sysu", own_val_split=True),
    Dataset("synthetic_market", "generated RGB", cross_modal=False, protocol=REID, parser="market1501",
            layout=MARKET_LAYOUT, generator="market"),
    Dataset("sysu_mm01", "SYSU-MM01", cross_modal=True, protocol=SYSU, parser="sysu_mm01", layout=SYSU_LAYOUT,
            own_val_split=True),
    Dataset("regdb", "RegDB", cross_modal=True, protocol=REGDB, parser="regdb", layout=REGDB_LAYOUT),
    Dataset("market1501", "Market-1501", cross_modal=False, protocol=REID, parser="market1501",
            layout=MARKET_LAYOUT),
    Dataset("dukemtmc", "DukeMTMC-reID", cross_modal=False, protocol=REID, parser="dukemtmc", layout=DUKE_LAYOUT),
)}
DATASET_NAMES = tuple(CATALOGUE)  # the allowed values of data.dataset (core.config)
#: every config key that some dataset reads and another does not
DATASET_OPTION_KEYS = tuple(dict.fromkeys(k for d in CATALOGUE.values() for k in d.options))

__all__ = ["CATALOGUE", "DATASET_NAMES", "DATASET_OPTION_KEYS", "Dataset", "PROTOCOLS", "REGDB", "REGDB_DIRECTIONS",
           "REID", "SYSU", "dataset"]


def dataset(name_or_cfg: Any) -> Dataset:
    """The entry of a ``data.dataset`` name, or of a config's ``data.dataset``."""
    name = name_or_cfg if isinstance(name_or_cfg, str) else name_or_cfg.data.dataset
    try:
        return CATALOGUE[name]
    except KeyError:
        raise KeyError(f"unknown data.dataset {name!r}; valid names: {', '.join(CATALOGUE)}") from None
