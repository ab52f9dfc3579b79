"""CT-e1's speech-recognition push: the page's own example, and hostile requests, over real HTTP."""

from __future__ import annotations

import copy
import hmac
import json
import logging
import socket
import stat
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest

from cte1_mcp import push as push_module
from cte1_mcp.models import CallKey
from cte1_mcp.repository.local import LocalRepository
from cte1_mcp.settings import load_settings
from cte1_mcp.simulator import DEFAULT_SOURCE_UUID
from cte1_mcp.transcribe.pushed import StoredPush, platform_push, stored_push, to_transcript
from cte1_mcp.transcribe.transcript import Transcript
from tests.helpers.push_server import (
    DEFAULT_PUSH_PATH,
    PAGE_EXAMPLE,
    PUSH_KEY,
    PushServer,
    example,
    push_server,
)
from tests.helpers.repository import Clock, new_store

pytestmark = pytest.mark.anyio

#: The example call is from June 2024: the store's clock is put an hour after it, within 31 days.
PUSHED_AT = datetime(2024, 6, 21, 9, 30, tzinfo=UTC)
KEY = CallKey("05053698333", 942125, 1)
JSON = {"Content-Type": "application/json", "Authorization": PUSH_KEY}


async def pushed_transcript(store: LocalRepository) -> Transcript:
    stored: StoredPush | None = await stored_push(store, KEY)
    assert stored is not None
    return to_transcript(stored)


@pytest.fixture
def clock() -> Clock:
    clock = Clock()
    clock.now = PUSHED_AT
    return clock


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> LocalRepository:
    return new_store(tmp_path / "cache", clock)


@pytest.fixture
async def server(store: LocalRepository) -> AsyncIterator[PushServer]:
    async with push_server(store, allowed_tenants="05053698333,05053698341") as running:
        yield running


async def post(
    server: PushServer, body: bytes | str, headers: dict[str, str] | None = None
) -> httpx.Response:
    data = body.encode() if isinstance(body, str) else body
    async with httpx.AsyncClient() as http:
        return await http.post(server.url, content=data, headers=JSON if headers is None else headers)


def modes(root: Path) -> set[tuple[str, int]]:
    return {
        ("dir" if path.is_dir() else "file", stat.S_IMODE(path.stat().st_mode))
        for path in [root, *root.rglob("*")]
    }


async def test_the_pages_example_verbatim_is_stored_first_record_wins(
    server: PushServer, store: LocalRepository
) -> None:
    response = await post(server, PAGE_EXAMPLE)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ok",
        "stored": [{"tenantId": "05053698333", "sessionId": 942125, "recordId": 1, "sentences": 2}],
        "skipped": [{"recordId": 1, "index": 1, "reason": "duplicate_record_id"}],
    }
    [stored_file] = server.pushed_files()
    assert stored_file.relative_to(store.root).parts == ("pushed", "05053698333", "942125", "1.json")
    assert modes(store.root / "pushed") == {("dir", 0o700), ("file", 0o600)}
    transcript = await pushed_transcript(store)
    assert transcript.engine.name == "cte1"
    assert transcript.engine.model == "CT-e1 speech recognition"
    assert transcript.engine.modelSha256 is None
    assert transcript.durationSeconds == 62.846  # disconnectTime - connectTime
    rows = [
        (s.sequence, s.speakerId, s.speaker, s.channel, s.startOffsetMs, s.endOffsetMs, s.startTime, s.text)
        for s in transcript.sentenceList
    ]
    assert rows == [
        (1, 2, "agent", None, 4360, 6160, "2024-06-21T08:27:38.444Z", "私はコムデザイン一郎です"),
        (2, 1, "customer", None, 8180, 10010, "2024-06-21T08:27:42.264Z", "パソコンの調子が悪いです"),
    ]
    assert transcript.sentenceList[1].endTime == "2024-06-21T08:27:44.094Z"
    assert "二郎" not in transcript.model_dump_json()  # the second record with recordId 1 was not stored


