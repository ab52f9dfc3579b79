"""Interleaved repetitions: A B C, A B C, ... so drift (page cache, CPU clocks, other load) hits all alike."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

T = TypeVar("T")

MIN_REPETITIONS = 3


async def interleaved(
    repetitions: int,
    variants: Mapping[str, Callable[[int], Awaitable[T]]],
    on_sample: Callable[[str, int, T], None] | None = None,
) -> dict[str, list[T]]:
    """Run every variant once per repetition, in the given order, repetition after repetition."""
    if repetitions < MIN_REPETITIONS:
        raise ValueError(f"at least {MIN_REPETITIONS} repetitions are needed, not {repetitions}")
    samples: dict[str, list[T]] = {name: [] for name in variants}
    for rep in range(repetitions):
        for name, run in variants.items():
            sample = await run(rep)
            samples[name].append(sample)
            if on_sample is not None:
                on_sample(name, rep, sample)
    return samples
