"""Image decoding and the corrupt-file policy.

All pixel reading goes through `read_image`, so a later shared on-disk cache only has to swap this one function.
cv2 returns None (or, for a truncated JPEG, a silently half-grey image) instead of raising, so this module turns
both cases into a `DatasetError` naming the file.
"""

from __future__ import annotations

import warnings
from typing import Iterable

import cv2
import numpy as np

from .records import DatasetError, DatasetSplits, ImageRecord

ON_CORRUPT = ("stop", "skip")


def _check_complete_jpeg(data: np.ndarray, path: str) -> None:
    """A JPEG's last scan (after the last SOS marker FFDA) must reach the end-of-image marker FFD9.

    Entropy-coded data cannot contain FFD9 (0xFF bytes are stuffed), so a missing EOI after the last SOS means the
    file was cut short; libjpeg would only warn and return a partly grey image. Trailing junk after EOI is fine.
    """
    raw = data.tobytes()
    if raw[:2] == b"\xff\xd8":
        last_scan = raw.rfind(b"\xff\xda")
        if last_scan < 0 or raw.find(b"\xff\xd9", last_scan) < 0:
            raise DatasetError(f"truncated JPEG (no end-of-image marker after the last scan): '{path}'")


def read_image(path: str) -> np.ndarray:
    """Read an image as RGB uint8 HxWx3; grayscale and single-channel IR images become 3 equal channels."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DatasetError(f"cannot read image file '{path}': {exc.strerror or exc}") from None
    _check_complete_jpeg(data, path)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if len(data) else None
    if image is None:
        raise DatasetError(f"cannot decode image file '{path}' (empty, corrupt or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def validate_records(records: Iterable[ImageRecord], on_corrupt: str = "stop") -> list[ImageRecord]:
    """Decode every file once; return the records that decode.

    on_corrupt="stop" raises on the first bad file; "skip" drops bad files and warns with their paths, so a
    few damaged files in a large download do not kill a study.
    """
    if on_corrupt not in ON_CORRUPT:
        raise DatasetError(f"data.on_corrupt='{on_corrupt}' is not one of {list(ON_CORRUPT)}.")
    kept, skipped = [], []
    for record in records:
        try:
            read_image(record.path)
        except DatasetError as exc:
            if on_corrupt == "stop":
                raise DatasetError(f"{exc}. Replace or delete the file, or set data.on_corrupt=skip "
                                   f"to skip such files.") from None
            skipped.append(record.path)
            continue
        kept.append(record)
    if skipped:
        shown = "\n  ".join(skipped[:20]) + (f"\n  ... and {len(skipped) - 20} more" if len(skipped) > 20 else "")
        warnings.warn(f"data.on_corrupt=skip: skipped {len(skipped)} unreadable image(s):\n  {shown}")
    return kept


def validate_splits(splits: DatasetSplits, on_corrupt: str = "stop") -> DatasetSplits:
    """`validate_records` on train, query and gallery; train pids are relabelled again if an id vanished."""
    return splits.with_records(train=validate_records(splits.train, on_corrupt),
                               query=validate_records(splits.query, on_corrupt),
                               gallery=validate_records(splits.gallery, on_corrupt))