async def test_a_bearer_key_is_accepted_and_a_later_push_replaces_the_earlier(
    server: PushServer, store: LocalRepository
) -> None:
    assert (await post(server, PAGE_EXAMPLE)).status_code == 200
    body = example()
    body["conversation"]["recordList"][0]["sentenceList"][0]["text"] = "訂正された文"
    response = await post(server, json.dumps(body), {**JSON, "Authorization": f"Bearer {PUSH_KEY}"})
    assert response.status_code == 200
    transcript = await pushed_transcript(store)
    assert transcript.sentenceList[0].text == "訂正された文"
    assert len(server.pushed_files()) == 1


async def test_a_body_starting_with_a_utf8_byte_order_mark_is_stored(
    server: PushServer, store: LocalRepository
) -> None:
    # Before: 400 invalid_json ("expected value at line 1 column 1"), and the push was lost.
    # RFC 8259 8.1 lets a parser ignore one BOM; a second is no JSON.
    response = await post(server, b"\xef\xbb\xbf" + PAGE_EXAMPLE.encode())
    assert response.status_code == 200, response.text
    assert response.json()["stored"] == [
        {"tenantId": "05053698333", "sessionId": 942125, "recordId": 1, "sentences": 2}
    ]
    assert (await pushed_transcript(store)).sentenceList[0].text == "私はコムデザイン一郎です"
    twice = await post(server, b"\xef\xbb\xbf" * 2 + PAGE_EXAMPLE.encode())
    assert twice.status_code == 400
    assert twice.json()["error"]["code"] == "invalid_json"


