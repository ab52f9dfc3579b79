"""The CT-e1 simulator against the documentation, over loopback HTTP, parsed without the client's code."""

from __future__ import annotations

import io
import json
import math
import re
import socket
import struct
import subprocess
import sys
import time
import wave
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import httpx
import psutil
import pytest
from requests_toolbelt.multipart.decoder import MultipartDecoder

from cte1_mcp.simulator import (
    BENCHMARK_TENANT,
    DEFAULT_API_KEY,
    DEFAULT_SOURCE_UUID,
    FOREIGN_TENANT,
    SAMPLE_CALLS,
    Fault,
    RunningSimulator,
    SimulatorConfig,
    find_call,
)
from cte1_mcp.simulator.wav import WavSpec, iter_wav, mulaw_encode, wav_bytes

MiB = 1024 * 1024
AUTH = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
EXAMPLE = {"tenantId": "05053698341", "sessionId": 942125, "recordId": 1}
PCM_CALL = {"tenantId": "05058085500", "sessionId": 35087858, "recordId": 1}
SHORT_CALL = {"tenantId": "05053698341", "sessionId": 942126, "recordId": 1}
IN_PROGRESS = {"tenantId": "05053698341", "sessionId": 942140, "recordId": 1}
EXPIRED = {"tenantId": "05058085500", "sessionId": 35080001, "recordId": 1}
FOREIGN = {"tenantId": FOREIGN_TENANT, "sessionId": 1, "recordId": 1}
EXPIRES_SOON = {"tenantId": "0312345678", "sessionId": 7002, "recordId": 1}
DOC_METADATA_KEYS = [
    "status", "tenantId", "sessionId", "recordId", "direction", "ani", "dnis", "agentId", "agentName",
    "skillName", "groupId", "groupName", "connectTime", "disconnectTime",
]  # fmt: skip
ISO_MILLIS_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


# --- helpers: an independent reading of the wire format -----------------------------------------


@pytest.fixture
def post(simulator: RunningSimulator) -> Iterator[Callable[..., httpx.Response]]:
    with httpx.Client(timeout=30) as client:

        def send(
            body: Any = None, *, content: bytes | None = None, headers: dict[str, str] | None = None
        ) -> httpx.Response:
            if content is None:
                content = json.dumps(body).encode()
            return client.post(
                simulator.audio_data_url,
                content=content,
                headers={"Content-Type": "application/json", **AUTH, **(headers or {})},
            )

        yield send


def split_multipart(response: httpx.Response) -> tuple[dict[str, str], dict[str, Any], dict[str, str], bytes]:
    """(metadata part headers, metadata, audio part headers, audio bytes), by a third-party decoder."""
    parts = MultipartDecoder(response.content, response.headers["content-type"]).parts
    assert len(parts) == 2
    meta, audio = parts
    meta_headers = {k.decode().lower(): v.decode() for k, v in meta.headers.items()}
    audio_headers = {k.decode().lower(): v.decode() for k, v in audio.headers.items()}
    return meta_headers, json.loads(meta.content.decode("utf-8")), audio_headers, audio.content


def riff_chunks(data: bytes) -> dict[str, tuple[int, bytes]]:
    """RIFF chunk id → (declared size, first bytes), read by hand (``wave`` cannot open μ-law)."""
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert struct.unpack_from("<I", data, 4)[0] == len(data) - 8
    chunks, offset = {}, 12
    while offset + 8 <= len(data):
        chunk_id, size = data[offset : offset + 4].decode(), struct.unpack_from("<I", data, offset + 4)[0]
        chunks[chunk_id] = (size, data[offset + 8 : offset + 8 + min(size, 64)])
        offset += 8 + size + (size & 1)
    assert offset == len(data)
    return chunks


def mulaw_decode(byte: int) -> int:
    """G.711 μ-law → linear, written from the standard (not from the simulator's encoder)."""
    byte = ~byte & 0xFF
    magnitude = ((((byte & 0x0F) << 3) + 0x84) << ((byte >> 4) & 0x07)) - 0x84
    return -magnitude if byte & 0x80 else magnitude


