"""The shared CT-e1 client against a raw loopback server: the request, HTTP statuses, transport
failures, Retry-After, redaction and TLS configuration errors."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
import trustme

from cte1_mcp import __version__
from cte1_mcp.cte1.audio_data import ACCEPT
from cte1_mcp.cte1.client import retry_after_seconds
from cte1_mcp.cte1.redaction import Redactor
from cte1_mcp.errors import (
    ConfigurationError,
    Cte1Error,
    RateLimited,
    UpstreamAuthFailed,
    UpstreamIpNotAllowed,
    UpstreamRejected,
    UpstreamTlsError,
    UpstreamUnavailable,
)
from cte1_mcp.settings import load_settings
from cte1_mcp.simulator import RunningSimulator
from tests.helpers.raw_upstream import (
    API_KEY,
    HOST,
    SOURCE_UUID,
    RawServer,
    Reply,
    assert_success,
    audio_part,
    failed,
    fetch,
    fetch_from,
    make_settings,
    metadata_part,
    multipart_body,
    multipart_reply,
    raw_server,
)

pytestmark = pytest.mark.anyio

CLIENT_LOGGER = "cte1_mcp.cte1.client"


@pytest.fixture
async def server() -> AsyncIterator[RawServer]:
    async with raw_server() as raw:
        yield raw


def logged_warnings(caplog: pytest.LogCaptureFixture) -> str:
    """The client module's WARNING records, checked for the key being nowhere in them."""
    text = "\n".join(
        r.getMessage() for r in caplog.records if r.name == CLIENT_LOGGER and r.levelno == logging.WARNING
    )
    assert API_KEY not in text.lower()
    return text


# --- the request ------------------------------------------------------------------------------------


async def test_sends_exactly_the_documented_request(server: RawServer, tmp_path: Path) -> None:
    audio = b"RIFF" + b"\x00" * 100
    server.reply(multipart_reply(multipart_body(metadata_part(), audio_part(audio))))
    run = await fetch(server, tmp_path, api_version="v1")
    assert_success(run, audio)
    [request] = server.requests
    assert request.method == "POST"
    assert request.target == f"/general/v1/{SOURCE_UUID}/call/audio_data"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == ACCEPT == "multipart/form-data, multipart/mixed, application/json"
    assert request.headers["user-agent"] == f"cte1-mcp/{__version__}"
    assert request.headers["accept-encoding"] == "identity"
    assert json.loads(request.body) == {"tenantId": "05053698341", "sessionId": 942125, "recordId": 1}


async def test_bearer_key_is_passed_through_and_base_path_and_version_kept(
    server: RawServer, tmp_path: Path
) -> None:
    server.reply(Reply(status=403, body=b"{}"))
    run = await fetch(server, tmp_path, api_key=f"Bearer {API_KEY}", api_version="v2")
    failed(run, UpstreamAuthFailed, "upstream_auth_failed")
    [request] = server.requests
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.target == f"/general/v2/{SOURCE_UUID}/call/audio_data"


# --- HTTP statuses ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (401, UpstreamAuthFailed, "upstream_auth_failed"),
        (402, UpstreamAuthFailed, "upstream_auth_failed"),
        (403, UpstreamAuthFailed, "upstream_auth_failed"),
        (404, UpstreamIpNotAllowed, "upstream_ip_not_allowed"),
        (429, RateLimited, "rate_limited"),
        (500, UpstreamUnavailable, "upstream_unavailable"),
        (502, UpstreamUnavailable, "upstream_unavailable"),
        (503, UpstreamUnavailable, "upstream_unavailable"),
        (400, UpstreamRejected, "upstream_rejected"),
        (405, UpstreamRejected, "upstream_rejected"),
        (422, UpstreamRejected, "upstream_rejected"),
    ],
)
async def test_http_status_classification(
    server: RawServer, tmp_path: Path, status: int, kind: type[Cte1Error], code: str
) -> None:
    raw = json.dumps({"status": "error", "description": f"説明 {status}"}, ensure_ascii=False).encode()
    server.reply(Reply(status=status, headers=[("Content-Type", "application/json")], body=raw))
    exc = failed(await fetch(server, tmp_path), kind, code)
    assert f"HTTP {status}" in exc.message
    assert exc.platform_message == f"説明 {status}"


