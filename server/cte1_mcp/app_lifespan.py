"""Work to do when the HTTP app stops gracefully, in its lifespan: uvicorn re-raises the signal that
stopped it once ``serve()`` returns, so code after ``serve()`` never runs on SIGTERM or Ctrl-C."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette


def on_shutdown(app: Starlette, stop: Callable[[], Awaitable[None]]) -> None:
    """Run ``stop()`` after the app's own lifespan ends, even if that failed (in the order added:
    the last added, last)."""
    lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def then_stop(app: Any) -> AsyncIterator[Any]:
        try:
            async with lifespan(app) as state:
                yield state
        finally:
            await stop()

    app.router.lifespan_context = then_stop