def rms(samples: list[int]) -> float:
    return math.sqrt(sum(s * s for s in samples) / len(samples))


def assert_error(response: httpx.Response, phrase: str, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["status"] == "error"
    assert phrase in body["description"]
    return body


def last_outcome(simulator: RunningSimulator) -> str:
    return simulator.state.requests[-1].outcome


# --- the catalogue ------------------------------------------------------------------------------


def test_catalogue_covers_every_documented_case() -> None:
    keys = [call.key for call in SAMPLE_CALLS]
    assert len(keys) == len(set(keys))
    assert len({call.tenant_id for call in SAMPLE_CALLS}) >= 3
    assert {call.direction for call in SAMPLE_CALLS} == {0, 1}
    assert any(call.ani == "anonymous" for call in SAMPLE_CALLS)
    assert any(call.duration is None for call in SAMPLE_CALLS)
    assert any(call.connected_before_epoch > timedelta(days=31) for call in SAMPLE_CALLS)
    transferred = [c for c in SAMPLE_CALLS if (c.tenant_id, c.session_id) == ("05053698341", 942130)]
    assert [c.record_id for c in transferred] == [1, 2]
    assert transferred[0].agent_id != transferred[1].agent_id
    sizes = [call.wav_spec().file_size for call in SAMPLE_CALLS if call.duration is not None]
    assert min(sizes) < 512 * 1024 < max(sizes)
    assert len({call.agent_id for call in SAMPLE_CALLS}) >= 4
    assert all(call.description for call in SAMPLE_CALLS)
    assert all(re.fullmatch(r"\d+@\d+", call.group_id) for call in SAMPLE_CALLS)


# --- success ------------------------------------------------------------------------------------


def test_documented_example_is_a_streamed_multipart_with_metadata_and_mulaw_wav(
    simulator: RunningSimulator, post: Callable[..., httpx.Response]
) -> None:
    response = post(EXAMPLE)
    assert response.status_code == 200
    content_type = response.headers["content-type"]
    assert re.fullmatch(r"multipart/form-data; boundary=[\w-]+", content_type)
    assert int(response.headers["content-length"]) == len(response.content)

    meta_headers, metadata, audio_headers, audio = split_multipart(response)
    assert meta_headers["content-disposition"] == 'form-data; name="metadata"'
    assert meta_headers["content-type"] == "application/json; charset=utf-8"
    assert audio_headers["content-disposition"] == (
        'form-data; name="audioFile"; filename="05053698341_942125_1.wav"'
    )
    assert audio_headers["content-type"] == "audio/wav"

    assert list(metadata) == DOC_METADATA_KEYS
    assert metadata["status"] == "complete"
    assert (metadata["tenantId"], metadata["sessionId"], metadata["recordId"]) == ("05053698341", 942125, 1)
    assert metadata["direction"] == 0
    assert metadata["agentName"] == "コムデザイン一郎"
    assert ISO_MILLIS_Z.fullmatch(metadata["connectTime"])
    assert ISO_MILLIS_Z.fullmatch(metadata["disconnectTime"])
    connected = datetime.fromisoformat(metadata["connectTime"])
    disconnected = datetime.fromisoformat(metadata["disconnectTime"])
    assert connected == simulator.state.epoch - timedelta(hours=2)
    assert disconnected - connected == timedelta(seconds=280.447)

    chunks = riff_chunks(audio)
    fmt_size, fmt = chunks["fmt "]
    tag, channels, rate, byte_rate, align, bits, cb_size = struct.unpack("<HHIIHHH", fmt[:18])
    assert (fmt_size, tag, channels, rate, byte_rate, align, bits, cb_size) == (
        18,
        7,
        2,
        8000,
        16000,
        2,
        8,
        0,
    )
    data_size = chunks["data"][0]
    assert data_size == round(280.447 * 8000) * 2
    assert struct.unpack("<I", chunks["fact"][1][:4])[0] == data_size // 2  # samples per channel
    samples = [mulaw_decode(b) for b in audio[-data_size:][: 10 * 16000]]  # the first 10 s
    customer, agent = samples[0::2], samples[1::2]
    assert rms(agent) > 1000 and rms(customer) > 1000  # both parties audible, each on its channel


def test_pcm_recording_opens_with_wave_and_is_deterministic(post: Callable[..., httpx.Response]) -> None:
    audio = split_multipart(post(PCM_CALL))[3]
    assert len(audio) > 512 * 1024
    with wave.open(io.BytesIO(audio)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 8000)
        assert wav.getnframes() == 75 * 8000
        frames = wav.readframes(wav.getnframes())
    pcm = struct.unpack(f"<{len(frames) // 2}h", frames)
    # this call's customer (channel 0) is the quiet one, 18 dB below the agent (channel 1)
    assert rms(list(pcm[0::2])) > 150 and rms(list(pcm[1::2])) > 1000
    assert sum(1 for s in pcm if s) > len(pcm) // 4  # speech-like, not a few clicks
    assert split_multipart(post(PCM_CALL))[3] == audio  # same call, same bytes
    other = split_multipart(post({"tenantId": "05058085500", "sessionId": 35087859, "recordId": 1}))[3]
    assert other[44:4000] != audio[44:4000]  # seeded by the call ids


def test_short_anonymous_call_is_mono_mulaw_under_512_kib(post: Callable[..., httpx.Response]) -> None:
    _, metadata, _, audio = split_multipart(post(SHORT_CALL))
    assert metadata["ani"] == "anonymous"
    assert len(audio) < 512 * 1024
    chunks = riff_chunks(audio)
    tag, channels = struct.unpack("<HH", chunks["fmt "][1][:4])
    assert (tag, channels, chunks["data"][0]) == (7, 1, 20 * 8000)


def test_transferred_call_has_two_records_with_different_agents(post: Callable[..., httpx.Response]) -> None:
    first = split_multipart(post({"tenantId": "05053698341", "sessionId": 942130, "recordId": 1}))[1]
    second = split_multipart(post({"tenantId": "05053698341", "sessionId": 942130, "recordId": 2}))[1]
    assert first["sessionId"] == second["sessionId"] == 942130
    assert first["agentId"] != second["agentId"]
    assert second["connectTime"] == first["disconnectTime"]  # record 2 starts at the transfer


def test_outbound_call_has_direction_1(post: Callable[..., httpx.Response]) -> None:
    metadata = split_multipart(post({"tenantId": "0312345678", "sessionId": 7001, "recordId": 1}))[1]
    assert metadata["direction"] == 1


def test_each_response_has_its_own_boundary(post: Callable[..., httpx.Response]) -> None:
    boundaries = {post(SHORT_CALL).headers["content-type"].split("boundary=")[1] for _ in range(3)}
    assert len(boundaries) == 3


def test_multipart_mixed_and_unnamed_parts_are_configurable(
    make_simulator: Callable[..., RunningSimulator],
) -> None:
    mixed = make_simulator(multipart_subtype="mixed", named_parts=False)
    response = httpx.post(mixed.audio_data_url, json=SHORT_CALL, headers=AUTH)
    assert response.headers["content-type"].startswith("multipart/mixed; boundary=")
    assert int(response.headers["content-length"]) == len(response.content)
    meta_headers, metadata, audio_headers, audio = split_multipart(response)
    assert "content-disposition" not in meta_headers and "content-disposition" not in audio_headers
    assert meta_headers["content-type"].startswith("application/json")
    assert audio_headers["content-type"] == "audio/wav"
    assert metadata["sessionId"] == 942126 and audio[:4] == b"RIFF"


def test_benchmark_session_n_is_an_n_mib_wav(post: Callable[..., httpx.Response]) -> None:
    response = post({"tenantId": BENCHMARK_TENANT, "sessionId": 3, "recordId": 1})
    _, metadata, audio_headers, audio = split_multipart(response)
    assert len(audio) == 3 * MiB
    assert metadata["status"] == "complete" and metadata["sessionId"] == 3
    with wave.open(io.BytesIO(audio)) as wav:
        assert wav.getnframes() == (3 * MiB - 44) // 4
        duration = wav.getnframes() / wav.getframerate()
    connected = datetime.fromisoformat(metadata["connectTime"])
    disconnected = datetime.fromisoformat(metadata["disconnectTime"])
    assert abs((disconnected - connected).total_seconds() - duration) < 0.002
    assert audio_headers["content-disposition"].endswith('filename="0399999999_3_1.wav"')


@pytest.mark.parametrize(
    ("session_id", "record_id"), [(0, 1), (4097, 1), (1, 2)], ids=["zero", "too-big", "record-2"]
)
def test_benchmark_sizes_outside_1_to_4096_mib_do_not_exist(
    post: Callable[..., httpx.Response], session_id: int, record_id: int
) -> None:
    body = {"tenantId": BENCHMARK_TENANT, "sessionId": session_id, "recordId": record_id}
    assert_error(post(body), "存在しないリクエストパラメータ")


def test_largest_benchmark_announces_4_gib_and_stops_when_the_client_leaves(
    simulator: RunningSimulator,
) -> None:
    body = {"tenantId": BENCHMARK_TENANT, "sessionId": 4096, "recordId": 1}
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", simulator.audio_data_url, json=body, headers=AUTH) as response,
    ):
        length = int(response.headers["content-length"])
        first = next(response.iter_raw(64 * 1024))
    assert 4096 * MiB < length < 4096 * MiB + 2048
    assert b'name="audioFile"' in first
    record = simulator.state.requests[-1]
    previous = -1
    for _ in range(100):  # the server notices the disconnect and stops generating
        time.sleep(0.05)
        if record.bytes_sent == previous:
            break
        previous = record.bytes_sent
    assert not record.completed
    assert record.bytes_sent < 512 * MiB


