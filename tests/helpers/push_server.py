"""CT-e1's speech-recognition push for the tests: the page's example verbatim, and the push route on
a real uvicorn server on 127.0.0.1 in this process (over a store whose clock the test holds)."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette

from cte1_mcp.audit import AuditLog
from cte1_mcp.push import mount_push
from cte1_mcp.repository.local import LocalRepository
from cte1_mcp.settings import DEFAULT_PUSH_PATH, load_settings
from cte1_mcp.simulator import DEFAULT_API_KEY, DEFAULT_SOURCE_UUID

PUSH_KEY = "push-key-7f3a9c1e5b2d4f60"
#: The page's example, byte for byte as the spec file quotes it (two records with recordId 1,
#: ``status``/``completed`` beside the schema, ``description`` for the schema's ``discription``).
PAGE_EXAMPLE = """{"conversation": {
  "status": "complete", "tenantId": "05053698333", "sessionId": 942125, "direction": 1,
  "connectTime": "2024-06-21T08:27:34.084Z", "disconnectTime": "2024-06-21T08:28:36.930Z", "completed": 1,
  "recordList": [
    {"recordId": 1, "ani": "08075082398", "dnis": "05053698333", "agentId": "T83330001", "agentName": "コムデザイン一郎",
     "sentenceList": [
       {"sequence": 1, "speakerId": 2, "startTime": "2024-06-21T08:27:38.444Z", "endTime": "2024-06-21T08:27:40.244Z", "text": "私はコムデザイン一郎です"},
       {"sequence": 2, "speakerId": 1, "startTime": "2024-06-21T08:27:42.264Z", "endTime": "2024-06-21T08:27:44.094Z", "text": "パソコンの調子が悪いです"}]},
    {"recordId": 1, "ani": "08075082398", "dnis": "05053698332", "agentId": "T83330002", "agentName": "コムデザイン二郎",
     "sentenceList": [
       {"sequence": 1, "speakerId": 2, "startTime": "2024-06-21T08:28:38.444Z", "endTime": "2024-06-21T08:28:40.244Z", "text": "コムデザイン二郎に電話が変りました"},
       {"sequence": 2, "speakerId": 1, "startTime": "2024-06-21T08:28:42.264Z", "endTime": "2024-06-21T08:28:44.094Z", "text": "まだ、パソコンの調子が悪いです"}]}],
  "description": ""}}"""


def example() -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(PAGE_EXAMPLE)
    return parsed


@dataclass
class PushServer:
    url: str
    port: int
    store: LocalRepository

    def pushed_files(self) -> list[Path]:
        return sorted(p for p in (self.store.root / "pushed").rglob("*") if p.is_file())


@asynccontextmanager
async def push_server(
    store: LocalRepository, audit_log: Path | None = None, **settings: Any
) -> AsyncIterator[PushServer]:
    """The push route as ``serve --transport http`` mounts it (loopback hosts allowed), served by uvicorn."""
    configured = load_settings(
        base_url="http://127.0.0.1:9",
        source_uuid=DEFAULT_SOURCE_UUID,
        api_key=DEFAULT_API_KEY,
        cache_dir=store.root,
        push_key=PUSH_KEY,
        **settings,
    )
    hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=hosts,
        allowed_origins=[f"http://{h}" for h in hosts],
    )
    app = Starlette()
    mount_push(app, configured, store, AuditLog(audit_log) if audit_log else None, security)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY: runner.py
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    async with anyio.create_task_group() as group:
        group.start_soon(lambda: server.serve(sockets=[sock]))
        while not server.started:
            await anyio.sleep(0.01)
        try:
            yield PushServer(f"http://127.0.0.1:{port}{configured.push_path}", port, store)
        finally:
            server.should_exit = True
    sock.close()


__all__ = ["DEFAULT_PUSH_PATH", "PAGE_EXAMPLE", "PUSH_KEY", "PushServer", "example", "push_server"]
