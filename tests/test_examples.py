"""The examples a user copies must keep working: they run here against the embedded simulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.test_mcp_http import free_port, wait_for_port

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def demo_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTE1_")}
    return {**env, "CTE1_CACHE_DIR": str(tmp_path / "cache"), "CTE1_LOG_LEVEL": "WARNING"}


def test_client_config_is_valid_and_names_the_command() -> None:
    config = json.loads((EXAMPLES / "claude_desktop_config.json").read_text())
    servers = config["mcpServers"]
    assert servers["cte1"]["command"] == "cte1-mcp"
    assert {"CTE1_BASE_URL", "CTE1_SOURCE_UUID", "CTE1_API_KEY_FILE"} <= set(servers["cte1"]["env"])
    assert servers["cte1-demo"]["args"] == ["serve", "--demo"]


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


def test_http_client_with_a_token(tmp_path: Path) -> None:
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
            [sys.executable, str(EXAMPLES / "http_client.py"), f"http://127.0.0.1:{port}/mcp"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.terminate()
        server.wait(10)
    assert done.returncode == 0, done.stderr
    assert "get_call_audio" in done.stdout
    assert "inlined=False" in done.stdout  # 4.3 MiB: over the inline limit
    assert "cte1://calls/05053698341/942125/1/audio" in done.stdout