def test_large_recording_streams_in_flat_memory(simulator: RunningSimulator) -> None:
    process = psutil.Process()
    body = {"tenantId": BENCHMARK_TENANT, "sessionId": 256, "recordId": 1}
    baseline, peak, received = process.memory_info().rss, 0, 0
    with (
        httpx.Client(timeout=60) as client,
        client.stream("POST", simulator.audio_data_url, json=body, headers=AUTH) as response,
    ):
        declared = int(response.headers["content-length"])
        for chunk in response.iter_raw(1024 * 1024):
            received += len(chunk)
            peak = max(peak, process.memory_info().rss)
    assert received == declared > 256 * MiB
    assert peak - baseline < 40 * 1024 * 1024  # client and server share this process
    assert simulator.state.requests[-1].completed


@pytest.mark.anyio
async def test_streaming_does_not_block_the_event_loop(simulator: RunningSimulator) -> None:
    body = {"tenantId": BENCHMARK_TENANT, "sessionId": 128, "recordId": 1}
    latencies: list[float] = []
    done = anyio.Event()

    async def download() -> None:
        async with (
            httpx.AsyncClient(timeout=60) as client,
            client.stream("POST", simulator.audio_data_url, json=body, headers=AUTH) as response,
        ):
            async for _ in response.aiter_raw(1024 * 1024):
                pass
        done.set()

    async def poll() -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            while not done.is_set():
                started = time.monotonic()
                assert (await client.get(f"{simulator.url}/_simulator/stats")).status_code == 200
                latencies.append(time.monotonic() - started)
                await anyio.sleep(0.01)

    async with anyio.create_task_group() as group:
        group.start_soon(download)
        group.start_soon(poll)
    assert latencies and max(latencies) < 1.0
    assert simulator.state.requests[-1].completed


