"""``cte1-mcp check``: one real request, and a verdict that names the actual cause."""

from __future__ import annotations

import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from cte1_mcp.check import judge, run_check
from cte1_mcp.coordination.local import RequestSpacer
from cte1_mcp.cte1.redaction import Redactor
from cte1_mcp.settings import Settings
from cte1_mcp.simulator import DEFAULT_API_KEY, DEFAULT_SOURCE_UUID
from cte1_mcp.simulator.calls import FOREIGN_TENANT
from tests.helpers.raw_upstream import Reply, make_settings, raw_server
from tests.mcp_harness import server_env

CHECK = [sys.executable, "-m", "cte1_mcp", "check"]


def check(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CHECK, *args], env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


def verdict(done: subprocess.CompletedProcess[str]) -> str:
    return next(line for line in done.stderr.splitlines() if line.startswith("verdict: ")).split(": ")[1]


@pytest.fixture
def env(simulator: Any, tmp_path: Path) -> dict[str, str]:
    return server_env(simulator.url, tmp_path / "cache")


def test_a_right_configuration_gets_the_documented_200_failure(env: dict[str, str], simulator: Any) -> None:
    done = check(env)
    assert done.returncode == 0, done.stderr
    assert verdict(done) == "ok"
    assert "HTTP 200 failure" in done.stderr
    assert len(simulator.state.requests) == 1  # exactly one request
    assert DEFAULT_API_KEY not in done.stderr + done.stdout
    assert done.stdout == ""
    assert "transcription model: none (CTE1_ASR_MODEL is not set" in done.stderr


def test_a_real_call_is_a_success_without_downloading_it(env: dict[str, str], simulator: Any) -> None:
    done = check(env, "--call", "05053698341/942125/1")
    assert done.returncode == 0, done.stderr
    assert "recording (multipart)" in done.stderr
    (request,) = simulator.state.requests
    assert request.body == {"tenantId": "05053698341", "sessionId": 942125, "recordId": 1}
    assert not list((Path(env["CTE1_CACHE_DIR"])).rglob("*.wav"))  # nothing stored


def test_proxy_variables_are_ignored_as_the_server_ignores_them(env: dict[str, str], simulator: Any) -> None:
    # Before: check's own client honoured HTTP(S)_PROXY/ALL_PROXY (the server's does not), so with
    # a proxy set it diagnosed the proxy, not the connection the server makes.
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}"
    proxied = {k: v for k, v in env.items() if k.lower() != "no_proxy"}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        proxied[name] = dead
    done = check(proxied)
    assert (done.returncode, verdict(done)) == (0, "ok"), done.stderr
    assert len(simulator.state.requests) == 1


def test_a_wrong_key(env: dict[str, str]) -> None:
    done = check({**env, "CTE1_API_KEY": "not-the-key"})
    assert done.returncode == 1
    assert verdict(done) == "key_refused"
    assert "HTTP 403" in done.stderr
    assert "not-the-key" not in done.stderr


def test_a_wrong_key_is_said_refused_with_what_to_do(env: dict[str, str]) -> None:
    # Before: the second check's wait spoke of "the request spacing shared with other servers
    # using this key" (a key the platform had just refused), once per second.
    wrong = {**env, "CTE1_API_KEY": "not-the-key", "CTE1_MIN_INTERVAL_SECONDS": "5"}
    check(wrong)
    done = check(wrong)  # well within 5 s of the first: it waits
    assert verdict(done) == "key_refused"
    assert "the platform refused the API key" in done.stderr
    assert "CTE1_API_KEY_FILE" in done.stderr and "run `cte1-mcp check` again" in done.stderr
    assert "shared" not in done.stderr and "other servers" not in done.stderr
    assert done.stderr.count("waiting") == 1, done.stderr


def test_a_wrong_source_uuid_is_a_404_naming_both_causes(env: dict[str, str]) -> None:
    done = check({**env, "CTE1_SOURCE_UUID": "00000000-0000-4000-8000-000000000000"})
    assert done.returncode == 1
    assert verdict(done) == "not_found"
    assert "allow-listed" in done.stderr
    assert "CTE1_SOURCE_UUID" in done.stderr


def test_a_wrong_version(env: dict[str, str]) -> None:
    done = check({**env, "CTE1_API_VERSION": "v2"})
    assert done.returncode == 1
    assert verdict(done) == "not_found"


def test_tls_to_a_plain_http_port(env: dict[str, str], simulator: Any) -> None:
    done = check({**env, "CTE1_BASE_URL": simulator.url.replace("http://", "https://")})
    assert done.returncode == 1
    assert verdict(done) == "tls"
    assert "does not speak TLS" in done.stderr
    assert len(simulator.state.requests) == 0


def test_nothing_listening(env: dict[str, str]) -> None:
    done = check({**env, "CTE1_BASE_URL": "http://127.0.0.1:9"})
    assert done.returncode == 1
    assert verdict(done) == "unreachable"


def test_a_broken_transcription_model_exits_2_before_any_request(
    env: dict[str, str], simulator: Any, tmp_path: Path
) -> None:
    done = check(
        {**env, "CTE1_ASR_MODELS_DIR": str(tmp_path / "models"), "CTE1_ASR_MODEL": "reazonspeech-k2-v2"}
    )
    assert done.returncode == 2
    assert "CTE1_ASR_MODEL: no model named 'reazonspeech-k2-v2' is installed" in done.stderr
    assert "`cte1-mcp models pull reazonspeech-k2-v2`" in done.stderr
    assert len(simulator.state.requests) == 0


