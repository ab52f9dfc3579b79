"""The examples a user copies must keep working: they run here against the embedded simulator."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from tests.mcp_harness import EXAMPLE
from tests.test_mcp_http import free_port, wait_for_port

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def demo_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTE1_")}
    return {**env, "CTE1_CACHE_DIR": str(tmp_path / "cache"), "CTE1_LOG_LEVEL": "WARNING"}


#: The example is what `cte1-mcp config` prints with these set, the checkout's path written as
#: <checkout> (the one placeholder a user replaces with the directory they cloned into).
EXAMPLE_CONFIG_ENV = {"HOME": "/home/you", "CTE1_ALLOWED_TENANTS": "05053698341"}


def test_client_config_is_what_config_prints() -> None:
    # Before: "command": "cte1-mcp", which a desktop client does not find on its PATH; then an
    # extra "cte1-demo-uvx" entry with a bare "uvx", which fails there for the same reason.
    example = json.loads((EXAMPLES / "claude_desktop_config.json").read_text())
    printed = subprocess.run(
        [sys.executable, "-m", "cte1_mcp", "config"],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("CTE1_")}, **EXAMPLE_CONFIG_ENV},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    # the example names the README's venv; the suite may run from another (make test-latest's)
    venv_bin = str(Path(sys.executable).parent)
    assert printed.stdout.count(venv_bin) == 2  # the two commands, nothing else
    assert json.loads(printed.stdout.replace(venv_bin, "<checkout>/.venv/bin")) == example


@pytest.mark.anyio
async def test_example_demo_entry_starts_with_the_checkout_filled_in(tmp_path: Path) -> None:
    entry = json.loads((EXAMPLES / "claude_desktop_config.json").read_text())["mcpServers"]["cte1-demo"]
    params = StdioServerParameters(
        command=entry["command"].replace("<checkout>", str(EXAMPLES.parent)),
        args=entry["args"],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TMPDIR": str(tmp_path)},
    )
    async with Client(params, read_timeout_seconds=60) as client:
        result = await client.call_tool("get_call_metadata", EXAMPLE)
    assert not result.is_error


def test_agent_client_saves_the_longest_call(tmp_path: Path) -> None:
    output = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "agent_client.py"), "--demo", "--output", str(output)],
        env=demo_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    saved = list(output.glob("*.wav"))
    assert [p.name for p in saved] == ["call-05053698341-942125-1.wav"]  # 280 s: the longest of the three
    assert saved[0].read_bytes()[:4] == b"RIFF"
    assert "saved the longest call's recording" in done.stdout
    # Recordings are personal data wherever they are written (before: 0644 from the umask).
    assert stat.S_IMODE(saved[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(output.stat().st_mode) == 0o700
    assert [p.name for p in output.iterdir()] == [saved[0].name]  # no partial file left


def test_demo_saves_its_wav_privately_and_shows_a_transcript(tmp_path: Path) -> None:
    output = tmp_path / "cte1-demo"
    done = subprocess.run(
        [sys.executable, "-m", "cte1_mcp", "demo", "--output", str(output)],
        env={**demo_env(tmp_path), "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=900,  # the example's 4 min 40 s transcribed with Whisper-base on a shared CPU
    )
    assert done.returncode == 0, done.stderr
    saved = sorted(output.iterdir())
    assert "call-05053698341-942125-1.wav" in [p.name for p in saved]
    assert not [p for p in saved if p.name.endswith(".part")]  # no partial file left
    for path in saved:  # the WAV and anything derived from it (the timeline picture)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path  # before: 0644
    assert stat.S_IMODE(output.stat().st_mode) == 0o700
    assert "sha256 matches" in done.stdout
    # Before: no transcript step. Now the example call's transcript: its summary, then its first
    # sentences as `mm:ss.s-mm:ss.s party: text` (an en dash), the agent's greeting first.
    step = done.stdout.split("3c. transcript of the example call")[1].split("\n4. ")[0]
    assert "get_call_transcript(tenantId='05053698341', sessionId=942125, recordId=1) → ok" in step
    assert "by faster-whisper with the model whisper-base" in step
    lines = [line.strip() for line in step.splitlines() if "\u2013" in line and ": " in line]
    # The dialogue opens with the agent's greeting at 0.4 s (known from how the call was made); the
    # words themselves are Whisper-base's (their accuracy is tested in test_demo_transcript.py).
    assert len(lines) == 8 and lines[0].startswith("00:00.") and " agent: " in lines[0]
    assert {line.split(" ")[1].rstrip(":") for line in lines} == {"customer", "agent"}
    assert "more sentences in cte1://calls/05053698341/942125/1/transcript" in step
    assert "platform requests: 3 for 6 successful and 2 refused tool calls" in done.stdout


@pytest.mark.parametrize("legacy", [False, True], ids=["2026-07-28", "2025-11-25"])
def test_http_client_fetches_a_recordings_audio_with_a_token(tmp_path: Path, legacy: bool) -> None:
    port = free_port()
    env = {**demo_env(tmp_path), "CTE1_HTTP_TOKEN": "example-token"}
    server = subprocess.Popen(
        [sys.executable, "-m", "cte1_mcp", "serve", "--demo", "--transport", "http", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(server, port)
        done = subprocess.run(
            [
                sys.executable,
                str(EXAMPLES / "http_client.py"),
                f"http://127.0.0.1:{port}/mcp",
                *(["--legacy"] if legacy else []),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.terminate()
        server.wait(10)
    assert done.returncode == 0, done.stderr
    assert f"protocol: {'2025-11-25' if legacy else '2026-07-28'}" in done.stdout
    assert "get_call_audio" in done.stdout
    assert "cte1://calls/05053698341/942130/2/audio audio/wav 1920058 bytes" in done.stdout
    # 1.9 MB, over the official client's 1 MiB SSE event limit once base64-encoded
    assert "resource: 1920058 bytes, sha256 matches: True" in done.stdout
    url = f"http://127.0.0.1:{port}/calls/05053698341/942130/2/audio"
    assert f"download: {url} 1920058 bytes, sha256 matches: True" in done.stdout