# --- the five documented errors, and malformed requests: HTTP 200 + JSON error -----------------


@pytest.mark.parametrize(
    ("body", "phrase", "outcome"),
    [
        ({**EXAMPLE, "extra": 1}, "存在しないリクエストパラメータ", "unknown_parameter"),
        ({**EXAMPLE, "sessionId": 999999}, "存在しないリクエストパラメータ", "no_such_call"),
        ({**EXAMPLE, "sessionId": 942130, "recordId": 3}, "存在しないリクエストパラメータ", "no_such_call"),
        ({**EXAMPLE, "recordId": 0}, "存在しないリクエストパラメータ", "no_such_call"),
        ({"tenantId": "05053698341", "sessionId": 942125}, "リクエストパラメータが不足", "missing_parameter"),
        ({}, "リクエストパラメータが不足", "missing_parameter"),
        (FOREIGN, "許可されていないテナント", "tenant_not_allowed"),
        ({**EXAMPLE, "tenantId": "0999999999"}, "許可されていないテナント", "tenant_not_allowed"),
        (EXPIRED, "31日以上前の音声データ", "expired"),
        (IN_PROGRESS, "未完了の通話", "in_progress"),
        ({**EXAMPLE, "sessionId": "942125"}, "sessionId must be an integer", "invalid_parameter"),
        ({**EXAMPLE, "recordId": True}, "recordId must be an integer", "invalid_parameter"),
        ({**EXAMPLE, "recordId": 1.0}, "recordId must be an integer", "invalid_parameter"),
        ({**EXAMPLE, "tenantId": 5053698341}, "tenantId must be a string of digits", "invalid_parameter"),
        ({**EXAMPLE, "tenantId": "050-5369"}, "tenantId must be a string of digits", "invalid_parameter"),
        ([EXAMPLE], "JSON", "invalid_json"),
    ],
)  # fmt: skip
def test_documented_errors_are_http_200_with_a_json_error(
    simulator: RunningSimulator, post: Callable[..., httpx.Response], body: Any, phrase: str, outcome: str
) -> None:
    response = post(body)
    described = assert_error(response, phrase)["description"]
    assert re.search(r"\([ -~]+\)$", described)  # an English gloss after the platform's Japanese
    assert last_outcome(simulator) == outcome
    assert simulator.state.requests[-1].body == body


