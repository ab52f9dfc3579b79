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
