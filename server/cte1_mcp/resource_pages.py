"""``resources/list`` one page at a time: the stored recordings in key order, behind an opaque cursor.

Listing 10,000 recordings at once built, validated and serialised 20,000 resources per request
(seconds); a page bounds that. The order is the call key (tenantId, then sessionId, recordId) and
the cursor names the last key served, not a position: recordings added or removed between pages
shift no one, and a recording fetched again meanwhile (new ``fetched_at``) keeps its place.

A walk reads the listing taken for its first page (a snapshot, kept a minute): the repository's
listing costs ~30 ms at 10,000 recordings, twenty times per walk otherwise. A cursor whose snapshot
is gone (older, or from before a restart) goes on from its key in a fresh listing, so no cursor this
server gave out stops working.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter

from mcp_types import Resource as MCPResource

from cte1_mcp.errors import InvalidParameter
from cte1_mcp.models import CallKey, Recording
from cte1_mcp.views import call_sentence, excerpt

#: Recordings per page (two resources each: audio and metadata).
PAGE_RECORDINGS = 500
#: How long a walk's snapshot is kept, and how many walks' snapshots at most.
SNAPSHOT_SECONDS = 60.0
MAX_SNAPSHOTS = 8
#: Longer cursors are refused before decoding (ours are under 100 characters).
MAX_CURSOR_CHARS = 200

_CURSOR = re.compile(r"v1:([A-Za-z0-9_-]{1,16}):([0-9]{1,32})/([0-9]{1,19})/([0-9]{1,19})")

Order = tuple[str, int, int]
_order: Callable[[Recording], Order] = attrgetter("tenant_id", "session_id", "record_id")


@dataclass(frozen=True, slots=True)
class Cursor:
    snapshot: str
    after: Order


@dataclass(frozen=True, slots=True)
class Page:
    resources: list[MCPResource]
    next_cursor: str | None


@dataclass(slots=True)
class _Snapshot:
    taken: float
    ordered: list[Recording]


@dataclass(slots=True)
class ResourcePages:
    """The pages of ``resources/list`` over a listing of the stored recordings."""

    listing: Callable[[], Awaitable[list[Recording]]]
    mask_numbers: bool
    size: int = PAGE_RECORDINGS
    clock: Callable[[], float] = time.monotonic
    _snapshots: OrderedDict[str, _Snapshot] = field(default_factory=OrderedDict)

    async def page(self, cursor: str | None) -> Page:
        """The first page, or the one after ``cursor``; InvalidParameter for a cursor not ours."""
        parsed = decode_cursor(cursor) if cursor is not None else None
        now = self.clock()
        for name in [n for n, s in self._snapshots.items() if now - s.taken > SNAPSHOT_SECONDS]:
            del self._snapshots[name]
        snapshot_id = parsed.snapshot if parsed is not None else None
        snapshot = self._snapshots.get(snapshot_id) if snapshot_id is not None else None
        if snapshot is None or snapshot_id is None:
            snapshot_id = secrets.token_urlsafe(6)
            snapshot = _Snapshot(now, sorted(await self.listing(), key=_order))
            self._snapshots[snapshot_id] = snapshot
            while len(self._snapshots) > MAX_SNAPSHOTS:
                self._snapshots.popitem(last=False)
        return page_of(
            snapshot.ordered,
            snapshot_id,
            parsed.after if parsed is not None else None,
            mask_numbers=self.mask_numbers,
            size=self.size,
        )


def page_of(
    ordered: Sequence[Recording], snapshot: str, after: Order | None, *, mask_numbers: bool, size: int
) -> Page:
    """The ``size`` recordings of ``ordered`` (in key order) after the key ``after``, as resources."""
    start = bisect.bisect_right(ordered, after, key=_order) if after is not None else 0
    chosen = ordered[start : start + size]
    resources: list[MCPResource] = []
    for recording in chosen:
        resources += resources_of(recording, mask_numbers=mask_numbers)
    more = start + size < len(ordered)
    return Page(resources, encode_cursor(Cursor(snapshot, _order(chosen[-1]))) if more else None)


def resources_of(recording: Recording, *, mask_numbers: bool) -> tuple[MCPResource, MCPResource]:
    """The recording's audio and metadata resources, from plain strings and ints (validating those
    costs ~2 µs a resource; pydantic's ``model_construct`` is slower, being pure Python)."""
    key = f"{recording.tenant_id}/{recording.session_id}/{recording.record_id}"
    uri = f"cte1://calls/{key}"
    name = f"call-{recording.tenant_id}-{recording.session_id}-{recording.record_id}"
    audio = MCPResource(
        uri=f"{uri}/audio",
        name=f"{name}-audio",
        title=f"Recording of call {key}",
        description=call_sentence(recording, mask_numbers=mask_numbers),
        mime_type=recording.audio.format.mime_type,
        size=recording.audio.size_bytes,
    )
    metadata = MCPResource(
        uri=f"{uri}/metadata",
        name=f"{name}-metadata",
        title=f"Metadata of call {key}",
        mime_type="application/json",
    )
    return audio, metadata


def encode_cursor(cursor: Cursor) -> str:
    """Opaque to clients (base64url): the walk's snapshot and the last key served."""
    tenant, session, record = cursor.after
    text = f"v1:{cursor.snapshot}:{tenant}/{session}/{record}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Cursor:
    """What a cursor names; InvalidParameter for anything this server did not give out."""
    if len(cursor) <= MAX_CURSOR_CHARS:
        try:
            text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        except (binascii.Error, ValueError):
            text = ""
        match = _CURSOR.fullmatch(text)
        if match is not None:
            try:
                key = CallKey(match[2], int(match[3]), int(match[4]))
            except ValueError:
                pass
            else:
                parsed = Cursor(match[1], (key.tenant_id, key.session_id, key.record_id))
                if encode_cursor(parsed) == cursor:  # one spelling per cursor: no look-alikes
                    return parsed
    raise InvalidParameter(
        f"The cursor {excerpt(cursor)} is not one this server gave out.",
        next_step="Pass back the nextCursor of the previous resources/list page exactly as received, "
        "or call resources/list without a cursor to start from the first page.",
    )
