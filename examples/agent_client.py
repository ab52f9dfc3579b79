"""An agent-style flow with the official MCP SDK: metadata of a few calls, the audio of one, saved.

    .venv/bin/python examples/agent_client.py --demo   # against the embedded simulator
    .venv/bin/python examples/agent_client.py          # against CT-e1, configured by CTE1_* variables

The server runs as a subprocess over stdio, as an assistant's MCP client would run it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

from mcp import Client, StdioServerParameters
from mcp_types import BlobResourceContents, TextContent

CALLS = [
    {"tenantId": "05053698341", "sessionId": 942125, "recordId": 1},
    {"tenantId": "05053698341", "sessionId": 942130, "recordId": 1},
    {"tenantId": "05053698341", "sessionId": 942130, "recordId": 2},
]


async def main(demo: bool, output: Path) -> None:
    command = shutil.which("cte1-mcp") or sys.executable
    args = ["serve", "--demo"] if demo else []
    if command == sys.executable:
        args = ["-m", "cte1_mcp", *args]
    server = StdioServerParameters(command=command, args=args, env=dict(os.environ))
    async with Client(server) as client:
        longest: dict[str, object] | None = None
        for call in CALLS:
            result = await client.call_tool("get_call_metadata", call)
            if result.is_error:  # errors say what happened and what to do next, with a [code]
                print("error:", "".join(c.text for c in result.content if isinstance(c, TextContent)))
                continue
            meta = result.structured_content or {}
            print(
                f"{meta['tenantId']}/{meta['sessionId']}/{meta['recordId']}: {meta['directionLabel']} "
                f"{meta['ani']} → {meta['dnis']}, agent {meta['agentName']}, {meta['durationSeconds']} s"
            )
            if longest is None or (meta["durationSeconds"] or 0) > (longest["durationSeconds"] or 0):  # type: ignore[operator]
                longest = meta
        if longest is None:
            return
        key = {name: longest[name] for name in ("tenantId", "sessionId", "recordId")}
        result = await client.call_tool("get_call_audio", key)  # already stored: no platform request
        audio = (result.structured_content or {})["audio"]
        if audio.get("path"):  # stdio: the server's file is on this machine
            data = Path(audio["path"]).read_bytes()
        else:  # a remote server: read the resource
            read = await client.read_resource(audio["uri"])
            data = base64.b64decode(
                next(c for c in read.contents if isinstance(c, BlobResourceContents)).blob
            )
        assert hashlib.sha256(data).hexdigest() == audio["sha256"]
        target = output / f"call-{key['tenantId']}-{key['sessionId']}-{key['recordId']}.wav"
        save_privately(target, data)
        print(
            f"saved the longest call's recording ({audio['durationSeconds']} s, {len(data):,} bytes) to {target}"
        )


def save_privately(target: Path, data: bytes) -> None:
    """Recordings are personal data: 0600 in a 0700 directory, written whole or not at all."""
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".part")  # created 0600
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        Path(partial).replace(target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", action="store_true", help="use the embedded CT-e1 simulator")
    parser.add_argument("--output", type=Path, default=Path("cte1-demo"))
    options = parser.parse_args()
    asyncio.run(main(options.demo, options.output))
