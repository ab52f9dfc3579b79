"""Configuration: every problem listed at once, exit code 2, the key never echoed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cte1_mcp.errors import ConfigurationError
from cte1_mcp.settings import Settings, load_settings

UUID = "6f1c2a4e-8d3b-4e55-9a71-0c2b7d9e4f10"
SECRET = "e0167b81201d415ab0d7ce9081849999"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CTE1_"):
            monkeypatch.delenv(name)


def run_cli(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CTE1_")}
    return subprocess.run(
        [sys.executable, "-m", "cte1_mcp"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("https://cte1.example.jp", True),
        ("http://127.0.0.1:8787", True),
        ("http://localhost:8787", True),
        ("http://[::1]:8787", True),
        ("http://cte1.example.jp", False),  # the key would travel in clear text
        ("http://10.0.0.5", False),
    ],
)
def test_plain_http_only_for_loopback(url: str, accepted: bool) -> None:
    if accepted:
        assert Settings(base_url=url, source_uuid=UUID, api_key=SECRET).audio_data_url.startswith(url)
    else:
        with pytest.raises(ConfigurationError, match="CTE1_BASE_URL: must be https"):
            load_settings(base_url=url, source_uuid=UUID, api_key=SECRET)


def test_every_problem_is_listed_and_exit_code_is_2() -> None:
    done = run_cli({"CTE1_SOURCE_UUID": "not-a-uuid", "CTE1_MIN_INTERVAL_SECONDS": "-1"})
    assert done.returncode == 2
    for name in ("CTE1_BASE_URL", "CTE1_SOURCE_UUID", "CTE1_API_KEY", "CTE1_MIN_INTERVAL_SECONDS"):
        assert name in done.stderr
    assert done.stdout == ""  # stdout belongs to the MCP protocol


def test_the_key_is_never_echoed() -> None:
    done = run_cli({"CTE1_API_KEY": SECRET, "CTE1_BASE_URL": "not a url", "CTE1_MAX_AUDIO_BYTES": SECRET})
    assert done.returncode == 2
    assert SECRET not in done.stderr
    assert "CTE1_BASE_URL" in done.stderr


def test_defaults_and_bearer_header() -> None:
    settings = Settings(base_url="https://cte1.example.jp", source_uuid=UUID, api_key=SECRET)
    assert settings.api_version == "v1"
    assert settings.min_interval_seconds == 5
    assert settings.max_audio_bytes == 512 * 1024 * 1024
    assert settings.inline_audio_max_bytes == 512 * 1024
    assert settings.authorization == f"Bearer {SECRET}"
    assert settings.audio_data_url == f"https://cte1.example.jp/general/v1/{UUID}/call/audio_data"
    assert SECRET not in repr(settings)
    given = Settings(base_url="https://x.example", source_uuid=UUID, api_key=f"Bearer {SECRET}")
    assert given.authorization == f"Bearer {SECRET}"


def test_key_file_and_tenant_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(SECRET + "\n")
    monkeypatch.setenv("CTE1_BASE_URL", "https://cte1.example.jp/")
    monkeypatch.setenv("CTE1_SOURCE_UUID", UUID)
    monkeypatch.setenv("CTE1_API_KEY_FILE", str(key_file))
    monkeypatch.setenv("CTE1_ALLOWED_TENANTS", "05053698341, 0312345678")
    settings = load_settings()
    assert settings.authorization == f"Bearer {SECRET}"
    assert settings.allowed_tenants == ("05053698341", "0312345678")
    assert settings.audio_data_url.startswith("https://cte1.example.jp/general/")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CTE1_API_KEY": SECRET, "CTE1_API_KEY_FILE": "/nonexistent"}, "not both"),
        ({"CTE1_API_KEY_FILE": "/nonexistent/key"}, "cannot be read"),
        ({"CTE1_API_KEY": "  "}, "CTE1_API_KEY: is empty"),
        ({"CTE1_API_KEY": SECRET, "CTE1_ALLOWED_TENANTS": "0505,abc"}, "abc"),
        ({"CTE1_API_KEY": SECRET, "CTE1_API_VERSION": "v1/../x"}, "CTE1_API_VERSION"),
        # An empty token would switch HTTP authentication off.
        ({"CTE1_API_KEY": SECRET, "CTE1_HTTP_TOKEN": ""}, "CTE1_HTTP_TOKEN: is empty"),
        ({"CTE1_API_KEY": SECRET, "CTE1_HTTP_TOKEN": " \t "}, "CTE1_HTTP_TOKEN: is empty"),
    ],
)
def test_bad_values_are_explained(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    monkeypatch.setenv("CTE1_BASE_URL", "https://cte1.example.jp")
    monkeypatch.setenv("CTE1_SOURCE_UUID", UUID)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert expected in caught.value.message
    assert SECRET not in caught.value.render()


@pytest.mark.parametrize(
    "url",
    [
        "https://cte1.example.jp/general/v1",
        "https://cte1.example.jp/general/v1/",
        f"https://cte1.example.jp/general/v1/{UUID}/call/audio_data",
        "https://cte1.example.jp/?x=1",
        "https://cte1.example.jp/#top",
    ],
)
def test_base_url_with_a_path_is_refused(url: str) -> None:
    # Before: accepted, and the doubled path later answered 404 = "[upstream_ip_not_allowed]".
    with pytest.raises(ConfigurationError, match="built by the server") as caught:
        load_settings(base_url=url, source_uuid=UUID, api_key=SECRET)
    assert "CTE1_BASE_URL" in caught.value.message


def test_a_plain_http_url_with_a_path_reports_both_problems() -> None:
    # Before: only "must be https://"; fixing that then revealed the path.
    with pytest.raises(ConfigurationError) as caught:
        load_settings(base_url="http://cte1.example.jp/general/v1", source_uuid=UUID, api_key=SECRET)
    (line,) = [line for line in caught.value.message.splitlines() if "CTE1_BASE_URL" in line]
    assert "must be https://" in line
    assert "built by the server" in line


@pytest.mark.parametrize(
    "url", ["https://cte1.example.jp", "https://cte1.example.jp/", "https://cte1.example.jp:8443"]
)
def test_base_url_origin_is_accepted(url: str) -> None:
    settings = load_settings(base_url=url, source_uuid=UUID, api_key=SECRET)
    assert settings.audio_data_url.endswith(f"/general/v1/{UUID}/call/audio_data")
    assert "//general" not in settings.audio_data_url


def test_every_setting_has_a_description_for_help() -> None:
    # `cte1-mcp --help` lists each CTE1_* variable with its description.
    assert [name for name, field in Settings.model_fields.items() if not field.description] == []


@pytest.mark.parametrize(
    ("source", "inside"),
    [("env", "\n"), ("env", "\r"), ("env", "é"), ("file", "\x00"), ("file", "é"), ("file", "\x1b")],
)
def test_a_key_no_http_header_can_carry_stops_start_up_without_echoing_it(
    tmp_path: Path, source: str, inside: str
) -> None:
    """Before: accepted, then every request failed: httpx/h11 refused the header quoting it whole
    (the key in the error and the log, as a retryable outage), or a non-ASCII key raised outside any
    coded error. Now it is a configuration error at start-up (exit 2) that never quotes the key."""
    key = SECRET[:12] + inside + SECRET[12:]
    env = {"CTE1_BASE_URL": "https://cte1.example.jp", "CTE1_SOURCE_UUID": UUID}
    if source == "env":
        env["CTE1_API_KEY"] = key
        expected = "CTE1_API_KEY: holds characters an HTTP header cannot carry"
    else:
        key_file = tmp_path / "key"
        key_file.write_text(key + "\n", encoding="utf-8")
        env["CTE1_API_KEY_FILE"] = str(key_file)
        expected = "CTE1_API_KEY_FILE: the key in it holds characters an HTTP header cannot carry"
    done = run_cli(env)
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr
    for half in (SECRET[:12], SECRET[12:]):
        assert half not in done.stderr
