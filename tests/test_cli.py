"""The command line as a person meets it: start-up refusals, help, the ready line, the demo's store."""

from __future__ import annotations

import json
import os
import re
import selectors
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters

from cte1_mcp.settings import Settings
from cte1_mcp.simulator import DEFAULT_API_KEY
from tests.mcp_harness import EXAMPLE, server_env, structured
from tests.test_mcp_http import serve_http

CLI = [sys.executable, "-m", "cte1_mcp"]


@pytest.fixture
def env(simulator: Any, tmp_path: Path) -> dict[str, str]:
    return server_env(simulator.url, tmp_path / "cache")


def run(argv: list[str], env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def exits_without_serving(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a server that must refuse to start; one that starts anyway is stopped and reported."""
    process = subprocess.Popen(
        argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        stdout, stderr = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        raise AssertionError(f"the server started instead of refusing; stderr: {stderr}") from None
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


# --- HTTP start-up refusals ------------------------------------------------------------------


@pytest.mark.parametrize("token", ["", "   "])
def test_an_empty_http_token_is_a_configuration_error(env: dict[str, str], token: str) -> None:
    # Before: "" passed the `is None` check and then disabled the verifier: no authentication.
    env = {**env, "CTE1_HTTP_TOKEN": token, "CTE1_HTTP_ALLOWED_HOSTS": "mcp.example.internal:8000"}
    done = exits_without_serving(serve_http("0.0.0.0", 0), env)
    assert done.returncode == 2, done.stderr
    assert "CTE1_HTTP_TOKEN: is empty" in done.stderr
    assert "Traceback" not in done.stderr


def test_off_loopback_every_missing_setting_is_reported_at_once(env: dict[str, str]) -> None:
    done = exits_without_serving(serve_http("0.0.0.0", 0), env)
    assert done.returncode == 2
    assert "CTE1_HTTP_TOKEN" in done.stderr
    assert "CTE1_HTTP_ALLOWED_HOSTS" in done.stderr
    assert "Traceback" not in done.stderr


# --- cache-directory refusals: one message, exit 2, over stdio and HTTP -----------------------


def _open_dir(tmp_path: Path) -> Path:
    cache = tmp_path / "shared"
    cache.mkdir()
    cache.chmod(0o755)
    return cache


def _symlink_dir(tmp_path: Path) -> Path:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    return link


def _a_file(tmp_path: Path) -> Path:
    path = tmp_path / "file"
    path.write_text("")
    return path


def _dangling_parent(tmp_path: Path) -> Path:
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    return tmp_path / "gone" / "cache"  # before: recursion until RecursionError, 8,800 lines


def _under_proc(tmp_path: Path) -> Path:
    return Path("/proc/self/cte1-cache")  # before: the same recursion


@pytest.mark.parametrize("make_cache", [_open_dir, _symlink_dir, _a_file, _dangling_parent, _under_proc])
@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_a_refused_cache_directory_is_one_message_and_exit_2(
    env: dict[str, str], tmp_path: Path, make_cache: Any, transport: str
) -> None:
    # Before: exit 1 and an ExceptionGroup traceback; the store's "Next:" was never shown.
    cache = make_cache(tmp_path)
    argv = CLI if transport == "stdio" else serve_http("127.0.0.1", 0)
    done = exits_without_serving(argv, {**env, "CTE1_CACHE_DIR": str(cache)})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "ExceptionGroup" not in done.stderr
    assert "CTE1_CACHE_DIR" in done.stderr
    assert "Next:" in done.stderr
    if make_cache is _open_dir:
        assert f"chmod 700 {cache}" in done.stderr
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) <= 3


# --- help -------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["-h"], ["--help"], ["serve", "-h"]])
def test_help_lists_every_setting(argv: list[str], env: dict[str, str]) -> None:
    done = run(CLI + argv, env)
    assert done.returncode == 0, done.stderr
    for name in Settings.model_fields:
        assert f"CTE1_{name.upper()}" in done.stdout


def test_check_help_names_what_it_needs(env: dict[str, str]) -> None:
    done = run([*CLI, "check", "-h"], env)
    assert done.returncode == 0, done.stderr
    for name in ("CTE1_BASE_URL", "CTE1_SOURCE_UUID", "CTE1_API_KEY", "CTE1_API_KEY_FILE"):
        assert name in done.stdout
    # Before: only the model's name and folder, though check loads it with these, and caps a
    # 429's Retry-After with CTE1_MAX_RETRY_AFTER_SECONDS.
    for name in (
        "CTE1_MAX_RETRY_AFTER_SECONDS",
        "CTE1_ASR_DEVICE",
        "CTE1_ASR_COMPUTE_TYPE",
        "CTE1_ASR_THREADS",
        "CTE1_ASR_LANGUAGE",
    ):
        assert name in done.stdout
    assert "CTE1_AUDIT_LOG" not in done.stdout  # only what check reads


# --- the ready line on stdio ------------------------------------------------------------------


def _read_stderr_until(process: subprocess.Popen[bytes], needle: bytes, timeout: float = 20) -> bytes:
    assert process.stderr is not None
    seen = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stderr, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while needle not in seen and time.monotonic() < deadline:
            if selector.select(timeout=deadline - time.monotonic()):
                chunk = os.read(process.stderr.fileno(), 4096)
                if not chunk:
                    break
                seen += chunk
    return seen


def test_stdio_says_once_on_stderr_that_it_is_ready(env: dict[str, str], simulator: Any) -> None:
    process = subprocess.Popen(
        CLI, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        seen = _read_stderr_until(process, b"ready")
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(10)
    line = next((x for x in seen.decode().splitlines() if "ready" in x), "")
    host = simulator.url.removeprefix("http://")
    assert "stdio" in line, seen
    assert host in line
    assert env["CTE1_CACHE_DIR"] in line
    assert DEFAULT_API_KEY not in seen.decode()
    assert process.stdout is not None and process.stdout.read() == b""  # stdout is MCP's alone


# --- the demo's store -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_serve_demo_uses_a_fresh_store_removed_at_exit(tmp_path: Path) -> None:
    # Before: the demo kept its store (CTE1_CACHE_DIR or <cache>/demo) while every new simulator has
    # a new clock, so an earlier run's metadata was served.
    cache, scratch = tmp_path / "cache", tmp_path / "tmp"
    scratch.mkdir()
    env = {"CTE1_CACHE_DIR": str(cache), "TMPDIR": str(scratch), "CTE1_LOG_LEVEL": "WARNING"}
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "cte1_mcp", "serve", "--demo"], env=env
    )
    for _ in range(2):
        async with Client(params, read_timeout_seconds=60) as client:
            structured(await client.call_tool("get_call_metadata", EXAMPLE))
            assert len(list(scratch.iterdir())) == 1  # the demo's store, while it runs
            (store,) = scratch.iterdir()
            assert stat.S_IMODE(store.stat().st_mode) == 0o700
    assert not cache.exists()
    assert list(scratch.iterdir()) == []


def test_a_stdio_client_that_dies_mid_call_ends_the_server_quietly(tmp_path: Path) -> None:
    # Before: the server's next write to the closed stdout raised BrokenPipeError, printed as a
    # 110-line traceback with exit 1: a host logs that as the server crashing.
    env = {**os.environ, "TMPDIR": str(tmp_path), "CTE1_LOG_LEVEL": "WARNING"}
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [*CLI, "serve", "--demo"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr
        )
        assert process.stdin is not None and process.stdout is not None

        def send(message: dict[str, Any]) -> None:
            assert process.stdin is not None
            process.stdin.write(json.dumps(message).encode() + b"\n")
            process.stdin.flush()

        try:
            send(
                {
                    "jsonrpc": "2.0",
                    "id": 0,
                    "method": "initialize",
                    "params": {
                        "protocolVersion": "2025-06-18",
                        "capabilities": {},
                        "clientInfo": {"name": "dies", "version": "1"},
                    },
                }
            )
            assert b'"id":0' in process.stdout.readline()
            send({"jsonrpc": "2.0", "method": "notifications/initialized"})
            # a 300 MiB benchmark call: its download reports progress for a while
            arguments = {"tenantId": "0399999999", "sessionId": 300, "recordId": 1}
            params = {"name": "get_call_analytics", "arguments": arguments, "_meta": {"progressToken": "p"}}
            send({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params})
            assert b"notifications/progress" in process.stdout.readline()
            process.stdout.close()  # the client is killed: both its pipe ends close
            process.stdin.close()
            process.wait(60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    said = stderr_path.read_text(encoding="utf-8", errors="replace")
    assert process.returncode == 0, said
    assert "Traceback" not in said and "BrokenPipeError" not in said, said
    assert "stdout was closed by its reader (over stdio: the MCP client went away)" in said
    assert list(tmp_path.iterdir()) == [stderr_path]  # the demo's store was removed


def test_serve_demo_over_http_removes_its_store_when_terminated(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    process = subprocess.Popen(
        [*CLI, "serve", "--demo", "--transport", "http", "--port", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        seen = _read_stderr_until(process, b"/mcp")
        assert b"Streamable HTTP on http://127.0.0.1:" in seen, seen
        assert len(list(tmp_path.iterdir())) == 1
    finally:
        process.terminate()  # SIGTERM, as a process manager stops it
        process.wait(10)
    assert list(tmp_path.iterdir()) == []


# --- the simulator says "listening" only once it listens ---------------------------------------


def test_simulator_prints_listening_once_it_accepts(env: dict[str, str]) -> None:
    process = subprocess.Popen(
        [*CLI, "simulator", "--port", "0"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        seen = _read_stderr_until(process, b"listening").decode()
        match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", seen)
        assert match, seen
        with socket.create_connection(("127.0.0.1", int(match[1])), timeout=2):
            pass  # accepted at once: the line came after the bind
    finally:
        process.terminate()
        process.wait(10)


# --- a client configuration that works as written ---------------------------------------------


@pytest.mark.anyio
async def test_printed_demo_config_starts_the_server_without_the_venv_on_path(tmp_path: Path) -> None:
    done = run([*CLI, "config", "--demo"], {**os.environ, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    entry = json.loads(done.stdout)["mcpServers"]["cte1-demo"]
    assert Path(entry["command"]).is_absolute()
    # As a desktop client starts it: no shell, no virtualenv on PATH, only the configured env.
    params = StdioServerParameters(
        command=entry["command"],
        args=entry["args"],
        env={**entry.get("env", {}), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TMPDIR": str(tmp_path)},
    )
    async with Client(params, read_timeout_seconds=60) as client:
        tools = await client.list_tools()
    assert {t.name for t in tools.tools} >= {"get_call_metadata", "get_call_audio"}


def test_printed_config_never_holds_the_key(env: dict[str, str]) -> None:
    done = run([*CLI, "config"], env)
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout)["mcpServers"]["cte1"]
    assert Path(config["command"]).is_absolute()
    assert DEFAULT_API_KEY not in done.stdout
    assert "CTE1_API_KEY" not in config["env"]
    assert config["env"]["CTE1_BASE_URL"] == env["CTE1_BASE_URL"]
    assert "CTE1_API_KEY_FILE" in done.stderr  # says how to give the key instead


def test_printed_config_says_what_to_do_about_each_secret_left_out(env: dict[str, str]) -> None:
    secrets = {
        "CTE1_REDIS_URL": "redis://:hunter2-pw@127.0.0.1:6379/0",
        "CTE1_PUSH_KEY": "push-key-not-copied",
        "CTE1_HTTP_TOKEN": "token-not-copied",
    }
    done = run([*CLI, "config"], {**env, **secrets})
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout)["mcpServers"]["cte1"]
    for variable, value in secrets.items():
        assert variable not in config["env"]
        assert value not in done.stdout + done.stderr
        assert f"{variable} is set but not copied" in done.stderr
    assert "add it to the entry's env by hand" in done.stderr  # Redis: nothing else gives it
    assert "a stdio client needs none" in done.stderr


@pytest.mark.parametrize("uv_installed", [True, False])
def test_uvx_variant_names_the_checkout(env: dict[str, str], tmp_path: Path, uv_installed: bool) -> None:
    """uvx is named by the absolute path this shell finds (a desktop client has no PATH of the
    user's: before, a bare "uvx" failed there exactly as a bare "cte1-mcp" did)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if uv_installed:
        uvx = bin_dir / "uvx"
        uvx.write_text("#!/bin/sh\n")
        uvx.chmod(0o755)
    done = run([*CLI, "config", "--uvx"], {**env, "PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout)["mcpServers"]["cte1"]
    if uv_installed:
        assert config["command"] == str(bin_dir / "uvx")
    else:
        assert config["command"] == "uvx"
        # Once, though two entries name uvx (before: once per entry).
        assert done.stderr.count("uvx is not on this PATH") == 1, done.stderr
    checkout = Path(config["args"][1])
    assert config["args"][0] == "--from"
    assert (checkout / "pyproject.toml").is_file()
    assert config["args"][2] == "cte1-mcp"
