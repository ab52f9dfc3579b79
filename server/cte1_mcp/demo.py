"""``cte1-mcp demo``: the whole product, exactly as an MCP client sees it.

Everything but the transcript takes seconds; the example's transcript (4 min 40 s of Japanese
speech, Whisper-base on the CPU) took 131-179 s on two busy shared cores. Without a model it
answers at once with how to get one.

The simulator runs on a free loopback port; the server runs as a real subprocess over stdio;
the official MCP client drives it. Nothing here reaches into the server's internals.
"""

from __future__ import annotations

import base64
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters
from mcp_types import BlobResourceContents, CallToolResult, ImageContent, TextContent

from cte1_mcp.simulator import SimulatorConfig
from cte1_mcp.simulator.server import run_in_thread

EXAMPLE = {"tenantId": "05053698341", "sessionId": 942125, "recordId": 1}


async def run_demo(output: Path) -> None:
    started = time.monotonic()
    with run_in_thread(SimulatorConfig(port=0)) as simulator:
        say(f"CT-e1 simulator on {simulator.url} (5-second request spacing, like the platform)")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CTE1_")},
            "CTE1_LOG_LEVEL": "WARNING",  # keep the walkthrough readable
        }
        # `serve --demo`, as `config --demo` prints it, with its settings (demo_mode.demo_settings);
        # only the simulator is this one, whose requests the summary counts.
        params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "cte1_mcp", "serve", "--demo", "--simulator", simulator.url],
            env=env,
        )
        async with Client(params) as client:
            info = client.server_info
            say(f"connected to {info.name if info else 'server'} over stdio")
            tools = await client.list_tools()
            say("tools: " + ", ".join(f"{t.name} ({t.title})" for t in tools.tools))

            step("1. metadata of the documentation's example call")
            result = await timed(client, "get_call_metadata", EXAMPLE)
            show_metadata(result)

            step("2. metadata of a transferred call's second recording (waits for the 5-second spacing)")
            result = await timed(client, "get_call_metadata", {**EXAMPLE, "sessionId": 942130, "recordId": 2})
            show_metadata(result)

            step("3. audio of the example call (already stored by step 1: no platform request)")
            result = await timed(client, "get_call_audio", EXAMPLE)
            audio = structured(result)["audio"]
            say(f"   {first_text(result).splitlines()[0]}")
            read = await client.read_resource(audio["uri"])
            blob = next(c for c in read.contents if isinstance(c, BlobResourceContents))
            data = base64.b64decode(blob.blob)
            saved = save(output, data)
            verdict = "matches" if hashlib.sha256(data).hexdigest() == audio["sha256"] else "DOES NOT match"
            say(f"   saved {len(data):,} bytes to {saved} (sha256 {verdict} the tool's)")

            step("3b. analytics of the example call (computed once on the server; no audio leaves it)")
            await show_analytics(client, output)

            step("3c. transcript of the example call (computed on the server; no audio leaves it)")
            transcribed = await show_transcript(client)

            step("4. documented errors, explained to the assistant")
            for arguments in (
                {**EXAMPLE, "callId": 1},
                {**EXAMPLE, "sessionId": 942140},
            ):
                result = await timed(client, "get_call_metadata", arguments)
                say("   " + first_text(result).replace("\n", "\n   "))

        requests = len(simulator.state.requests)
    step("summary")
    calls = f"{5 + transcribed} successful and {2 + (not transcribed)} refused tool calls"
    say(f"platform requests: {requests} for {calls}")
    say(f"the WAV and its timeline PNG are in {output}/; total time {time.monotonic() - started:.1f} s")


async def timed(client: Client, tool: str, arguments: dict[str, Any]) -> CallToolResult:
    started = time.monotonic()
    waited: list[str] = []

    async def progress(progress: float, total: float | None, message: str | None) -> None:
        if message and message.startswith("waiting") and not waited:
            waited.append(message)
            say(f"   … {message}")

    result = await client.call_tool(tool, arguments, progress_callback=progress)
    say(
        f"   {tool}({', '.join(f'{k}={v!r}' for k, v in arguments.items())}) → "
        f"{'error' if result.is_error else 'ok'} in {time.monotonic() - started:.2f} s"
    )
    return result


async def show_analytics(client: Client, output: Path) -> None:
    """get_call_analytics of the example call: its figures, and its timeline PNG saved beside the WAV."""
    result = await timed(client, "get_call_analytics", EXAMPLE)
    analytics = structured(result)["analytics"]
    say("   " + analytics["summary"])
    for party in analytics["parties"]:
        say(
            f"   {party['label']:>9}: talk {party['talkSeconds']:6.1f} s ({party['talkPercent']:4.1f}%), "
            f"{party['turns']} turns, longest {party['longestMonologueSeconds']} s, "
            f"{party['interruptions']} interruptions, level {party['activeLevelDbfs']} dBFS"
        )
    png = next((c for c in result.content if isinstance(c, ImageContent)), None)
    if png is not None:
        saved = save(output, base64.b64decode(png.data), suffix=".png")
        say(f"   timeline picture saved to {saved}")


async def show_transcript(client: Client, lines: int = 8) -> bool:
    """get_call_transcript of the example call: its summary and first sentences, or, without a
    model (no dev set-up's Whisper-base wheels), the error that says how to get one."""
    result = await timed(client, "get_call_transcript", EXAMPLE)
    text = first_text(result).splitlines()
    if result.is_error:
        say("   " + "\n   ".join(text))
        return False
    summary = structured(result)["summary"]
    sentences = [line for line in text if line and line != summary]
    say("   " + summary)
    for line in sentences[:lines]:
        say(f"   {line}")
    if len(sentences) > lines:
        say(f"   … {len(sentences) - lines} more sentences in {structured(result)['transcriptUri']}")
    return True


def save(output: Path, data: bytes, suffix: str = ".wav") -> Path:
    """Write the recording privately (0600 in a 0700 directory) and atomically: it is personal data."""
    output.mkdir(mode=0o700, parents=True, exist_ok=True)
    saved = output / f"call-{EXAMPLE['tenantId']}-{EXAMPLE['sessionId']}-{EXAMPLE['recordId']}{suffix}"
    fd, partial = tempfile.mkstemp(dir=output, prefix=".", suffix=".part")  # created 0600
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        Path(partial).replace(saved)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return saved


def show_metadata(result: CallToolResult) -> None:
    call = structured(result)
    say(
        f"   {call['directionLabel']} call from {call['ani']} to {call['dnis']}, agent {call['agentName']}, "
        f"{call['durationSeconds']} s, kept until {call['availableUntil']}"
    )


def structured(result: CallToolResult) -> dict[str, Any]:
    if result.is_error or not isinstance(result.structured_content, dict):
        raise SystemExit(f"demo: unexpected result: {first_text(result)}")
    return result.structured_content


def first_text(result: CallToolResult) -> str:
    return next((c.text for c in result.content if isinstance(c, TextContent)), "")


def step(title: str) -> None:
    say(f"\n{title}")


def say(line: str) -> None:
    print(line, flush=True)