async def test_the_key_is_compared_in_constant_time(
    server: PushServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((type(a), type(b)))
        return real(a, b)

    monkeypatch.setattr(push_module.hmac, "compare_digest", spy)
    wrong = await post(server, PAGE_EXAMPLE, {**JSON, "Authorization": "x" * len(PUSH_KEY)})
    right = await post(server, PAGE_EXAMPLE)
    assert (wrong.status_code, right.status_code) == (401, 200)
    assert compared == [(bytes, bytes), (bytes, bytes)]


def deep(levels: int) -> str:
    return '{"conversation": ' + "[" * levels + "]" * levels + "}"


def with_change(path: list[Any], value: Any) -> str:
    """The page's example with one value replaced (or removed when ``value`` is ``...``)."""
    body = example()
    target: Any = body
    for part in path[:-1]:
        target = target[part]
    if value is ...:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(body, ensure_ascii=False)


SENTENCE = ["conversation", "recordList", 0, "sentenceList", 0]
HOSTILE: list[tuple[str, bytes | str, dict[str, str], int, str]] = [
    ("no key", PAGE_EXAMPLE, {"Content-Type": "application/json"}, 401, "unauthorized"),
    ("wrong key", PAGE_EXAMPLE, {**JSON, "Authorization": "Bearer not-the-key"}, 401, "unauthorized"),
    ("key as a prefix", PAGE_EXAMPLE, {**JSON, "Authorization": PUSH_KEY[:-1]}, 401, "unauthorized"),
    (
        "not json content type",
        PAGE_EXAMPLE,
        {**JSON, "Content-Type": "text/plain"},
        415,
        "unsupported_media_type",
    ),
    (
        "another charset",
        PAGE_EXAMPLE,
        {**JSON, "Content-Type": "application/json; charset=shift_jis"},
        415,
        "unsupported_media_type",
    ),
    ("not json", "conversation=1", JSON, 400, "invalid_json"),
    ("empty body", b"", JSON, 400, "invalid_json"),
    ("invalid utf-8", PAGE_EXAMPLE.encode().replace("一郎".encode(), b"\xff\xfe"), JSON, 400, "invalid_json"),
    ("utf-16", PAGE_EXAMPLE.encode("utf-16"), JSON, 400, "invalid_json"),
    (
        "NaN",
        with_change(["conversation", "direction"], 0).replace('"direction": 0', '"direction": NaN'),
        JSON,
        400,
        "invalid_json",
    ),
    (
        "Infinity",
        with_change(["conversation", "x"], 0).replace('"x": 0', '"x": Infinity'),
        JSON,
        400,
        "invalid_json",
    ),
    ("deeply nested", deep(100_000), JSON, 400, "invalid_json"),
    (
        "a lone surrogate",
        with_change([*SENTENCE, "text"], "x").replace('"x"', '"\\ud800"'),
        JSON,
        400,
        "invalid_json",
    ),
    ("an array", "[]", JSON, 422, "invalid_push"),
    ("missing conversation", '{"description": ""}', JSON, 422, "invalid_push"),
    ("missing recordList", with_change(["conversation", "recordList"], ...), JSON, 422, "invalid_push"),
    ("empty recordList", with_change(["conversation", "recordList"], []), JSON, 422, "invalid_push"),
    (
        "sentenceList a string",
        with_change(["conversation", "recordList", 0, "sentenceList"], "x"),
        JSON,
        422,
        "invalid_push",
    ),
    ("text a number", with_change([*SENTENCE, "text"], 5), JSON, 422, "invalid_push"),
    ("speakerId a bool", with_change([*SENTENCE, "speakerId"], True), JSON, 422, "invalid_push"),
    ("sequence a float", with_change([*SENTENCE, "sequence"], 1.5), JSON, 422, "invalid_push"),
    ("sessionId not digits", with_change(["conversation", "sessionId"], "94x"), JSON, 422, "invalid_push"),
    (
        "not a time",
        with_change([*SENTENCE, "startTime"], "yesterday\nFAKE LOG LINE"),
        JSON,
        422,
        "invalid_push",
    ),
    (
        "a time without zone",
        with_change([*SENTENCE, "startTime"], "2024-06-21T08:27:38"),
        JSON,
        422,
        "invalid_push",
    ),
    (
        "end before start",
        with_change([*SENTENCE, "endTime"], "2024-06-21T08:27:37.000Z"),
        JSON,
        422,
        "invalid_push",
    ),
    (
        # 31 days of retention added to it would pass the year 9999: a 422, not a bare 500
        "connectTime at the end of time",
        with_change(["conversation", "connectTime"], "9999-12-31T23:59:59.999Z"),
        JSON,
        422,
        "invalid_push",
    ),
    (
        "a time whose UTC is before the year 1",
        with_change([*SENTENCE, "startTime"], "0001-01-01T00:00:00+09:00"),
        JSON,
        422,
        "invalid_push",
    ),
    (
        "tenant with path characters",
        with_change(["conversation", "tenantId"], "../../etc"),
        JSON,
        422,
        "invalid_push",
    ),
    ("tenant empty", with_change(["conversation", "tenantId"], ""), JSON, 422, "invalid_push"),
    ("sessionId 2**70", with_change(["conversation", "sessionId"], 2**70), JSON, 422, "invalid_push"),
    ("recordId 0", with_change(["conversation", "recordList", 0, "recordId"], 0), JSON, 422, "invalid_push"),
    (
        # Before: stored, and served at offset 0 (clamped), every sentence at 00:00.0.
        "a sentence over a minute before connectTime",
        with_change([*SENTENCE, "startTime"], "2024-06-21T08:26:34.000Z"),
        JSON,
        422,
        "invalid_push",
    ),
    (
        # Before: stored, and served at minute 4,192,375,890 of a one-minute call.
        "a sentence centuries after disconnectTime",
        with_change([*SENTENCE, "endTime"], "9998-01-01T00:00:00Z"),
        JSON,
        422,
        "invalid_push",
    ),
    (
        "tenant not allowed",
        with_change(["conversation", "tenantId"], "0120000000"),
        JSON,
        403,
        "tenant_not_allowed",
    ),
]


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [case[1:] for case in HOSTILE],
    ids=[case[0] for case in HOSTILE],
)
async def test_a_bad_push_is_a_clear_4xx_and_stores_nothing(
    server: PushServer, body: bytes | str, headers: dict[str, str], status: int, code: str
) -> None:
    response = await post(server, body, headers)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert PUSH_KEY not in response.text
    assert "FAKE LOG LINE" not in response.text  # nothing of the body is echoed
    assert server.pushed_files() == []