def test_missing_fields_are_named(post: Callable[..., httpx.Response]) -> None:
    assert "sessionId, recordId" in post({"tenantId": "05053698341"}).json()["description"]


@pytest.mark.parametrize("content", [b"", b"{not json", b"\xff\xfe", b"null"])
def test_a_body_that_is_not_a_json_object_is_a_200_error(
    simulator: RunningSimulator, post: Callable[..., httpx.Response], content: bytes
) -> None:
    assert_error(post(content=content), "JSON")
    assert last_outcome(simulator) == "invalid_json"
    assert simulator.state.requests[-1].body is None


def test_allowed_tenants_is_configurable(make_simulator: Callable[..., RunningSimulator]) -> None:
    other = make_simulator(allowed_tenants=frozenset({FOREIGN_TENANT}))
    ok = httpx.post(other.audio_data_url, json=FOREIGN, headers=AUTH)
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("multipart/form-data")
    refused = httpx.post(other.audio_data_url, json=EXAMPLE, headers=AUTH)
    assert_error(refused, "許可されていないテナント")


# --- the front door: path, key, rate limit ------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        f"/general/v2/{DEFAULT_SOURCE_UUID}/call/audio_data",
        "/general/v1/00000000-0000-0000-0000-000000000000/call/audio_data",
        f"/general/v1/{DEFAULT_SOURCE_UUID}/call/history",
        "/",
    ],
)
def test_wrong_path_is_404_json(simulator: RunningSimulator, path: str) -> None:
    response = httpx.post(simulator.url + path, json=EXAMPLE, headers=AUTH)
    assert_error(response, "Not Found", 404)
    assert last_outcome(simulator) == "not_found"


def test_source_uuid_is_case_insensitive(simulator: RunningSimulator) -> None:
    url = simulator.audio_data_url.replace(DEFAULT_SOURCE_UUID, DEFAULT_SOURCE_UUID.upper())
    assert httpx.post(url, json=SHORT_CALL, headers=AUTH).headers["content-type"].startswith("multipart/")