async def test_429_retry_after_seconds(server: RawServer, tmp_path: Path) -> None:
    server.reply(Reply(status=429, headers=[("Retry-After", "7")], body=b"Too Many Requests"))
    exc = failed(await fetch(server, tmp_path), RateLimited, "rate_limited")
    assert exc.retry_after_seconds == 7
    assert "Retry after 7 s." in exc.render()


@pytest.mark.parametrize("headers", [[], [("Retry-After", "soon")]], ids=["absent", "unreadable"])
async def test_429_without_a_usable_retry_after_invents_none(
    server: RawServer, tmp_path: Path, headers: list[tuple[str, str]]
) -> None:
    """The service spaces the retry itself; the client must not make up a wait."""
    server.reply(Reply(status=429, headers=headers, body=b"Too Many Requests"))
    exc = failed(await fetch(server, tmp_path), RateLimited, "rate_limited")
    assert exc.retryable is True
    assert exc.retry_after_seconds is None
    assert "Retry after" not in exc.render()


async def test_429_retry_after_http_date(server: RawServer, tmp_path: Path) -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    server.reply(Reply(status=429, headers=[("Retry-After", format_datetime(when, usegmt=True))]))
    exc = failed(await fetch(server, tmp_path), RateLimited, "rate_limited")
    assert exc.retry_after_seconds is not None and 25 <= exc.retry_after_seconds <= 31


async def test_503_with_retry_after_and_html(server: RawServer, tmp_path: Path) -> None:
    page = b"<html><body><h1>503 Service Temporarily Unavailable</h1><hr>nginx</body></html>"
    server.reply(
        Reply(status=503, headers=[("Content-Type", "text/html"), ("Retry-After", "120")], body=page)
    )
    exc = failed(await fetch(server, tmp_path), UpstreamUnavailable, "upstream_unavailable")
    assert exc.retry_after_seconds == 120
    assert "HTTP 503; text/html: “503 Service Temporarily Unavailable nginx”" in exc.message


async def test_redirect_is_not_followed(
    server: RawServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    location = f"https://ct-e1.example/general?key={API_KEY}"
    page = b"<html><body><p>Moved to <a href='x'>ct-e1.example</a></p><address>Server at 127.0.0.1</address>"
    server.reply(
        Reply(status=301, headers=[("Location", location), ("Content-Type", "text/html")], body=page)
    )
    with caplog.at_level(logging.WARNING, logger=CLIENT_LOGGER):
        exc = failed(await fetch(server, tmp_path), UpstreamRejected, "upstream_rejected")
    assert "HTTP 301" in exc.message and "redirects are not followed" in exc.message
    assert "CTE1_BASE_URL" in exc.render() and "log" in exc.render()
    rendered = exc.render()
    assert HOST not in rendered and "ct-e1.example" not in rendered and "https://" not in exc.message
    assert exc.retryable is False
    assert len(server.requests) == 1
    # The operator still learns where it pointed, from the log, without the key.
    log = logged_warnings(caplog)
    assert "https://ct-e1.example/general?key=[redacted]" in log and HOST in log


async def test_a_proxy_page_naming_the_host_has_it_hidden(server: RawServer, tmp_path: Path) -> None:
    """Apache's error pages end "Server at <host> Port 443"; the host must not reach the client."""
    page = b"<html><body><h1>Bad Gateway</h1><address>Apache Server at 127.0.0.1 Port 443</address></body></html>"
    server.reply(Reply(status=502, headers=[("Content-Type", "text/html")], body=page))
    exc = failed(await fetch(server, tmp_path), UpstreamUnavailable, "upstream_unavailable")
    assert "Apache Server at [CT-e1 host] Port 443" in exc.message


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("5", 5.0),
        (" 0 ", 0.0),
        ("1.5", 1.5),
        ("600", 600.0),
        ("601", 600.0),
        ("999999999", 600.0),
        ("1e308", 600.0),
        ("-3", None),
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
        ("inf", None),
        ("-inf", None),
        ("1" * 5000, None),
    ],
)
def test_retry_after_parsing_is_capped(value: str | None, seconds: float | None) -> None:
    """Negative, non-finite or unreadable: None (the caller falls back to its spacing)."""
    assert retry_after_seconds(value, cap=600) == seconds


