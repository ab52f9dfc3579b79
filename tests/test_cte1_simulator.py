"""The audio_data endpoint against the CT-e1 simulator over loopback: the documented cases end to end."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest

from cte1_mcp.audio.sniff import sniff_format
from cte1_mcp.cte1.audio_data import AudioDataEndpoint, FetchedCall
from cte1_mcp.errors import (
    CallInProgress,
    Cte1Error,
    RateLimited,
    UpstreamAuthFailed,
    UpstreamBadResponse,
    UpstreamIpNotAllowed,
    UpstreamRejected,
    UpstreamTruncated,
    UpstreamUnavailable,
)
from cte1_mcp.models import CallKey
from cte1_mcp.simulator import (
    DOC_METADATA_TENANT,
    DOC_TENANT,
    FOREIGN_TENANT,
    Fault,
    RunningSimulator,
)
from tests.helpers.raw_upstream import expected_recording, simulator_settings

pytestmark = pytest.mark.anyio

E = TypeVar("E", bound=Cte1Error)

SAMPLE = CallKey(DOC_TENANT, 942125, 1)


class HashingSink:
    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.size = 0
        self.head = b""

    def write_blocking(self, chunk: bytes) -> None:
        self.hash.update(chunk)
        self.size += len(chunk)
        if len(self.head) < 65536:
            self.head += chunk[: 65536 - len(self.head)]


async def fetch(
    simulator: RunningSimulator, tmp_path: Path, key: CallKey = SAMPLE, **overrides: Any
) -> tuple[FetchedCall, HashingSink]:
    sink = HashingSink()
    async with AudioDataEndpoint(simulator_settings(simulator, tmp_path, **overrides)) as endpoint:
        return await endpoint.fetch(key, sink), sink


@pytest.mark.parametrize(
    ("subtype", "named"), [("form-data", True), ("mixed", True), ("mixed", False), ("form-data", False)]
)
async def test_sample_call_in_every_multipart_shape(
    make_simulator: Callable[..., RunningSimulator], tmp_path: Path, subtype: str, named: bool
) -> None:
    simulator = make_simulator(multipart_subtype=subtype, named_parts=named, chunk_size=65_537)
    fetched, sink = await fetch(simulator, tmp_path)
    digest, size = expected_recording(SAMPLE)
    assert (sink.hash.hexdigest(), sink.size, fetched.audio_bytes) == (digest, size, size)
    assert fetched.audio_content_type == "audio/wav"
    metadata = fetched.metadata
    assert (metadata.status, metadata.tenantId, metadata.sessionId, metadata.recordId) == (
        "complete",
        DOC_TENANT,
        942125,
        1,
    )
    assert metadata.agentName == "コムデザイン一郎"
    assert metadata.duration_seconds == 280.447
    audio = sniff_format(sink.head, fetched.audio_content_type, sink.size)
    assert (audio.container, audio.encoding, audio.sample_rate, audio.channels) == ("wav", "mulaw", 8000, 2)
    assert audio.duration_seconds == pytest.approx(280.447, abs=0.001)


async def test_the_request_the_simulator_saw(simulator: RunningSimulator, tmp_path: Path) -> None:
    await fetch(simulator, tmp_path, key=CallKey(DOC_METADATA_TENANT, 35087858, 1))
    [request] = simulator.state.requests
    assert (request.method, request.path, request.outcome) == ("POST", simulator.config.endpoint_path, "ok")
    assert request.body == {"tenantId": DOC_METADATA_TENANT, "sessionId": 35087858, "recordId": 1}
    assert request.completed


async def expect(
    simulator: RunningSimulator,
    tmp_path: Path,
    kind: type[E],
    key: CallKey = SAMPLE,
    **overrides: Any,
) -> E:
    with pytest.raises(kind) as caught:
        await fetch(simulator, tmp_path, key=key, **overrides)
    exc = caught.value
    assert simulator.config.api_key not in exc.render()
    host = urlsplit(simulator.url).hostname
    assert host and host not in exc.render()  # CT-e1's domain is private configuration
    return exc


@pytest.mark.parametrize(
    ("key", "kind", "words"),
    [
        (CallKey(DOC_TENANT, 942125, 99), UpstreamRejected, "存在しないリクエストパラメータです"),
        (CallKey(FOREIGN_TENANT, 1, 1), UpstreamRejected, "許可されていないテナントの情報要求です"),
        (
            CallKey(DOC_METADATA_TENANT, 35080001, 1),
            UpstreamRejected,
            "31日以上前の音声データを要求しています",
        ),
        (CallKey(DOC_TENANT, 942140, 1), CallInProgress, "未完了の通話に対する取得要求です"),
    ],
)
async def test_documented_200_failures(
    simulator: RunningSimulator, tmp_path: Path, key: CallKey, kind: type[Cte1Error], words: str
) -> None:
    exc = await expect(simulator, tmp_path, kind, key)
    assert exc.platform_message is not None and exc.platform_message.startswith(words)
    assert "HTTP 200" in exc.message
    assert [r.status for r in simulator.state.requests] == [200]


async def test_wrong_key_is_an_auth_failure(simulator: RunningSimulator, tmp_path: Path) -> None:
    exc = await expect(simulator, tmp_path, UpstreamAuthFailed, api_key="not-the-key")
    assert "HTTP 403" in exc.message
    assert "not-the-key" not in exc.render()


async def test_wrong_source_uuid_is_a_404(simulator: RunningSimulator, tmp_path: Path) -> None:
    exc = await expect(
        simulator, tmp_path, UpstreamIpNotAllowed, source_uuid="00000000-0000-4000-8000-000000000000"
    )
    assert "HTTP 404" in exc.message


async def test_rate_limit_carries_retry_after(
    make_simulator: Callable[..., RunningSimulator], tmp_path: Path
) -> None:
    simulator = make_simulator(min_interval=30)
    await fetch(simulator, tmp_path, key=CallKey(DOC_TENANT, 942126, 1))
    exc = await expect(simulator, tmp_path, RateLimited)
    assert (exc.code, exc.retryable) == ("rate_limited", True)
    assert exc.retry_after_seconds is not None and 25 <= exc.retry_after_seconds <= 30
    assert exc.platform_message is not None and "リクエスト間隔" in exc.platform_message


async def test_truncated_answer_is_retryable(simulator: RunningSimulator, tmp_path: Path) -> None:
    simulator.state.fail_next(Fault(truncate_after=100_000))
    exc = await expect(simulator, tmp_path, UpstreamTruncated)
    assert isinstance(exc, UpstreamBadResponse)
    assert (exc.code, exc.retryable) == ("upstream_bad_response", True)
    assert "broke off after 100,000 of" in exc.message


async def test_proxy_error_page(simulator: RunningSimulator, tmp_path: Path) -> None:
    page = b"<html><head><title>502 Bad Gateway</title></head><body><center>nginx</center></body></html>"
    simulator.state.fail_next(Fault(status=502, body=page, content_type="text/html"))
    exc = await expect(simulator, tmp_path, UpstreamUnavailable)
    assert "HTTP 502; text/html: “502 Bad Gateway nginx”" in exc.message


async def test_slow_answer_times_out(simulator: RunningSimulator, tmp_path: Path) -> None:
    simulator.state.fail_next(Fault(delay=1.0))
    exc = await expect(simulator, tmp_path, UpstreamUnavailable, timeout_seconds=0.2)
    assert exc.message == "CT-e1 did not answer in time (read timeout, 0.2 s)."


async def test_malformed_answer_is_not_retryable(simulator: RunningSimulator, tmp_path: Path) -> None:
    simulator.state.fail_next(Fault(body=b"--x\r\n\r\n", content_type="multipart/form-data"))
    exc = await expect(simulator, tmp_path, UpstreamBadResponse)
    assert not isinstance(exc, UpstreamTruncated)
    assert (exc.code, exc.retryable) == ("upstream_bad_response", False)
    assert "no boundary" in exc.message


async def test_rate_limit_without_retry_after_invents_none(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    simulator.state.fail_next(
        Fault(status=429, body=b'{"status": "error", "description": "Too Many Requests"}')
    )
    exc = await expect(simulator, tmp_path, RateLimited)
    assert (exc.code, exc.retryable, exc.retry_after_seconds) == ("rate_limited", True, None)