async def test_validation_errors_say_where(server: PushServer) -> None:
    response = await post(server, with_change([*SENTENCE, "endTime"], "2024-06-21T08:27:37.000Z"))
    assert "conversation.recordList.0.sentenceList.0" in response.json()["error"]["message"]
    assert "endTime is before startTime" in response.json()["error"]["message"]


async def test_a_wrong_host_or_method_is_refused(server: PushServer) -> None:
    evil = await post(server, PAGE_EXAMPLE, {**JSON, "Host": "evil.example:80"})
    assert (evil.status_code, evil.json()["error"]["code"]) == (421, "host_not_allowed")
    origin = await post(server, PAGE_EXAMPLE, {**JSON, "Origin": "http://evil.example"})
    assert (origin.status_code, origin.json()["error"]["code"]) == (403, "origin_not_allowed")
    async with httpx.AsyncClient() as http:
        get = await http.get(server.url, headers=JSON)
    assert (get.status_code, get.json()["error"]["code"], get.headers["allow"]) == (
        405,
        "method_not_allowed",
        "POST",
    )
    assert server.pushed_files() == []


async def test_an_expired_call_is_not_stored(store: LocalRepository, clock: Clock) -> None:
    clock.now = PUSHED_AT + timedelta(days=31)
    async with push_server(store) as server:
        response = await post(server, PAGE_EXAMPLE)
        assert (response.status_code, response.json()["error"]["code"]) == (422, "recording_expired")
        assert server.pushed_files() == []


async def test_a_declared_length_over_the_bound_is_refused_unread(store: LocalRepository) -> None:
    async with push_server(store, push_max_bytes=4096) as server:
        head = (
            f"POST /cte1/speech-recognition HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n".encode()
            + f"Authorization: {PUSH_KEY}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n"
        )
        reply = await anyio.to_thread.run_sync(lambda: raw_exchange(server.port, head, body_chunks=0))
        assert reply.startswith(b"HTTP/1.1 413")
        assert b'"payload_too_large"' in reply
        assert server.pushed_files() == []


