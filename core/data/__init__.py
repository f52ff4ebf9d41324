"""Data: dataset parsers (real layouts), synthetic datasets, transforms, samplers and loaders.

See docs/ARCHITECTURE.md for the record and batch conventions. No Ray/MLflow here.
"""

from .cache import CACHE_MODES, ImageCache, build_image_cache, cache_base, cache_root, validate_splits_cached
from .datasets import (DATASETS, build_splits, parse_dukemtmc, parse_market1501, parse_regdb, parse_reid_filename,
                       parse_sysu_mm01, read_sysu_ids)
from .holdout import hold_out_identities
from .images import ON_CORRUPT, read_image, validate_records, validate_splits
from .loaders import (SAMPLERS, ReidDataset, SeededBatchSampler, build_test_loader, build_train_loader,
                      build_train_sampler, set_loader_epoch)
from .records import DatasetError, DatasetSplits, ImageRecord, relabel_pids
from .samplers import (ROLES, CrossModalIdentitySampler, EpochBatchSampler, RandomBatchSampler,
                       RandomIdentitySampler, TripletSampler)
from .synthetic import ensure_generated, generate_market, generate_regdb, generate_sysu
from .transforms import IMAGENET_MEAN, IMAGENET_STD, ReidTransform, build_transforms

__all__ = [
    "CACHE_MODES", "ImageCache", "build_image_cache", "cache_base", "cache_root", "validate_splits_cached",
    "DATASETS", "build_splits", "parse_dukemtmc", "parse_market1501", "parse_regdb", "parse_reid_filename",
    "parse_sysu_mm01", "read_sysu_ids",
    "hold_out_identities",
    "ON_CORRUPT", "read_image", "validate_records", "validate_splits",
    "SAMPLERS", "ReidDataset", "SeededBatchSampler", "build_test_loader", "build_train_loader",
    "build_train_sampler", "set_loader_epoch",
    "DatasetError", "DatasetSplits", "ImageRecord", "relabel_pids",
    "ROLES", "CrossModalIdentitySampler", "EpochBatchSampler", "RandomBatchSampler", "RandomIdentitySampler",
    "TripletSampler",
    "ensure_generated", "generate_market", "generate_regdb", "generate_sysu",
    "IMAGENET_MEAN", "IMAGENET_STD", "ReidTransform", "build_transforms",
]
