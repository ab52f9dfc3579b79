"""Sharing the platform's rate limit and its downloads: who may request, when, and which recording.

``open_coordination`` picks the backend from the settings: Redis when ``CTE1_REDIS_URL`` is set
(many machines), otherwise lock files in the cache directory (every process on this machine that
shares ``CTE1_CACHE_DIR``). ``local`` (one process) is what tests and the in-process benchmark use.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from cte1_mcp.coordination.base import Coordination, platform_id
from cte1_mcp.coordination.lockfiles import FileFlights, FileSpacer
from cte1_mcp.repository.local.posix import private_dir
from cte1_mcp.settings import Settings

#: Added to CTE1_MIN_INTERVAL_SECONDS so that arrivals, not just departures, keep the spacing.
SPACING_MARGIN_SECONDS = 0.25


def spacing(min_interval: float) -> float:
    """Start-to-start spacing with a margin: network jitter must not bring two arrivals at CT-e1
    closer than its minimum (measured on loopback: a request can arrive a few ms later than sent)."""
    return min_interval + SPACING_MARGIN_SECONDS if min_interval > 0 else 0.0


@asynccontextmanager
async def open_coordination(settings: Settings) -> AsyncIterator[Coordination]:
    """The configured backend, closed (connections dropped) on exit. Needs the cache dir to exist."""
    interval = spacing(settings.min_interval_seconds)
    platform = platform_id(settings)
    if settings.redis_url is not None:
        from cte1_mcp.coordination.redis_backend import RedisFlights, RedisLink, RedisSpacer

        link = RedisLink(settings.redis_url.get_secret_value().strip(), platform)
        try:
            await link.check()
            async with RedisFlights(link) as flights:
                yield Coordination("redis", RedisSpacer(link, interval), flights)
        finally:
            await link.aclose()
        return
    root = private_dir(settings.cache_dir.expanduser().absolute() / "coordination")
    spacer = FileSpacer(root / f"spacing-{platform}", interval)
    yield Coordination("cache directory", spacer, FileFlights(private_dir(root / "flights")))
