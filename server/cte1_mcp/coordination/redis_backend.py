"""Coordination through Redis (or Valkey): every process on every machine using the same server.

Keys, all under ``cte1-mcp:<platform>:`` (the hashed base URL + sourceUuid, never the API key)::

    spacing             hash: ``next`` (the next free start), ``not_before`` (Retry-After) and
                        ``last`` (the latest start), in the Redis server's own microseconds, so
                        machines' clocks never matter; ``gen``, a random name of this state
    flight:<call>       the downloader's token, with a lease it renews while it streams
    flight:<call>:news  pub/sub channel: its progress, and "released" when it lets go

Spacing is two short scripts per request: one reads the server's clock, hands the caller the next
free start time (its slot) and moves the next free one on; the caller sleeps until its slot, and
the other confirms it there and records the start. Nothing polls. The confirmation is what makes
the slot hold whatever happened while the caller slept:

* a Retry-After recorded since (another machine's 429) gives it a new slot after the pause;
* a start made late by the one before it (a busy machine) makes it wait the interval after that;
* state the server has lost (a restart without persistence) is taken to mean "a request may just
  have started": the first slot handed out after it is one interval away, under a new ``gen``.
  A slot of the old ``gen`` is no longer on record (a sleeper elsewhere may hold one that the
  new state knows nothing of), so its holder takes a new slot instead of starting: no start is
  ever closer than the interval to one the current state handed out, and none before the first
  slot after the restart.

Redis unreachable: ``CoordinationUnavailable``, logged loudly once per outage; the service refuses
upstream requests (stored recordings are still served) rather than risk exceeding the limit.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, Self, TypeVar

import anyio
import redis.asyncio
import redis.exceptions
from anyio.abc import TaskGroup
from redis.asyncio.client import PubSub

from cte1_mcp.coordination.base import OnWait, call_id
from cte1_mcp.errors import CoordinationUnavailable
from cte1_mcp.models import CallKey
from cte1_mcp.progress import Progress, ProgressCallback

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: A downloader that stops renewing (it died) frees its recording for another after this long.
LEASE_SECONDS = 10.0
#: Progress published for other processes at most this often (a stage change is always published).
PUBLISH_EVERY_SECONDS = 0.2
#: Connecting and each command give up after this long: a dead server must not hang requests.
SOCKET_TIMEOUT_SECONDS = 3.0

# Numbers are stored with string.format('%.0f'): Lua's own number-to-string keeps 14 digits only.
# A reservation (ARGV: interval, this process's floor, a new gen should the state be lost):
# {slot, now, gen}. Lost state (no gen or no next) gets the new gen, its first slot an interval away.
_RESERVE_NEXT = """
local function reserve(key, now, interval, floor, new_gen)
  local gen = redis.call('HGET', key, 'gen')
  local nxt = tonumber(redis.call('HGET', key, 'next'))
  if not gen or nxt == nil then
    gen = new_gen
    nxt = now + interval
    redis.call('HSET', key, 'gen', gen)
  end
  local nb = tonumber(redis.call('HGET', key, 'not_before')) or 0
  local start = math.max(now, nxt, nb, floor)
  redis.call('HSET', key, 'next', string.format('%.0f', start + interval))
  return {start, gen}
end
"""
_RESERVE = (
    _RESERVE_NEXT
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local r = reserve(KEYS[1], now, tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3])
return {r[1], now, r[2]}
"""
)
# At the slot (ARGV: slot, its gen, interval, floor, a new gen): {1, slot, now, gen} and the start
# recorded when it may start now; else {0, slot, when to confirm again, now, gen}.
_CONFIRM = (
    _RESERVE_NEXT
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local slot = tonumber(ARGV[1])
local interval = tonumber(ARGV[3])
local gen = redis.call('HGET', KEYS[1], 'gen')
local nxt = tonumber(redis.call('HGET', KEYS[1], 'next'))
local nb = tonumber(redis.call('HGET', KEYS[1], 'not_before')) or 0
if gen == ARGV[2] and nxt ~= nil then
  if nb > now then
    -- A Retry-After since the reservation: a slot after it (this one, if nobody queued behind).
    local base = nxt
    if nxt == slot + interval then base = slot end
    local start = math.max(now, base, nb)
    redis.call('HSET', KEYS[1], 'next', string.format('%.0f', start + interval))
    return {0, start, start, now, gen}
  end
  local last = tonumber(redis.call('HGET', KEYS[1], 'last')) or 0
  if now < last + interval then return {0, slot, last + interval, now, gen} end
  redis.call('HSET', KEYS[1], 'last', string.format('%.0f', now))
  -- Started late (a busy machine): the next reservation is spaced from the start itself.
  if nxt < now + interval then redis.call('HSET', KEYS[1], 'next', string.format('%.0f', now + interval)) end
  return {1, slot, now, now, gen}
end
-- The slot is not on record (the state was lost since it was handed out): a new one.
local r = reserve(KEYS[1], now, interval, tonumber(ARGV[4]), ARGV[5])
return {0, r[1], r[1], now, r[2]}
"""
)
_GIVE_BACK = """
if redis.call('HGET', KEYS[1], 'gen') == ARGV[3]
    and tonumber(redis.call('HGET', KEYS[1], 'next')) == tonumber(ARGV[1]) + tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'next', ARGV[1])
  return 1
