"""Commands refusing what they cannot do, in one message before doing anything, and the HTTP
server answering where it says it listens: serve, check, config, demo, simulator."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.mcp_harness import server_env
from tests.test_mcp_http import INITIALIZE, MCP_HEADERS, free_port, http_server, serve_http

CLI = [sys.executable, "-m", "cte1_mcp"]


@pytest.fixture
def env(simulator: Any, tmp_path: Path) -> dict[str, str]:
    return server_env(simulator.url, tmp_path / "cache")


def run(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *argv], env=env, cwd=cwd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


def no_settings() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CTE1_")}


def one_message(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    for text in expected:
        assert text in done.stderr


# --- serve over HTTP ------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("given", ["tok123\n", " tok123 ", "\ttok123\r\n"])
async def test_an_http_token_with_surrounding_spaces_is_the_token(env: dict[str, str], given: str) -> None:
    # Before: kept as given (a Kubernetes secret's trailing newline), so every client got 401.
    with http_server({**env, "CTE1_HTTP_TOKEN": given}) as url:
        async with httpx.AsyncClient() as http:
            answer = await http.post(
                url, json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": "Bearer tok123"}
            )
    assert answer.status_code == 200, answer.text


@pytest.mark.anyio
async def test_a_loopback_address_bound_answers_under_its_own_name(env: dict[str, str]) -> None:
    # Before: --host 127.0.0.2 printed http://127.0.0.2:PORT/mcp, which answered 421 (Host refused).
    port = free_port()
    process = subprocess.Popen(serve_http("127.0.0.2", port), env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:  # until it listens (or ends): the harness's wait, on this address
            assert process.poll() is None, "the server ended"
            try:
                socket.create_connection(("127.0.0.2", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nothing listened"
                time.sleep(0.05)
        async with httpx.AsyncClient() as http:
            answer = await http.post(f"http://127.0.0.2:{port}/mcp", json=INITIALIZE, headers=MCP_HEADERS)
    finally:
        process.terminate()
        process.wait(10)
    assert answer.status_code == 200, answer.text


def test_start_up_problems_after_the_settings_come_together(env: dict[str, str], tmp_path: Path) -> None:
    # Before: the HTTP bind, then the audit log, then the store: one per start.
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    done = run(
        ["serve", "--transport", "http", "--host", "0.0.0.0", "--port", "0"],
        {**env, "CTE1_CACHE_DIR": str(shared), "CTE1_AUDIT_LOG": str(shared)},
    )
    one_message(done, "CTE1_HTTP_TOKEN", "CTE1_HTTP_ALLOWED_HOSTS", "CTE1_AUDIT_LOG", "CTE1_CACHE_DIR")
    assert f"chmod 700 {shared}" in done.stderr


# --- check: the store's directory as serve sees it ------------------------------------------------


def _proc(tmp_path: Path) -> Path:
    return Path("/proc/self/cte1-nope")


def _file(tmp_path: Path) -> Path:
    (tmp_path / "file").write_text("")
    return tmp_path / "file"


def _open(tmp_path: Path) -> Path:
    (tmp_path / "open").mkdir()
    (tmp_path / "open").chmod(0o755)
    return tmp_path / "open"


@pytest.mark.parametrize("make", [_proc, _file, _open])
def test_check_refuses_the_store_directory_serve_refuses(
    env: dict[str, str], simulator: Any, tmp_path: Path, make: Any
) -> None:
    # Before: a traceback (FileNotFoundError, FileExistsError), or, for a 0755 directory, "ok" and a
    # coordination/ directory made in it, while serve refused it.
    cache = make(tmp_path)
    done = run(["check"], {**env, "CTE1_CACHE_DIR": str(cache)})
    one_message(done, "CTE1_CACHE_DIR", "Next:")
    assert "verdict" not in done.stderr
    assert simulator.state.requests == []
    if make is _open:
        assert list(cache.iterdir()) == []


# --- config: validated, paths absolute ------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"CTE1_BASE_URL": "https://user:pa55w0rd@cte1.example.jp"}, "CTE1_BASE_URL: must not hold a user"),
        ({"CTE1_LOG_LEVEL": "debug"}, "CTE1_LOG_LEVEL"),
        ({"CTE1_MIN_INTERVAL_SECONDS": "-1"}, "CTE1_MIN_INTERVAL_SECONDS"),
    ],
)
def test_config_prints_nothing_for_a_bad_configuration(
    env: dict[str, str], given: dict[str, str], expected: str
) -> None:
    # Before: copied into the printed client config (the URL's password too), exit 0.
    done = run(["config"], {**env, **given})
    one_message(done, expected)
    assert done.stdout == ""
    assert "pa55w0rd" not in done.stderr


def test_config_with_nothing_set_still_prints_placeholders(env: dict[str, str]) -> None:
    bare = {k: v for k, v in env.items() if not k.startswith("CTE1_")}
    done = run(["config"], bare)
    assert done.returncode == 0, done.stderr
    assert "CTE1_BASE_URL" in json.loads(done.stdout)["mcpServers"]["cte1"]["env"]


def test_config_makes_a_model_directory_absolute(env: dict[str, str], tmp_path: Path) -> None:
    # Before: "./wb" copied as is, resolved against wherever the client starts the server.
    model = tmp_path / "wb"
    model.mkdir()
    for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt"):
        (model / name).write_text("")
    done = run(["config"], {**env, "CTE1_ASR_MODEL": "./wb"}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["mcpServers"]["cte1"]["env"]["CTE1_ASR_MODEL"] == str(model)


# --- demo and simulator options -------------------------------------------------------------------


def test_demo_refuses_an_output_it_cannot_create_before_the_walkthrough(tmp_path: Path) -> None:
    # Before: half the walkthrough, then a 100-line traceback when the WAV was saved.
    (tmp_path / "file").write_text("")
    done = run(["demo", "--output", str(tmp_path / "file" / "demo")], no_settings())
    one_message(done, "--output")
    assert "simulator" not in done.stdout
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args", [["--source-uuid", "notauuid"], ["--min-interval", "nan"], ["--min-interval", "inf"]]
)
def test_simulator_refuses_options_it_cannot_use(args: list[str]) -> None:
    # Before: accepted (and --port 0 started a simulator no client could use): run with a port
    # this test holds, so a simulator that starts anyway fails to bind instead of running on.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        done = run(["simulator", "--port", str(held.getsockname()[1]), *args], no_settings())
    assert done.returncode == 2, done.stderr
    assert f"Invalid value for '{args[0]}'" in done.stderr
