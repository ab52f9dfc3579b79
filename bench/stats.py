"""Summaries of repeated measurements: median with min-max, percentiles, and their formatting."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from cte1_mcp.units import MiB

#: Throughput is reported in MB/s (10^6 bytes per second), as curl and most tools do.
MB = 1_000_000

#: Typography for the report (escaped: the linter flags look-alike characters in source).
DASH = "\u2013"
#: "Not measured" in a table cell.
MDASH = "\u2014"
TIMES = "\u00d7"
MINUS = "\u2212"


@dataclass(frozen=True, slots=True)
class Summary:
    """Median, min and max of at least one sample."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        if not samples:
            raise ValueError("no samples to summarise")
        return cls(statistics.median(samples), min(samples), max(samples), len(samples))

    def fmt(self, digits: int = 1, unit: str = "") -> str:
        """``median (min-max)`` with an en dash, e.g. ``812.3 (790.1-830.0) MB/s``."""
        suffix = f" {unit}" if unit else ""
        return f"{self.median:.{digits}f} ({self.low:.{digits}f}{DASH}{self.high:.{digits}f}){suffix}"


def percentile(samples: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) by linear interpolation between closest ranks (numpy's default)."""
    if not samples:
        raise ValueError("no samples")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within 0..100, not {p}")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * p / 100
    below = math.floor(rank)
    above = math.ceil(rank)
    if below == above:
        return ordered[below]
    return ordered[below] + (ordered[above] - ordered[below]) * (rank - below)


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Pairwise ratios of interleaved samples (repetition i of A over repetition i of B)."""
    if len(numerators) != len(denominators):
        raise ValueError("ratios need as many numerators as denominators")
    return [a / b for a, b in zip(numerators, denominators, strict=True)]


def mb_per_s(size_bytes: int, seconds: float) -> float:
    return size_bytes / MB / seconds


def fmt_bytes(n: float) -> str:
    """Binary units, one decimal: ``48.2 MiB``."""
    for unit, scale in (("GiB", 1024**3), ("MiB", MiB), ("KiB", 1024)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"
