"""How one simulator instance behaves: credentials, path, rate limit, response shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cte1_mcp.simulator.calls import DEFAULT_ALLOWED_TENANTS
from cte1_mcp.simulator.wav import DEFAULT_CHUNK_SIZE

DEFAULT_API_KEY = "cte1-simulator-demo-key"
DEFAULT_SOURCE_UUID = "6f1c2a4e-8d3b-4e55-9a71-0c2b7d9e4f10"
DEFAULT_API_VERSION = "v1"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787
#: The documentation asks for about 5 seconds between requests (概ねリクエスト間隔は、5秒以上).
DEFAULT_MIN_INTERVAL = 5.0

MultipartSubtype = Literal["form-data", "mixed"]


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """Settings of one simulator; the defaults are the demo's (no real credentials anywhere)."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    api_key: str = DEFAULT_API_KEY
    source_uuid: str = DEFAULT_SOURCE_UUID
    api_version: str = DEFAULT_API_VERSION
    #: Seconds required between the starts of two accepted requests; 0 turns the limit off.
    min_interval: float = DEFAULT_MIN_INTERVAL
    #: The platform's subtype is undocumented; clients must accept both.
    multipart_subtype: MultipartSubtype = "form-data"
    #: Tenants this key may read; None means every seeded tenant except the foreign one.
    allowed_tenants: frozenset[str] | None = None
    #: False sends parts without Content-Disposition (clients must then go by order and type).
    named_parts: bool = True
    #: Largest body chunk handed to the HTTP server while streaming a recording.
    chunk_size: int = DEFAULT_CHUNK_SIZE

    def __post_init__(self) -> None:
        if not self.api_key.strip():
            raise ValueError("api_key must not be empty")
        if self.min_interval < 0:
            raise ValueError("min_interval must be >= 0")
        if self.chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        if self.multipart_subtype not in ("form-data", "mixed"):
            raise ValueError("multipart_subtype must be 'form-data' or 'mixed'")

    @property
    def readable_tenants(self) -> frozenset[str]:
        return DEFAULT_ALLOWED_TENANTS if self.allowed_tenants is None else frozenset(self.allowed_tenants)

    @property
    def endpoint_path(self) -> str:
        return f"/general/{self.api_version}/{self.source_uuid}/call/audio_data"
