"""The local store's fixtures, for ``pytest_plugins = ["tests.helpers.store_fixtures"]``: a store
on a fresh directory with a hand-moved clock, and ``make_store`` for more on the same ones."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cte1_mcp.repository.local import LocalRepository
from tests.helpers.repository import Clock, new_store


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_store(tmp_path: Path, clock: Clock) -> Callable[..., LocalRepository]:
    """``make_store(max_bytes=…)``: another store on the same directory and clock, other limits."""
    return lambda **overrides: new_store(tmp_path / "cache", clock, **overrides)


@pytest.fixture
def store(make_store: Callable[..., LocalRepository]) -> LocalRepository:
    return make_store()