def test_other_methods_are_405_json(simulator: RunningSimulator) -> None:
    response = httpx.get(simulator.audio_data_url, headers=AUTH)
    assert_error(response, "Method Not Allowed", 405)
    assert response.headers["allow"] == "POST"
    assert last_outcome(simulator) == "method_not_allowed"


@pytest.mark.parametrize(
    ("headers", "status", "outcome"),
    [
        ({}, 401, "unauthorized"),
        ({"Authorization": ""}, 401, "unauthorized"),
        ({"Authorization": "Bearer wrong-key"}, 403, "forbidden"),
        ({"Authorization": "wrong-key"}, 403, "forbidden"),
        ({"Authorization": f"Basic {DEFAULT_API_KEY}"}, 403, "forbidden"),
    ],
)
def test_missing_key_is_401_and_wrong_key_is_403(
    simulator: RunningSimulator, headers: dict[str, str], status: int, outcome: str
) -> None:
    response = httpx.post(simulator.audio_data_url, json=EXAMPLE, headers=headers)
    assert_error(response, "", status)
    assert last_outcome(simulator) == outcome


@pytest.mark.parametrize(
    "authorization", [f"Bearer {DEFAULT_API_KEY}", DEFAULT_API_KEY, f"bearer  {DEFAULT_API_KEY}"]
)
def test_bearer_or_bare_key_is_accepted(simulator: RunningSimulator, authorization: str) -> None:
    response = httpx.post(simulator.audio_data_url, json=SHORT_CALL, headers={"Authorization": authorization})
    assert response.headers["content-type"].startswith("multipart/form-data")


def test_requests_closer_than_min_interval_are_429_and_refusals_do_not_move_the_window(
    make_simulator: Callable[..., RunningSimulator],
) -> None:
    limited = make_simulator(min_interval=0.6)
    with httpx.Client(headers=AUTH) as client:

        def request() -> httpx.Response:
            return client.post(limited.audio_data_url, json=SHORT_CALL)

        assert request().status_code == 200
        accepted_at = limited.state.requests[-1].monotonic
        time.sleep(max(0.0, accepted_at + 0.3 - time.monotonic()))
        refused = request()
        body = assert_error(refused, "リクエスト", 429)
        assert refused.headers["retry-after"] == "1"  # 0.3 s left, rounded up to whole seconds
        assert "too many requests" in body["description"]
        # 0.65 s after the accepted one, but only ~0.35 s after the refusal: accepted.
        time.sleep(max(0.0, accepted_at + 0.65 - time.monotonic()))
        assert request().status_code == 200
    assert [r.outcome for r in limited.state.requests] == ["ok", "rate_limited", "ok"]


def test_default_interval_is_5_seconds_and_failed_auth_does_not_count(
    make_simulator: Callable[..., RunningSimulator],
) -> None:
    limited = make_simulator(min_interval=5.0)
    with httpx.Client() as client:
        assert (
            client.post(limited.audio_data_url, json=SHORT_CALL, headers={"Authorization": "x"}).status_code
            == 403
        )
        assert (
            client.post(limited.audio_data_url, json={}, headers=AUTH).status_code == 200
        )  # a 200 error counts
        refused = client.post(limited.audio_data_url, json=SHORT_CALL, headers=AUTH)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) in (4, 5)


def test_min_interval_zero_turns_the_limit_off(post: Callable[..., httpx.Response]) -> None:
    assert [post({}).status_code for _ in range(5)] == [200] * 5


# --- the clock: 31-day rule and unfinished calls ------------------------------------------------


def test_thirty_one_day_rule_moves_with_the_clock(
    simulator: RunningSimulator, post: Callable[..., httpx.Response]
) -> None:
    state = simulator.state
    connected = find_call("0312345678", 7002, 1)
    assert connected is not None
    expires_at = connected.connect_time(state.epoch) + timedelta(days=31)
    assert expires_at == state.epoch + timedelta(hours=1)

    state.set_now(expires_at - timedelta(milliseconds=1))
    assert post(EXPIRES_SOON).headers["content-type"].startswith("multipart/")
    state.set_now(expires_at)  # 31日以上前: exactly 31 days is already too old
    assert_error(post(EXPIRES_SOON), "31日以上前")

    state.set_now(state.epoch - timedelta(days=10))  # the 40-day-old call was 30 days old then
    assert post(EXPIRED).headers["content-type"].startswith("multipart/")
    state.reset()
    assert_error(post(EXPIRED), "31日以上前")
    state.advance(timedelta(hours=2))
    assert_error(post(EXPIRES_SOON), "31日以上前")


