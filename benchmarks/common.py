"""Shared pieces of the benchmark suite: the figure record and a robust timer.

Each benchmark module exposes ``NAME`` (str) and ``run(quick: bool) -> list[Figure]``; ``benchmarks.run`` collects
them into a table and ``benchmarks/RESULTS.md``. A figure always sits beside its reference, measured in the same
process on the same inputs, because these machines are noisy and an absolute time alone means little.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Figure:
    name: str  # what was measured, e.g. "evaluate_rank (Market-sized)"
    value: float  # the measured figure
    unit: str  # "s", "img/s", "MiB", ...
    reference_name: str = ""  # what it is compared with, e.g. "np.argsort(distmat, axis=1)"
    reference_value: float | None = None
    target: str = ""  # the requirement, e.g. "ratio <= 1.0"
    notes: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """value / reference (for times lower is better; for throughputs higher is better)."""
        if self.reference_value in (None, 0):
            return None
        return self.value / self.reference_value


def best_time(fn: Callable[[], object], repeat: int = 3, warmup: int = 0) -> float:
    """Best wall time of ``repeat`` calls after ``warmup`` calls: the least noisy estimate on a shared machine."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best