def test_a_bad_configuration_exits_2_before_any_request(env: dict[str, str], simulator: Any) -> None:
    done = check({**env, "CTE1_BASE_URL": simulator.url + "/general/v1"})
    assert done.returncode == 2
    assert "CTE1_BASE_URL" in done.stderr
    assert "built by the server" in done.stderr
    assert len(simulator.state.requests) == 0


def test_checks_share_the_spacing(make_simulator: Any, tmp_path: Path) -> None:
    # A simulator that answers 429 to requests closer than 1 s: the second check must wait for
    # the spacing it shares (through the cache directory) with the first.
    strict = make_simulator(min_interval=1.0)
    env = server_env(strict.url, tmp_path / "cache", CTE1_MIN_INTERVAL_SECONDS="1")
    first, second = check(env), check(env)
    assert (first.returncode, second.returncode) == (0, 0), second.stderr
    assert [r.status for r in strict.state.requests] == [200, 200]


@pytest.mark.parametrize(
    ("status", "content_type", "body", "expected"),
    [
        (200, "application/json", b'{"status": "error"}', "ok"),  # a 200 failure without a text
        (200, "text/html", b"<html><title>Proxy login</title></html>", "unexpected"),
        (302, "text/html", b"", "unexpected"),
        (502, "text/plain", b"Bad Gateway", "unexpected"),
        (429, "application/json", b"{}", "rate_limited"),
        (401, "application/json", b"{}", "key_refused"),
        (
            200,
            "application/json",
            '{"status": "error", "description": "リクエスト間隔が短すぎます"}'.encode(),
            "rate_limited",
        ),
    ],
)
def test_answers_the_api_does_not_document_are_not_ok(
    status: int, content_type: str, body: bytes, expected: str
) -> None:
    settings = Settings(base_url="https://cte1.example.jp", source_uuid=DEFAULT_SOURCE_UUID, api_key="k" * 32)
    assert judge(status, content_type, body, Redactor(settings)).verdict.value == expected


@pytest.mark.anyio
async def test_a_retry_after_date_holds_back_the_shared_spacing(tmp_path: Path) -> None:
    # Before: check parsed Retry-After itself, as seconds only, so the HTTP-date form the server's
    # client honours was ignored and the next server sharing the key asked again at once.
    when = datetime.now(UTC) + timedelta(seconds=120)
    async with raw_server() as server:
        server.reply(Reply(429, [("Retry-After", format_datetime(when, usegmt=True))], b"{}"))
        spacer = RequestSpacer(0)
        result = await run_check(make_settings(server.url, tmp_path), spacer)
    assert result.verdict.value == "rate_limited"
    assert 100 < await spacer.deferred_for() <= 120


def test_the_transcription_model_is_loaded_once(env: dict[str, str], simulator: Any, tmp_path: Path) -> None:
    # Before: files with a model's names and junk inside were reported as fine; only a
    # transcription found out. Start-up stays a files-and-checksums check; `check` loads.
    from tests.helpers import tiny_transducer

    good = tiny_transducer.build(tmp_path / "tiny").directory
    done = check({**env, "CTE1_ASR_MODEL": str(good)})
    assert done.returncode == 0, done.stderr
    assert "transcription model: sherpa-onnx tiny: directory" in done.stderr
    assert "; loads (" in done.stderr
    junk = tmp_path / "junk"
    junk.mkdir()
    for name in ("encoder-tiny.onnx", "decoder-tiny.onnx", "joiner-tiny.onnx", "tokens.txt"):
        (junk / name).write_bytes(b"junk\n")
    done = check({**env, "CTE1_ASR_MODEL": str(junk)})
    assert done.returncode == 1, done.stderr
    assert "; does NOT load: [transcription_unavailable]" in done.stderr
    assert verdict(done) == "ok"  # the platform part is still diagnosed
    assert len(simulator.state.requests) == 2
    assert "Traceback" not in done.stderr


def test_an_unreachable_redis_is_a_verdict_not_a_traceback(
    env: dict[str, str], simulator: Any, tmp_path: Path
) -> None:
    # Before: a 73-line ExceptionGroup traceback ending in CoordinationUnavailable.
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    done = check({**env, "CTE1_REDIS_URL": f"redis://:hunter2-pw@127.0.0.1:{port}/0"})
    assert done.returncode == 1, done.stderr
    assert verdict(done) == "redis_unreachable"
    assert "Redis unreachable" in done.stderr
    assert "Next: Check that the Redis server CTE1_REDIS_URL names is running" in done.stderr
    assert "Traceback" not in done.stderr
    assert "hunter2-pw" not in done.stderr + done.stdout
    assert simulator.state.requests == []


@pytest.mark.parametrize("how", ["allowed_tenants", "call"])
def test_a_named_tenant_the_key_may_not_read_is_not_ok(env: dict[str, str], how: str) -> None:
    # Before: verdict ok, "Nothing to do", exit 0, for 許可されていないテナントの情報要求です.
    if how == "allowed_tenants":
        done = check({**env, "CTE1_ALLOWED_TENANTS": FOREIGN_TENANT})
    else:
        done = check(env, "--call", f"{FOREIGN_TENANT}/942125/1")
    assert done.returncode == 1, done.stderr
    assert verdict(done) == "tenant_refused"
    assert "許可されていないテナント" in done.stderr
    assert f"this key may not read tenant {FOREIGN_TENANT}" in done.stderr


def test_the_probes_own_placeholder_tenant_refused_is_still_ok(env: dict[str, str]) -> None:
    # No tenant named: the probe asks for tenant "0", which the platform may refuse: documented.
    done = check(env)
    assert "許可されていないテナント" in done.stderr
    assert (done.returncode, verdict(done)) == (0, "ok")