def test_a_call_is_unfinished_while_the_clock_is_inside_it(
    simulator: RunningSimulator, post: Callable[..., httpx.Response]
) -> None:
    state = simulator.state
    call = find_call(*EXAMPLE.values())  # type: ignore[arg-type]
    assert call is not None
    state.set_now(call.connect_time(state.epoch) + timedelta(seconds=10))
    assert_error(post(EXAMPLE), "未完了の通話")
    state.set_now(call.connect_time(state.epoch) - timedelta(seconds=1))
    assert_error(post(EXAMPLE), "存在しないリクエストパラメータ")  # not placed yet
    state.advance(timedelta(days=1))
    assert post(EXAMPLE).headers["content-type"].startswith("multipart/")
    assert state.now() == call.connect_time(state.epoch) + timedelta(days=1, seconds=-1)


def test_clock_is_aware_utc_and_runs_unless_frozen(simulator: RunningSimulator) -> None:
    state = simulator.state
    first = state.now()
    assert first.tzinfo is not None and first.utcoffset() == timedelta(0)
    assert abs(first - datetime.now(UTC)) < timedelta(seconds=5)
    state.advance(timedelta(days=3))
    assert state.now() - datetime.now(UTC) > timedelta(days=2, hours=23)
    with pytest.raises(ValueError, match="aware"):
        state.set_now(datetime(2026, 1, 1))


# --- test hooks -------------------------------------------------------------------------------


def test_request_log_and_stats(simulator: RunningSimulator, post: Callable[..., httpx.Response]) -> None:
    post(SHORT_CALL)
    post(IN_PROGRESS)
    post(content=b"nope")
    log = simulator.state.requests
    assert [(r.method, r.status, r.outcome) for r in log] == [
        ("POST", 200, "ok"),
        ("POST", 200, "in_progress"),
        ("POST", 200, "invalid_json"),
    ]
    assert log[0].path == f"/general/v1/{DEFAULT_SOURCE_UUID}/call/audio_data"
    assert log[0].body == SHORT_CALL and log[0].completed and log[0].bytes_sent > 160_000
    assert log[0].monotonic <= log[1].monotonic <= log[2].monotonic
    stats = httpx.get(f"{simulator.url}/_simulator/stats").json()
    assert stats["requests"] == 3
    assert stats["outcomes"] == {"ok": 1, "in_progress": 1, "invalid_json": 1}
    assert len(simulator.state.requests) == 3  # reading stats is not a request to the platform
    simulator.state.reset()
    assert simulator.state.requests == []


def test_fault_replaces_one_answer(simulator: RunningSimulator, post: Callable[..., httpx.Response]) -> None:
    simulator.state.fail_next(Fault(status=503, body=b"<html>busy</html>", content_type="text/html"))
    failed = post(SHORT_CALL)
    assert (failed.status_code, failed.text) == (503, "<html>busy</html>")
    assert failed.headers["content-type"].startswith("text/html")
    assert last_outcome(simulator) == "fault"
    assert post(SHORT_CALL).status_code == 200  # used once


def test_fault_truncates_a_download(simulator: RunningSimulator, post: Callable[..., httpx.Response]) -> None:
    simulator.state.fail_next(Fault(truncate_after=10_000))
    with pytest.raises(httpx.RemoteProtocolError):
        post(EXAMPLE)
    record = simulator.state.requests[-1]
    assert (record.outcome, record.bytes_sent, record.completed) == ("fault", 10_000, False)


