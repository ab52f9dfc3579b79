"""Values that used to slip through the settings: a secret that is only "Bearer ", untrimmed
secrets, empty paths, bytes that are not UTF-8, not-a-number durations, a key file's BOM."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cte1_mcp.errors import ConfigurationError
from cte1_mcp.settings import load_settings
from tests.mcp_harness import server_env

UUID = "6f1c2a4e-8d3b-4e55-9a71-0c2b7d9e4f10"
SECRET = "e0167b81201d415ab0d7ce9081849999"
BASE = {"base_url": "https://cte1.example.jp", "source_uuid": UUID}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CTE1_"):
            monkeypatch.delenv(name)


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``cte1-mcp ARGV`` with only these CTE1_* variables (values may hold non-UTF-8 bytes as
    surrogates: the environment receives the bytes)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("CTE1_")}
    return subprocess.run(
        [sys.executable, "-m", "cte1_mcp", *argv],
        env={**base, **env},
        capture_output=True,
        text=True,
        errors="replace",
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def refused(done: subprocess.CompletedProcess[str], expected: str) -> None:
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


# --- a secret that is only a "Bearer " prefix is empty, as it would be used ---------------------


@pytest.mark.parametrize("key", ["Bearer ", "bearer", "  Bearer \t "])
def test_an_api_key_that_is_only_bearer_is_empty_before_any_request(
    simulator: Any, tmp_path: Path, key: str
) -> None:
    # Before: accepted, and the request went out with "Authorization: Bearer Bearer".
    env = server_env(simulator.url, tmp_path / "cache", CTE1_API_KEY=key)
    refused(run(["check"], env), "CTE1_API_KEY: is empty")
    assert simulator.state.requests == []


def test_an_api_key_file_holding_only_bearer_is_empty(simulator: Any, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("Bearer \nsecond line\n")
    env = server_env(simulator.url, tmp_path / "cache", CTE1_API_KEY_FILE=str(key_file))
    del env["CTE1_API_KEY"]
    refused(run(["check"], env), "CTE1_API_KEY_FILE: the key in it is empty")
    assert simulator.state.requests == []


def test_a_key_given_with_its_scheme_is_sent_once_as_bearer() -> None:
    for given in (f"Bearer {SECRET}", f"bearer  {SECRET}\n", f" {SECRET} "):
        assert load_settings(**BASE, api_key=given).authorization == f"Bearer {SECRET}"


def test_secrets_are_held_as_they_are_used() -> None:
    # Before: CTE1_HTTP_TOKEN kept a Kubernetes secret's trailing newline, so every client got 401.
    settings = load_settings(
        **BASE, api_key=f"{SECRET}\n", http_token=" tok123\n", push_key="Bearer push-key\r\n"
    )
    assert settings.api_key is not None and settings.api_key.get_secret_value() == SECRET
    assert settings.http_token is not None and settings.http_token.get_secret_value() == "tok123"
    assert settings.push_key is not None and settings.push_key.get_secret_value() == "push-key"


def test_a_key_file_with_a_byte_order_mark(tmp_path: Path) -> None:
    # Before: the BOM became part of the key: "holds characters an HTTP header cannot carry".
    key_file = tmp_path / "key"
    key_file.write_text(SECRET + "\n", encoding="utf-8-sig")
    assert load_settings(**BASE, api_key_file=key_file).authorization == f"Bearer {SECRET}"


def test_an_unreadable_key_file_is_named_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(**BASE, api_key_file=tmp_path / "missing")
    assert "  - CTE1_API_KEY_FILE: cannot be read (No such file or directory)" in caught.value.message
    assert caught.value.message.count("CTE1_API_KEY_FILE") == 1


# --- empty paths --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variable",
    ["CTE1_CACHE_DIR", "CTE1_AUDIT_LOG", "CTE1_CA_BUNDLE", "CTE1_ASR_MODELS_DIR", "CTE1_PUSH_KEY_FILE"],
)
@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_path_is_a_configuration_error(tmp_path: Path, variable: str, value: str) -> None:
    # Before: CTE1_CACHE_DIR= made the current directory (Path("") is ".") the recording store.
    env = {"CTE1_BASE_URL": "https://cte1.example.jp", "CTE1_SOURCE_UUID": UUID, "CTE1_API_KEY": SECRET}
    done = subprocess.run(
        [sys.executable, "-m", "cte1_mcp"],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("CTE1_")}, **env, variable: value},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    refused(done, f"{variable}: is empty")
    assert list(tmp_path.iterdir()) == []  # nothing made in the current directory


# --- values that are not UTF-8, numbers that are not numbers, words with spaces ------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [("CTE1_ALLOWED_TENANTS", b"12,\xff"), ("CTE1_CA_BUNDLE", b"/nonexistent/\xff.pem")],
)
def test_bytes_that_are_not_utf8_are_listed_not_a_traceback(variable: str, value: bytes) -> None:
    # Before: UnicodeEncodeError while printing the message.
    env = {
        "CTE1_BASE_URL": "https://cte1.example.jp",
        "CTE1_SOURCE_UUID": UUID,
        "CTE1_API_KEY": SECRET,
        variable: os.fsdecode(value),
    }
    done = run([], env)
    refused(done, f"invalid configuration:\n  - {variable}: ")


@pytest.mark.parametrize("variable", ["CTE1_MIN_INTERVAL_SECONDS", "CTE1_TIMEOUT_SECONDS"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_duration_must_be_a_number(variable: str, value: str) -> None:
    # Before: "nan" said "should be less than or equal to 3600"; "inf" the same.
    with pytest.raises(ConfigurationError) as caught:
        load_settings(**BASE, api_key=SECRET, **{variable.removeprefix("CTE1_").lower(): value})
    assert f"{variable}: Input should be a finite number" in caught.value.message


def test_a_level_with_surrounding_spaces_is_the_level() -> None:
    assert load_settings(**BASE, api_key=SECRET, log_level="INFO ").log_level == "INFO"
    assert load_settings(**BASE, api_key=SECRET, transcript_source=" local").transcript_source == "local"


def test_the_platforms_roles_in_any_case_are_its_roles() -> None:
    # Before: "Agent,Customer" gave the agent speakerId 1, the id CT-e1 (and every pushed
    # transcript) gives the customer, while the settings already took agent and Agent as one role.
    from cte1_mcp.transcribe.transcript import speakers

    settings = load_settings(**BASE, api_key=SECRET, channel_roles="Agent, CUSTOMER")
    assert settings.channel_roles == ("agent", "customer")
    assert [(s.speaker, s.speakerId) for s in speakers(2, settings.channel_roles)] == [
        ("agent", 2),
        ("customer", 1),
    ]
    other = load_settings(**BASE, api_key=SECRET, channel_roles="Caller,Operator")
    assert other.channel_roles == ("Caller", "Operator")  # other names as written
