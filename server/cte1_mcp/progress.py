"""What a waiting caller is told while its recording is queued, downloaded or analysed.

One event type and one callback type for every layer: the service emits them, the MCP layer turns
them into progress notifications.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeAlias


@dataclass(frozen=True, slots=True)
class Progress:
    """Queued behind the rate limit, bytes received so far, analysis or a clip under way."""

    stage: Literal["waiting", "downloading", "analysing", "cutting", "transcribing"]
    done: float
    total: float | None
    message: str


ProgressCallback: TypeAlias = Callable[[Progress], Awaitable[None]]