async def test_an_endless_chunked_body_is_cut_at_the_bound(store: LocalRepository) -> None:
    async with push_server(store, push_max_bytes=4096) as server:
        head = (
            f"POST /cte1/speech-recognition HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n".encode()
            + f"Authorization: {PUSH_KEY}\r\n".encode()
            + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        # Up to 64 MiB offered; the server answers and closes long before (it reads ~4 KiB).
        sent: list[int] = []
        reply = await anyio.to_thread.run_sync(
            lambda: raw_exchange(server.port, head, body_chunks=1024, sent=sent)
        )
        assert sent[0] < 1024  # the server closed the connection: the client could not send it all
        assert reply.startswith(b"HTTP/1.1 413")
        assert b'"payload_too_large"' in reply
        assert server.pushed_files() == []


def raw_exchange(port: int, head: bytes, *, body_chunks: int, sent: list[int] | None = None) -> bytes:
    """Send ``head`` and then up to ``body_chunks`` chunks of 64 KiB of '[' (stopping when the server
    closes; how many went is appended to ``sent``), and return what the server answered."""
    chunk = b"10000\r\n" + b"[" * 0x10000 + b"\r\n"
    count = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        try:
            for _ in range(body_chunks):
                sock.sendall(chunk)
                count += 1
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading: what we wanted
        if sent is not None:
            sent.append(count)
        reply = b""
        try:
            while data := sock.recv(65536):
                reply += data
        except ConnectionResetError:
            pass
    return reply


async def test_each_push_is_audited_without_its_text(store: LocalRepository, tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    async with push_server(store, audit_log=log) as server:
        assert (await post(server, PAGE_EXAMPLE)).status_code == 200
        assert (await post(server, PAGE_EXAMPLE, {"Content-Type": "application/json"})).status_code == 401
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(line["operation"], line["call"], line["outcome"]) for line in lines] == [
        ("push", "05053698333/942125/1", "ok"),
        ("push", "05053698333/942125/1", "duplicate_record_id"),
        ("push", None, "unauthorized"),
    ]
    assert lines[0]["identity"].startswith("push-key-sha256:")
    assert lines[2]["identity"] is None
    text = log.read_text()
    assert "一郎" not in text
    assert "パソコン" not in text
    assert PUSH_KEY not in text


async def test_a_push_the_audit_log_cannot_record_is_answered_503_saying_it_was_stored(
    store: LocalRepository, tmp_path: Path
) -> None:
    log = tmp_path / "audit.jsonl"
    async with push_server(store, audit_log=log) as server:
        log.unlink()
        log.mkdir()  # the log replaced by a directory while the server runs
        response = await post(server, PAGE_EXAMPLE)
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "storage_error"
        assert "was stored" in error["message"]
        assert "send the push again" in error["message"]
        assert len(server.pushed_files()) == 1  # what the answer says
        log.rmdir()  # a new path: the next line creates it
        assert (await post(server, PAGE_EXAMPLE)).status_code == 200  # sent again: recorded
    assert [json.loads(line)["outcome"] for line in log.read_text().splitlines()] == [
        "ok",
        "duplicate_record_id",
    ]


async def test_a_fault_of_the_servers_is_a_json_500_and_an_audit_line(
    store: LocalRepository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug, not the body's fault")

    monkeypatch.setattr(store, "write_pushed_transcript", broken)  # a corner no real input reaches
    log = tmp_path / "audit.jsonl"
    async with push_server(store, audit_log=log) as server:
        response = await post(server, PAGE_EXAMPLE)
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "a bug" not in response.text
    [line] = [json.loads(line) for line in log.read_text().splitlines()]
    assert (line["outcome"], line["identity"].startswith("push-key-sha256:")) == ("internal_error", True)


async def test_the_body_is_validated_off_the_event_loop(
    server: PushServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A body at the largest CTE1_PUSH_MAX_BYTES takes seconds to validate: not on the loop every
    # MCP request of this server shares.
    threads: list[threading.Thread] = []
    parse = push_module._parse

    def watched(body: bytes) -> Any:
        threads.append(threading.current_thread())
        return parse(body)

    monkeypatch.setattr(push_module, "_parse", watched)
    assert (await post(server, PAGE_EXAMPLE)).status_code == 200
    assert threads
    assert threads[0] is not threading.main_thread()


async def test_what_the_service_gets_follows_the_transcript_source(
    server: PushServer, store: LocalRepository
) -> None:
    assert (await post(server, PAGE_EXAMPLE)).status_code == 200
    base = {"base_url": "https://cte1.example.jp", "source_uuid": DEFAULT_SOURCE_UUID, "api_key": "k"}
    platform = load_settings(**base, channel_roles="customer,agent")
    pushed = await platform_push(platform, store, KEY)
    assert pushed is not None
    transcript = to_transcript(pushed, roles=platform.channel_roles)
    assert [(s.speaker, s.channel) for s in transcript.sentenceList] == [("agent", 1), ("customer", 0)]
    assert await platform_push(load_settings(**base, transcript_source="local"), store, KEY) is None
    assert await platform_push(platform, store, CallKey("05053698333", 942125, 2)) is None
    await store.write_pushed_transcript(KEY, b'{"not": "a stored push"}', available_until=None)
    assert await platform_push(platform, store, KEY) is None  # unreadable: as if none was pushed


def moved_sentence(
    body: dict[str, Any], seconds: float, record: int = 0, sentence: int = 0
) -> dict[str, Any]:
    """``body`` with one sentence moved by ``seconds`` (both its times)."""
    pushed = body["conversation"]["recordList"][record]["sentenceList"][sentence]
    for name in ("startTime", "endTime"):
        moment = datetime.fromisoformat(pushed[name]) + timedelta(seconds=seconds)
        pushed[name] = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return body


async def test_a_sentence_outside_its_call_refuses_the_push_naming_record_and_sequence(
    server: PushServer,
) -> None:
    # The example's first sentence is 4.4 s after connectTime: 65 s earlier is outside the call.
    early = await post(server, json.dumps(moved_sentence(example(), -65)))
    assert early.status_code == 422, early.text
    assert early.json()["error"]["code"] == "invalid_push"
    assert (
        "recordList.0 (recordId 1) sentence 1: startTime is more than 60 s before connectTime"
        in early.json()["error"]["message"]
    )
    assert server.pushed_files() == []
    # Within the minute of clock skew: accepted.
    assert (await post(server, json.dumps(moved_sentence(example(), -60)))).status_code == 200


async def test_a_later_leg_may_talk_past_disconnect_time_but_not_a_day_after_connect_time(
    server: PushServer,
) -> None:
    # The page's example: its second leg already ends 7 s after disconnectTime, which looks like the
    # first leg's end; a second leg talking ten minutes past it is a transferred call, not an error.
    ten_minutes = moved_sentence(example(), 600, record=1, sentence=1)
    assert (await post(server, json.dumps(ten_minutes))).status_code == 200, "a later leg refused"
    body = example()
    del body["conversation"]["disconnectTime"]
    two_hours = moved_sentence(copy.deepcopy(body), 2 * 3600, sentence=1)
    assert (await post(server, json.dumps(two_hours))).status_code == 200
    next_day = await post(server, json.dumps(moved_sentence(example(), 25 * 3600, sentence=1)))
    assert next_day.status_code == 422, next_day.text
    assert (
        "recordList.0 (recordId 1) sentence 2: endTime is more than 24 h after connectTime"
        in next_day.json()["error"]["message"]
    )


async def test_a_record_with_no_sentences_is_skipped_and_an_earlier_push_kept(
    store: LocalRepository, tmp_path: Path
) -> None:
    # Before: stored with 0 sentences; get_call_transcript then served "Nobody's speech was
    # recognised" from cte1 instead of transcribing, and the earlier push was lost.
    log = tmp_path / "audit.jsonl"
    async with push_server(store, audit_log=log) as server:
        assert (await post(server, PAGE_EXAMPLE)).status_code == 200
        body = example()
        first, second = body["conversation"]["recordList"]
        first["sentenceList"] = []
        second["recordId"] = 2
        third = copy.deepcopy(first)
        third["recordId"] = 3
        body["conversation"]["recordList"].append(third)
        response = await post(server, json.dumps(body))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ok",
        "stored": [{"tenantId": "05053698333", "sessionId": 942125, "recordId": 2, "sentences": 2}],
        "skipped": [
            {"recordId": 1, "index": 0, "reason": "empty_sentence_list"},
            {"recordId": 3, "index": 2, "reason": "empty_sentence_list"},
        ],
    }
    kept = await pushed_transcript(store)  # recordId 1 as the first push stored it
    assert [s.text for s in kept.sentenceList] == ["私はコムデザイン一郎です", "パソコンの調子が悪いです"]
    assert await stored_push(store, CallKey("05053698333", 942125, 3)) is None  # local serves it
    outcomes = [(line["call"], line["outcome"]) for line in map(json.loads, log.read_text().splitlines())]
    assert outcomes[-3:] == [
        ("05053698333/942125/2", "ok"),
        ("05053698333/942125/1", "empty_sentence_list"),
        ("05053698333/942125/3", "empty_sentence_list"),
    ]


def with_records(count: int) -> str:
    body = example()
    record = body["conversation"]["recordList"][0]
    body["conversation"]["recordList"] = [{**record, "recordId": n} for n in range(1, count + 1)]
    return json.dumps(body, ensure_ascii=False)


async def test_a_push_of_more_than_100_records_is_refused_whole(server: PushServer) -> None:
    # Before: each record a file, fsync'd: 8,000 tiny records held the request for 16 s and left
    # 8,000 files in the store.
    response = await post(server, with_records(101))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_push"
    assert "conversation.recordList: has 101 records; one push accepts at most 100" in error["message"]
    assert server.pushed_files() == []
    assert (await post(server, with_records(100))).status_code == 200
    assert len(server.pushed_files()) == 100


def push_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == push_module.__name__ and r.levelno >= logging.WARNING
    ]


def audit_lines(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


async def eventually(condition: Any, seconds: float = 10.0) -> None:
    with anyio.fail_after(seconds):
        while not condition():
            await anyio.sleep(0.05)


UNAUTHORIZED = {
    "missing": "The Authorization header with the pre-shared push key is missing.",
    "wrong": "The push key in the Authorization header is not the one configured.",
}


async def test_unauthenticated_refusals_cost_a_line_then_one_summary_per_interval(
    store: LocalRepository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: every refused push without the key was a warning and an audit line, so anybody who
    # could reach the port grew the log and the audit file as fast as they liked.
    monkeypatch.setattr(push_module, "UNAUTHENTICATED_REPORT_SECONDS", 3.0)
    log = tmp_path / "audit.jsonl"

    async def refused(http: httpx.AsyncClient, kind: str) -> None:
        headers = {"Content-Type": "application/json"}
        if kind == "wrong":
            headers["Authorization"] = "Bearer not-the-key"
        response = await http.post(server.url, content=PAGE_EXAMPLE, headers=headers)
        # The answer is what it always was, for each of them.
        assert (response.status_code, response.headers["www-authenticate"]) == (401, "Bearer")
        assert response.json() == {"error": {"code": "unauthorized", "message": UNAUTHORIZED[kind]}}

    async with push_server(store, audit_log=log) as server, httpx.AsyncClient() as http:
        await refused(http, "wrong")
        async with anyio.create_task_group() as group:  # at once: well within the interval
            for n in range(49):
                group.start_soon(refused, http, "missing" if n % 2 else "wrong")
        assert push_warnings(caplog) == [
            f"refused a push to {DEFAULT_PUSH_PATH}: [unauthorized] {UNAUTHORIZED['wrong']}"
        ]
        assert [line["outcome"] for line in audit_lines(log)] == ["unauthorized"]
        await eventually(lambda: len(audit_lines(log)) == 2)  # the interval's end: the count
        summary = push_warnings(caplog)[1]
        assert summary.startswith(f"refused 49 more unauthenticated pushes to {DEFAULT_PUSH_PATH} since ")
        assert summary.endswith("([unauthorized] 49)")
        # Still refused by anybody: counted in the next interval, one audit line per code at its end.
        for _ in range(3):
            assert (await http.get(server.url)).status_code == 405
        evil = await http.post(server.url, content=PAGE_EXAMPLE, headers={**JSON, "Host": "evil.example"})
        assert evil.json()["error"]["code"] == "host_not_allowed"
        assert len(push_warnings(caplog)) == 2
        await eventually(lambda: len(audit_lines(log)) == 4)
    assert push_warnings(caplog)[2].endswith("([method_not_allowed] 3, [host_not_allowed] 1)")
    lines = audit_lines(log)
    assert [(line["outcome"], line.get("count")) for line in lines] == [
        ("unauthorized", None),
        ("unauthorized", 49),
        ("method_not_allowed", 3),
        ("host_not_allowed", 1),
    ]
    assert {(line["identity"], line["call"], line["resource"]) for line in lines} == {
        (None, None, DEFAULT_PUSH_PATH)
    }
    assert len(push_warnings(caplog)) == 3


async def test_a_flood_without_the_key_hides_no_refusal_of_the_key_holders(
    store: LocalRepository, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A push with the key is CT-e1's: each of its refusals stays a line of its own (the operator's
    # evidence, at the key holder's rate), however much junk arrives around it.
    log = tmp_path / "audit.jsonl"
    async with push_server(store, audit_log=log) as server, httpx.AsyncClient() as http:
        for _ in range(10):
            junk = await http.post(server.url, content=b"junk", headers={"Content-Type": "application/json"})
            assert junk.json()["error"]["code"] == "unauthorized"
            bad = await http.post(server.url, content=b"{not json", headers=JSON)
            assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_json")
        warnings = push_warnings(caplog)
        lines = audit_lines(log)
    assert len(warnings) == 11  # the first junk, and each of the key holder's ten
    assert sum("[invalid_json]" in w for w in warnings) == 10
    assert [(line["outcome"], line["identity"] is not None) for line in lines] == [
        ("unauthorized", False),
        *[("invalid_json", True)] * 10,
    ]
