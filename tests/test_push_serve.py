"""The push settings and route as ``cte1-mcp serve`` starts them: HTTP only, with a key, exit 2 otherwise."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from cte1_mcp.errors import ConfigurationError
from cte1_mcp.settings import load_settings
from tests.helpers.push_server import PUSH_KEY, example
from tests.mcp_harness import server_env, stdio_server
from tests.test_mcp_http import http_server

pytestmark = pytest.mark.anyio


def recent_push() -> dict[str, Any]:
    """The page's example moved to an hour ago (the real server's clock), within the 31 days."""
    body = example()
    shift = datetime.now(UTC) - timedelta(hours=1) - datetime(2024, 6, 21, 8, 27, 34, 84000, tzinfo=UTC)

    def moved(value: str) -> str:
        moment = datetime.fromisoformat(value) + shift
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    conversation = body["conversation"]
    for name in ("connectTime", "disconnectTime"):
        conversation[name] = moved(conversation[name])
    for record in conversation["recordList"]:
        for sentence in record["sentenceList"]:
            sentence["startTime"], sentence["endTime"] = (
                moved(sentence["startTime"]),
                moved(sentence["endTime"]),
            )
    return body


def serve(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cte1_mcp", "serve", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def env(simulator: Any, tmp_path: Path) -> dict[str, str]:
    return server_env(simulator.url, tmp_path / "cache")


async def test_over_http_a_push_is_stored_where_the_service_reads(
    env: dict[str, str], tmp_path: Path
) -> None:
    key_file = tmp_path / "push.key"
    key_file.write_text(PUSH_KEY + "\n")
    with http_server({**env, "CTE1_PUSH_KEY_FILE": str(key_file)}) as url:
        push_url = url.removesuffix("/mcp") + "/cte1/speech-recognition"
        async with httpx.AsyncClient() as http:
            response = await http.post(
                push_url, json=recent_push(), headers={"Authorization": f"Bearer {PUSH_KEY}"}
            )
    assert response.status_code == 200, response.text
    assert response.json()["stored"][0]["recordId"] == 1
    stored = tmp_path / "cache" / "pushed" / "05053698333" / "942125" / "1.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600


async def test_without_a_key_there_is_no_push_route(env: dict[str, str]) -> None:
    with http_server(env) as url:
        async with httpx.AsyncClient() as http:
            response = await http.post(
                url.removesuffix("/mcp") + "/cte1/speech-recognition",
                json=recent_push(),
                headers={"Authorization": PUSH_KEY},
            )
    assert response.status_code == 404


async def test_over_stdio_the_key_is_harmless_and_the_log_says_push_needs_http(
    env: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "stderr.log"
    with log.open("w") as errlog:
        async with stdio_server({**env, "CTE1_PUSH_KEY": PUSH_KEY}, errlog=errlog) as client:
            assert (await client.list_tools()).tools
    text = log.read_text()
    assert "accepted only over HTTP" in text
    assert PUSH_KEY not in text


@pytest.mark.parametrize("key", ["", "   ", "abc\nsecret-tail"])
def test_an_empty_or_unsendable_key_stops_start_up_unechoed(env: dict[str, str], key: str) -> None:
    done = serve({**env, "CTE1_PUSH_KEY": key}, "--transport", "http", "--port", "0")
    assert done.returncode == 2
    assert "CTE1_PUSH_KEY" in done.stderr
    assert "secret-tail" not in done.stderr


@pytest.mark.parametrize("source", ["CTE1_PUSH_KEY", "CTE1_PUSH_KEY_FILE"])
@pytest.mark.parametrize("key", ["Bearer ", "bearer", " Bearer \t"])
def test_a_key_that_is_only_the_bearer_prefix_is_empty(
    env: dict[str, str], tmp_path: Path, source: str, key: str
) -> None:
    # Before: accepted as the word "Bearer", so any push saying "Authorization: Bearer" passed.
    if source == "CTE1_PUSH_KEY_FILE":
        key_file = tmp_path / "push.key"
        key_file.write_text(key + "\n")
        key = str(key_file)
    done = serve({**env, source: key}, "--transport", "http", "--port", "0")
    assert done.returncode == 2, done.stderr
    assert f"{source}: {'the key in it ' if source.endswith('FILE') else ''}is empty" in done.stderr
    assert "Traceback" not in done.stderr


def test_every_push_setting_problem_at_once(env: dict[str, str], tmp_path: Path) -> None:
    empty = tmp_path / "empty.key"
    empty.write_text("\n")
    done = serve(
        {**env, "CTE1_PUSH_KEY_FILE": str(empty), "CTE1_PUSH_PATH": "/mcp", "CTE1_PUSH_MAX_BYTES": "10"},
    )
    assert done.returncode == 2
    for name in ("CTE1_PUSH_KEY_FILE", "CTE1_PUSH_PATH", "CTE1_PUSH_MAX_BYTES"):
        assert name in done.stderr


def test_settings_of_the_push(tmp_path: Path) -> None:
    base = {
        "base_url": "https://cte1.example.jp",
        "source_uuid": "6f1c2a4e-8d3b-4e55-9a71-0c2b7d9e4f10",
        "api_key": "k",
    }
    key_file = tmp_path / "push.key"
    key_file.write_text(f"{PUSH_KEY}\nignored second line\n")
    settings = load_settings(**base, push_key_file=key_file)
    assert settings.push_key is not None
    assert settings.push_key.get_secret_value() == PUSH_KEY
    assert (settings.push_path, settings.push_max_bytes, settings.transcript_source) == (
        "/cte1/speech-recognition",
        4 * 1024 * 1024,
        "platform",
    )
    assert load_settings(**base).push_key is None  # optional: no key, no route
    with pytest.raises(ConfigurationError, match="CTE1_PUSH_KEY or CTE1_PUSH_KEY_FILE, not both"):
        load_settings(**base, push_key="x", push_key_file=key_file)
    for path in ("cte1", "/a/../b", "/a//b", "/a?b", "/mcp/x", "/"):
        with pytest.raises(ConfigurationError, match="CTE1_PUSH_PATH"):
            load_settings(**base, push_path=path)
    with pytest.raises(ConfigurationError, match="CTE1_TRANSCRIPT_SOURCE"):
        load_settings(**base, transcript_source="cloud")
    assert load_settings(**base, transcript_source="local").transcript_source == "local"


def test_a_printed_client_config_holds_the_key_files_absolute_path_never_the_key(
    env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "push.key").write_text(PUSH_KEY + "\n")  # the printed config is checked as serve checks it
    for given, expected in (
        ({"CTE1_PUSH_KEY_FILE": "push.key"}, str(tmp_path / "push.key")),
        ({"CTE1_PUSH_KEY": PUSH_KEY}, None),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "cte1_mcp", "config"],
            env={**env, **given},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        client_env = json.loads(done.stdout)["mcpServers"]["cte1"]["env"]
        assert client_env.get("CTE1_PUSH_KEY_FILE") == expected
        assert PUSH_KEY not in done.stdout


async def test_a_stopping_server_still_records_the_refusals_it_counted(
    env: dict[str, str], tmp_path: Path
) -> None:
    # Pushes refused without the key are counted after the first (a line each let anybody fill the
    # disk); the count is not lost when the server stops before the interval's summary.
    log = tmp_path / "audit.jsonl"
    with http_server({**env, "CTE1_PUSH_KEY": PUSH_KEY, "CTE1_AUDIT_LOG": str(log)}) as url:
        async with httpx.AsyncClient() as http:
            for _ in range(3):
                response = await http.post(
                    url.removesuffix("/mcp") + "/cte1/speech-recognition",
                    json=recent_push(),
                    headers={"Authorization": "Bearer not-the-key"},
                )
                assert response.status_code == 401
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(line["outcome"], line.get("count")) for line in lines] == [
        ("unauthorized", None),
        ("unauthorized", 2),
    ]