def test_retry_after_dates() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_seconds("Thu, 01 Jan 2026 00:01:00 GMT", cap=600, now=now) == 60.0
    assert retry_after_seconds("Wed, 31 Dec 2025 23:59:00 GMT", cap=600, now=now) is None  # past
    assert retry_after_seconds("Fri, 31 Dec 9999 23:59:59 GMT", cap=600, now=now) == 600.0


@pytest.mark.parametrize(("header", "cap", "shown"), [("999999999", None, 600), ("1e308", 30, 30)])
async def test_429_with_an_absurd_retry_after_is_capped_and_renders_sanely(
    server: RawServer, tmp_path: Path, header: str, cap: float | None, shown: int
) -> None:
    server.reply(Reply(status=429, headers=[("Retry-After", header)], body=b"Too Many Requests"))
    options = {} if cap is None else {"max_retry_after_seconds": cap}
    exc = failed(await fetch(server, tmp_path, **options), RateLimited, "rate_limited")
    assert exc.retry_after_seconds == shown
    assert f"Retry after {shown} s." in exc.render()
    assert len(exc.render()) < 500


async def test_a_negative_retry_after_invents_no_wait(server: RawServer, tmp_path: Path) -> None:
    server.reply(Reply(status=429, headers=[("Retry-After", "-30")], body=b"Too Many Requests"))
    exc = failed(await fetch(server, tmp_path), RateLimited, "rate_limited")
    assert exc.retry_after_seconds is None
    assert "Retry after" not in exc.render()


# --- redaction ------------------------------------------------------------------------------------


def test_host_hiding_matches_whole_host_names_only(tmp_path: Path) -> None:
    redactor = Redactor(make_settings("https://ct-e1.invalid", tmp_path))
    words = "ct-e1.invalid: down; CT-E1.INVALID:443 too; not api.ct-e1.invalid.net nor my-ct-e1.invalid"
    assert redactor.for_client(words) == (
        "[CT-e1 host]: down; [CT-e1 host]:443 too; not api.ct-e1.invalid.net nor my-ct-e1.invalid"
    )


@pytest.mark.parametrize(
    "configured", [API_KEY, f"Bearer {API_KEY}", f"bearer {API_KEY.upper()}"], ids=["bare", "bearer", "upper"]
)
def test_the_key_is_redacted_in_any_letter_case_and_with_its_scheme(tmp_path: Path, configured: str) -> None:
    redactor = Redactor(make_settings("https://ct-e1.invalid", tmp_path, api_key=configured))
    text = f"a {API_KEY} b BEARER {API_KEY.upper()} c Bearer\t{API_KEY.title()} d"
    assert redactor.secrets(text) == "a [redacted] b [redacted] c [redacted] d"


# --- transport failures --------------------------------------------------------------------------------


async def test_connection_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    with caplog.at_level(logging.WARNING, logger=CLIENT_LOGGER):
        run = await fetch_from(make_settings(f"http://{HOST}:{port}", tmp_path))
    exc = run.error
    assert isinstance(exc, UpstreamUnavailable)
    assert (exc.code, exc.retryable) == ("upstream_unavailable", True)
    assert exc.message.startswith("Could not connect to CT-e1: ")
    assert HOST not in exc.render() and str(port) not in exc.render()
    assert API_KEY not in exc.render()
    assert f"could not connect to CT-e1 at {HOST}" in logged_warnings(caplog)


