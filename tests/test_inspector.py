"""The MCP Inspector's CLI (``@modelcontextprotocol/inspector``, the TypeScript SDK's client) against
the real server over Streamable HTTP: large audio reads and the download URL.

``make pytest`` installs it from tests/js/package-lock.json with ``npm ci`` when node is there;
without node these tests are skipped, and say so.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.servers import http_process
from tests.mcp_harness import TRANSFERRED_2, call_uri, server_env

INSPECTOR = Path(__file__).resolve().parent / "js" / "node_modules" / ".bin" / "mcp-inspector"
TOKEN = "inspector-test-token"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not INSPECTOR.exists(),
    reason="the MCP Inspector is not installed (needs node; `make pytest` runs npm ci in tests/js)",
)


def inspector(url: str, home: Path, *arguments: str) -> dict[str, Any]:
    """One ``mcp-inspector --cli`` call; its JSON answer. HOME is the test's own (it keeps a catalog)."""
    done = subprocess.run(
        [str(INSPECTOR), "--cli", url, "--header", f"Authorization: Bearer {TOKEN}", *arguments],
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def test_the_inspector_reads_large_audio_and_gets_the_download_url(simulator: Any, tmp_path: Path) -> None:
    env = server_env(simulator.url, tmp_path / "cache", CTE1_HTTP_TOKEN=TOKEN)
    with http_process(env) as server:
        ids = [f"{name}={value}" for name, value in TRANSFERRED_2.items()]
        called = inspector(
            server.url,
            tmp_path,
            "--method",
            "tools/call",
            "--tool-name",
            "get_call_audio",
            "--tool-arg",
            *ids,
        )
        audio = called["structuredContent"]["audio"]
        read = inspector(server.url, tmp_path, "--method", "resources/read", "--uri", call_uri(TRANSFERRED_2))
        clip = inspector(
            server.url,
            tmp_path,
            "--method",
            "resources/read",
            "--uri",
            "cte1://calls/05053698341/942125/1/clip?start=0&end=120&rate=16000",
        )
        downloaded = httpx.get(audio["downloadUrl"], headers={"Authorization": f"Bearer {TOKEN}"})
    blob = base64.b64decode(read["contents"][0]["blob"])
    assert (len(blob), hashlib.sha256(blob).hexdigest()) == (audio["sizeBytes"], audio["sha256"])
    assert audio["sizeBytes"] == 1_920_058
    assert len(base64.b64decode(clip["contents"][0]["blob"])) == 44 + 120 * 16000 * 2
    assert downloaded.status_code == 200
    assert downloaded.content == blob