def test_fault_delays_an_answer(simulator: RunningSimulator, post: Callable[..., httpx.Response]) -> None:
    simulator.state.fail_next(Fault(delay=0.3))
    started = time.monotonic()
    assert post(SHORT_CALL).status_code == 200
    assert time.monotonic() - started >= 0.3


# --- the WAV generator --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "expected"), [(0, 0xFF), (-1, 0x7F), (32767, 0x80), (-32768, 0x00), (1000, 0xCE)]
)
def test_mulaw_encoding_matches_g711(sample: int, expected: int) -> None:
    assert mulaw_encode(sample) == expected


def test_mulaw_round_trip_is_within_one_quantisation_step() -> None:
    for sample in range(-32768, 32768, 97):
        decoded = mulaw_decode(mulaw_encode(sample))
        assert abs(decoded - sample) <= max(16, (abs(sample) + 132) // 16)


@pytest.mark.parametrize("encoding", ["pcm16", "mulaw"])
@pytest.mark.parametrize("channels", [1, 2])
def test_stream_is_the_same_whatever_the_chunk_size(encoding: Any, channels: Any) -> None:
    spec = WavSpec.for_duration(13.37, channels=channels, encoding=encoding, seed=42)
    whole = wav_bytes(spec)
    assert len(whole) == spec.file_size
    for chunk_size in (1, 4099, 300_000, 10 * MiB):
        if chunk_size == 1:
            chunks = list(iter_wav(WavSpec(channels, encoding, 500, seed=42), 1))
            assert b"".join(chunks) == wav_bytes(WavSpec(channels, encoding, 500, seed=42))
            continue
        chunks = list(iter_wav(spec, chunk_size))
        assert max(len(c) for c in chunks) <= chunk_size
        assert b"".join(chunks) == whole


def test_odd_data_is_padded_and_the_riff_size_stays_exact() -> None:
    spec = WavSpec(1, "mulaw", 8001, seed=1)
    data = wav_bytes(spec)
    chunks = riff_chunks(data)  # checks the RIFF size and the pad byte
    assert chunks["data"][0] == 8001 and len(data) == 58 + 8001 + 1


def test_exact_file_sizes_up_to_the_riff_limit() -> None:
    assert WavSpec.for_file_size(4096 * MiB, channels=2, encoding="pcm16").file_size == 4096 * MiB
    with pytest.raises(ValueError, match="exactly"):
        WavSpec.for_file_size(1001, channels=2, encoding="pcm16")
    with pytest.raises(ValueError, match="4 GiB"):
        WavSpec(2, "pcm16", 2**30)


def test_generation_is_fast_enough_for_benchmarks() -> None:
    spec = WavSpec.for_file_size(128 * MiB, channels=2, encoding="pcm16", seed=7)
    started = time.perf_counter()
    total = sum(len(chunk) for chunk in iter_wav(spec))
    assert total == 128 * MiB
    assert total / (time.perf_counter() - started) > 500 * 1000 * 1000


# --- serve(): the CLI's foreground server ----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize("api_key", [DEFAULT_API_KEY, "a-private-key-0123"])
def test_serve_announces_how_to_connect_without_leaking_a_real_key(api_key: str) -> None:
    port = free_port()
    code = (
        "from cte1_mcp.simulator import SimulatorConfig, serve; "
        f"serve(SimulatorConfig(port={port}, api_key={api_key!r}, min_interval=0))"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert f"http://127.0.0.1:{port}" in line
            assert f"CTE1_BASE_URL=http://127.0.0.1:{port}" in line
            assert f"CTE1_SOURCE_UUID={DEFAULT_SOURCE_UUID}" in line
            assert (api_key in line) == (api_key == DEFAULT_API_KEY)
            response = None
            for _ in range(200):
                try:
                    response = httpx.post(
                        f"http://127.0.0.1:{port}{SimulatorConfig().endpoint_path}",
                        json=SHORT_CALL,
                        headers={"Authorization": api_key},
                    )
                    break
                except httpx.ConnectError:
                    time.sleep(0.025)
            assert response is not None
            assert response.headers["content-type"].startswith("multipart/form-data")
        finally:
            process.terminate()