async def test_read_timeout_before_the_answer(
    server: RawServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server.reply(Reply(status=200, delay=1.0))
    with caplog.at_level(logging.WARNING, logger=CLIENT_LOGGER):
        exc = failed(
            await fetch(server, tmp_path, timeout_seconds=0.2), UpstreamUnavailable, "upstream_unavailable"
        )
    assert exc.message == "CT-e1 did not answer in time (read timeout, 0.2 s)."
    assert HOST not in exc.render()
    assert f"CT-e1 at {HOST} did not answer in time (read timeout, 0.2 s)" in logged_warnings(caplog)


async def test_read_timeout_mid_audio(server: RawServer, tmp_path: Path) -> None:
    body = multipart_body(metadata_part(), audio_part(b"\x00" * 4096))
    server.reply(multipart_reply(body, chunks=[len(body) - 100, 100], pause=1.0))
    run = await fetch(server, tmp_path, timeout_seconds=0.2)
    exc = failed(run, UpstreamUnavailable, "upstream_unavailable")
    assert "timeout" in exc.message


# --- configuration errors are not retried --------------------------------------------------------------


async def test_https_to_a_plain_http_port_is_a_tls_error_not_retried(
    simulator: RunningSimulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A real plain-HTTP server (the simulator) answers a ClientHello with an HTTP 400."""
    url = simulator.url.replace("http://", "https://")
    with caplog.at_level(logging.WARNING, logger=CLIENT_LOGGER):
        run = await fetch_from(make_settings(url, tmp_path))
    exc = failed(run, UpstreamTlsError, "upstream_tls_error")
    assert exc.retryable is False
    assert "TLS" in exc.message and "WRONG_VERSION_NUMBER" in exc.message
    assert "CTE1_BASE_URL" in exc.next_step and "CTE1_CA_BUNDLE" in exc.next_step
    assert "try again" not in exc.render().lower()
    assert "TLS connection to CT-e1 at 127.0.0.1 failed" in logged_warnings(caplog)


async def test_http_to_a_tls_port_is_a_tls_error_not_retried(server: RawServer, tmp_path: Path) -> None:
    """What a TLS server answers to a plain HTTP request: an alert record, not a status line."""
    server.reply(Reply(raw=b"\x15\x03\x01\x00\x02\x02\x46"))
    exc = failed(await fetch(server, tmp_path), UpstreamTlsError, "upstream_tls_error")
    assert exc.retryable is False
    assert "may expect TLS (https://)" in exc.message


async def test_a_plain_server_disconnect_stays_temporary(server: RawServer, tmp_path: Path) -> None:
    server.reply(Reply(raw=b""))
    exc = failed(await fetch(server, tmp_path), UpstreamUnavailable, "upstream_unavailable")
    assert exc.retryable is True


def test_redaction_leaves_other_text_alone(tmp_path: Path) -> None:
    redactor = Redactor(make_settings("https://ct-e1.invalid", tmp_path))
    assert redactor.for_client("コムデザイン一郎 05053698341") == "コムデザイン一郎 05053698341"


@pytest.mark.parametrize(
    ("content", "fragment"), [(None, "does not exist"), (b"not a pem", "not a readable PEM")]
)
def test_a_ca_bundle_that_cannot_be_loaded_is_refused_at_start_up(
    tmp_path: Path, content: bytes | None, fragment: str
) -> None:
    bundle = tmp_path / "ca.pem"
    if content is not None:
        bundle.write_bytes(content)
    with pytest.raises(ConfigurationError) as caught:
        load_settings(
            base_url="https://ct-e1.invalid", source_uuid=SOURCE_UUID, api_key=API_KEY, ca_bundle=bundle
        )
    assert "CTE1_CA_BUNDLE" in caught.value.message and fragment in caught.value.message


async def test_plain_http_never_loads_the_ca_bundle(server: RawServer, tmp_path: Path) -> None:
    """Over http:// (the simulator on loopback) there is no certificate to check: a CA bundle
    that became unreadable after start-up does not fail the download."""
    bundle = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(bundle))
    settings = make_settings(server.url, tmp_path / "cache", ca_bundle=bundle)  # checked here: it loads
    bundle.unlink()
    audio = b"RIFF" + b"\x00" * 100
    server.reply(multipart_reply(multipart_body(metadata_part(), audio_part(audio))))
    assert_success(await fetch_from(settings), audio)
