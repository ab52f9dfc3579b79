"""Byte units, defined once for every module (settings, limits, the simulator, the benchmark)."""

from __future__ import annotations

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
