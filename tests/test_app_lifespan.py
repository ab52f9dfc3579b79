"""``on_shutdown``: work run when the HTTP app stops, after the app's own lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.testclient import TestClient

from cte1_mcp.app_lifespan import on_shutdown


def test_stops_run_after_the_apps_own_lifespan_in_the_order_added() -> None:
    """Regression (review): the stops ran inside the app's lifespan, the last added first."""
    seen: list[str] = []

    @asynccontextmanager
    async def own(app: Any) -> AsyncIterator[None]:
        seen.append("own start")
        yield
        seen.append("own end")

    app = Starlette(lifespan=own)

    async def first() -> None:
        seen.append("first stop")

    async def second() -> None:
        seen.append("second stop")

    on_shutdown(app, first)
    on_shutdown(app, second)
    with TestClient(app):
        seen.append("serving")
    assert seen == ["own start", "serving", "own end", "first stop", "second stop"]