end
return 0
"""
_DEFER = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local due = now + tonumber(ARGV[1])
local nb = tonumber(redis.call('HGET', KEYS[1], 'not_before')) or 0
if due > nb then redis.call('HSET', KEYS[1], 'not_before', string.format('%.0f', due)) nb = due end
return {nb, now}
"""
_DEFERRED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
return {tonumber(redis.call('HGET', KEYS[1], 'not_before')) or 0, now}
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', KEYS[2], '"released"')
  return 1
end
return 0
"""


class RedisLink:
    """One client for the process, and the one place that turns Redis failures into our error."""

    def __init__(self, url: str, platform: str) -> None:
        self.client: redis.asyncio.Redis = redis.asyncio.from_url(
            url,
            socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
            socket_timeout=SOCKET_TIMEOUT_SECONDS,
            health_check_interval=30,
        )
        self.prefix = f"cte1-mcp:{platform}:"
        self._down = False
        self._scripts: dict[str, Any] = {}

    async def aclose(self) -> None:
        await self.client.aclose()

    async def check(self) -> bool:
        """Whether Redis answers now; an outage is logged (at start-up: the operator sees it at once,
        while stored recordings are served anyway)."""
        try:
            await self.call(self.client.ping)
        except CoordinationUnavailable:
            return False
        return True

    async def call(self, action: Callable[[], Awaitable[T]]) -> T:
        try:
            result = await action()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            raise self._unavailable(exc) from None
        except redis.exceptions.RedisError as exc:
            raise self._unavailable(exc) from None
        if self._down:
            self._down = False
            logger.warning("Redis (CTE1_REDIS_URL) answers again: upstream requests resume")
        return result

    async def script(self, source: str, keys: list[str], args: list[Any]) -> Any:
        runner = self._scripts.get(source)
        if runner is None:
            runner = self._scripts[source] = self.client.register_script(source)
        return await self.call(lambda: runner(keys=keys, args=args))

    def _unavailable(self, exc: BaseException) -> CoordinationUnavailable:
        if not self._down:
            self._down = True
            # The exception text names host and port at most, never the URL (it may hold a password).
            logger.error(
                "Redis (CTE1_REDIS_URL) is unavailable (%s): refusing upstream requests until it answers; "
                "stored recordings are still served",
                type(exc).__name__,
            )
        return CoordinationUnavailable(
            "The shared rate limiter (Redis) cannot be reached, so no request to CT-e1 is made: it could "
            "exceed the platform's limit."
        )


class RedisSpacer:
    """Start-to-start spacing for every process that uses the same Redis and platform."""

    def __init__(self, link: RedisLink, interval: float, *, notify_every: float = 1.0) -> None:
        if interval < 0:
            raise ValueError("interval must be >= 0")
        self._link = link
        self._key = link.prefix + "spacing"
        self._interval = interval
        self._interval_us = round(interval * 1e6)
        self._notify_every = notify_every
        #: The latest next-free start this process knows of (server µs): a floor if Redis forgets.
        self._floor_us = 0

    @property
    def interval(self) -> float:
        return self._interval

    async def acquire(self, on_wait: OnWait | None = None) -> None:
        """Reserve a slot, sleep to it, and start only once Redis confirms it there (module docs)."""
        reply = await self._link.script(
            _RESERVE, [self._key], [self._interval_us, self._floor_us, secrets.token_hex(8)]
        )
        slot, wake, now, gen = int(reply[0]), int(reply[0]), int(reply[1]), _text(reply[2])
        try:
            while True:
                self._floor_us = max(self._floor_us, slot + self._interval_us)
                deadline = time.monotonic() + (wake - now) / 1e6
                while (remaining := deadline - time.monotonic()) > 0:
                    if on_wait is not None:
                        await on_wait(remaining)
                    await anyio.sleep(min(remaining, self._notify_every))
                go, slot_, wake_, now_, gen_ = await self._link.script(
                    _CONFIRM,
                    [self._key],
                    [slot, gen, self._interval_us, self._floor_us, secrets.token_hex(8)],
                )
                slot, wake, now, gen = int(slot_), int(wake_), int(now_), _text(gen_)
                if int(go):
                    return
        except BaseException:
            with (
                anyio.CancelScope(shield=True),
                anyio.move_on_after(SOCKET_TIMEOUT_SECONDS),
                suppress(CoordinationUnavailable),  # the slot simply goes unused
            ):
                if await self._link.script(_GIVE_BACK, [self._key], [slot, self._interval_us, gen]):
                    self._floor_us = min(self._floor_us, slot)
            raise

    async def defer(self, seconds: float) -> None:
        not_before_us, _ = await self._link.script(_DEFER, [self._key], [round(max(seconds, 0.0) * 1e6)])
        self._floor_us = max(self._floor_us, int(not_before_us))

    async def deferred_for(self) -> float:
        not_before_us, now_us = await self._link.script(_DEFERRED, [self._key], [])
        return max(0.0, (int(not_before_us) - int(now_us)) / 1e6)


class _RedisClaim:
    def __init__(self, link: RedisLink, channel: str) -> None:
        self._link = link
        self._channel = channel
        self._last_stage: str | None = None
        self._last_sent = 0.0

    async def publish(self, progress: Progress) -> None:
        now = time.monotonic()
        if progress.stage == self._last_stage and now - self._last_sent < PUBLISH_EVERY_SECONDS:
            return
        self._last_stage, self._last_sent = progress.stage, now
        message = json.dumps(
            {
                "stage": progress.stage,
                "done": progress.done,
                "total": progress.total,
                "message": progress.message,
            }
        )
        with suppress(CoordinationUnavailable):  # waiters elsewhere miss a note; the download goes on
            await self._link.call(lambda: self._link.client.publish(self._channel, message))


class RedisFlights:
    """One download per recording at a time among everything that uses the same Redis.

    Used as ``async with RedisFlights(link) as flights``: lease renewals run in a task group of its
    own, so a claim held across the caller's cancel scopes never nests a task group inside them.
    """

    def __init__(self, link: RedisLink, *, lease_seconds: float = LEASE_SECONDS) -> None:
        self._link = link
        self._lease_ms = round(lease_seconds * 1000)
        self._tasks: TaskGroup | None = None

    async def __aenter__(self) -> Self:
        tasks = anyio.create_task_group()
        await tasks.__aenter__()
        self._tasks = tasks
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        tasks, self._tasks = self._tasks, None
        assert tasks is not None, "RedisFlights exited without being entered"
        tasks.cancel_scope.cancel()
        return await tasks.__aexit__(*exc_info)

    @asynccontextmanager
    async def claim(
        self, key: CallKey, on_progress: ProgressCallback | None = None
    ) -> AsyncIterator[_RedisClaim]:
        if self._tasks is None:
            raise RuntimeError("use RedisFlights inside 'async with'")
        lock = f"{self._link.prefix}flight:{call_id(key)}"
        channel = f"{lock}:news"
        token = secrets.token_hex(16)
        await self._wait_for(lock, channel, token, on_progress)
        renewal = anyio.CancelScope()
        self._tasks.start_soon(self._renew, lock, token, renewal)
        try:
            yield _RedisClaim(self._link, channel)
        finally:
            renewal.cancel()
            with (
                anyio.CancelScope(shield=True),
                anyio.move_on_after(SOCKET_TIMEOUT_SECONDS),
                suppress(CoordinationUnavailable),  # the lease runs out on its own
            ):
                await self._link.script(_RELEASE, [lock, channel], [token])

    async def _wait_for(
        self, lock: str, channel: str, token: str, on_progress: ProgressCallback | None
    ) -> None:
        """Take the lock, or wait on its channel (subscribed first, so no release is missed)."""
        client = self._link.client
        if await self._link.call(lambda: client.set(lock, token, nx=True, px=self._lease_ms)):
            return
        pubsub: PubSub = client.pubsub()
        try:
            await self._link.call(lambda: pubsub.subscribe(channel))
            while not await self._link.call(lambda: client.set(lock, token, nx=True, px=self._lease_ms)):
                left_ms = await self._link.call(lambda: client.pttl(lock))
                # Until the holder says "released", or its lease would have run out had it died.
                await self._listen(pubsub, max(int(left_ms), 0) / 1000 + 0.05, on_progress)
        finally:
            with (
                anyio.CancelScope(shield=True),
                anyio.move_on_after(SOCKET_TIMEOUT_SECONDS),
                suppress(redis.exceptions.RedisError, OSError),
            ):
                await pubsub.aclose()

    async def _listen(self, pubsub: PubSub, seconds: float, on_progress: ProgressCallback | None) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            message = await self._link.call(
                lambda: pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
            )
            if message is None:
                continue
            news = _decode(message.get("data"))
            if news == "released":
                return
            if isinstance(news, dict) and on_progress is not None:
                progress = _progress(news)
                if progress is not None:
                    await on_progress(progress)

    async def _renew(self, lock: str, token: str, scope: anyio.CancelScope) -> None:
        with scope:
            while True:
                await anyio.sleep(self._lease_ms / 3000)
                try:
                    kept = await self._link.script(_RENEW, [lock], [token, self._lease_ms])
                except CoordinationUnavailable:
                    continue  # logged by the link; the download goes on, its slot was properly taken
                if not kept:
                    logger.warning(
                        "the download lease on a recording was lost (Redis forgot it); finishing anyway"
                    )


def _text(value: object) -> str:
    """A string from a script's reply (bytes unless the client decodes responses)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode(data: object) -> object:
    if not isinstance(data, bytes | str):
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def _progress(news: dict[str, Any]) -> Progress | None:
    try:
        return Progress(
            stage=news["stage"],
            done=float(news["done"]),
            total=None if news["total"] is None else float(news["total"]),
            message=f"another server is fetching it: {news['message']}",
        )
    except (KeyError, TypeError, ValueError):
        return None
