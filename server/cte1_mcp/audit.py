"""``CTE1_AUDIT_LOG``: one JSON line per tool call and resource read, so operators can say who
fetched which recording (recordings are personal data).

Each line is appended with one ``write(2)`` on a file opened ``O_APPEND``, under an exclusive
``flock`` that every server process takes, so several processes may share one file and their
lines never interleave (local filesystems only: not NFS, whose appends are not atomic). The file
holds whole lines only: a write the disk cut short is truncated away before the call is refused,
and a cut tail left by a crash is removed before the next line is appended (the call it belonged
to was never answered: the line is written before the answer leaves). The file is opened for
every line, so a rotated log (renamed, then re-created) is picked up at once; it is created 0600
and refused if anyone else may read it, if it is a symbolic link, or if it is anything but a
regular file (opened ``O_NONBLOCK``, so a FIFO put in its place never blocks the server).

The service says when it really sent a request to CT-e1 through :func:`note_upstream_request`;
what a line records is read from the request and its result only (no token, no recording data).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from cte1_mcp.errors import ConfigurationError, StorageError

logger = logging.getLogger(__name__)

# O_RDWR: the tail is read back to repair it; O_NONBLOCK: opening a FIFO with no reader fails
# (ENXIO) instead of waiting for one (it has no effect on a regular file's reads and writes).
_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
#: A cut tail is read back in blocks of this size to find its line's start.
_TAIL_BLOCK = 4096
#: Longest client-given text (a URI, a tool name) copied into a line.
MAX_FIELD_CHARS = 200
_CALL_URI = re.compile(r"cte1://calls/([0-9]{1,32})/([0-9]{1,19})/([0-9]{1,19})/")


@dataclass(slots=True)
class UpstreamUse:
    """Set by the service when this call (or resource read) really sent a request to CT-e1."""

    requested: bool = False


_upstream: ContextVar[UpstreamUse | None] = ContextVar("cte1_audit_upstream", default=None)


def note_upstream_request() -> None:
    """The service is about to send a request to CT-e1 on behalf of the current call.

    The marker is a mutable object in a context variable, so a download running in another task
    (single-flight copies the first caller's context) still marks the call that started it.
    Callers that joined a download already under way are not marked: they caused no request.
    """
    use = _upstream.get()
    if use is not None:
        use.requested = True


@contextmanager
def watching_upstream() -> Iterator[UpstreamUse]:
    use = UpstreamUse()
    token = _upstream.set(use)
    try:
        yield use
    finally:
        _upstream.reset(token)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """What one line says; ``to_json`` is its one serialisation."""

    operation: str  # "tools/call" or "resources/read"
    transport: str
    identity: str | None  # the HTTP token's fingerprint; None over stdio (the local user runs it)
    client_name: str | None  # what the client calls itself (self-declared, for reading the log)
    tool: str | None
    resource: str | None
    call: str | None  # tenantId/sessionId/recordId
    outcome: str  # "ok" or the error's [code]
    bytes_served: int
    upstream_request: bool
    #: Only on a summary line: how many refused requests with this outcome it stands for.
    count: int | None = None

    def to_json(self, now: datetime | None = None) -> str:
        moment = (now or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        line = {
            "time": moment,
            "operation": self.operation,
            "transport": self.transport,
            "identity": self.identity,
            "clientName": self.client_name,
            "tool": self.tool,
            "resource": self.resource,
            "call": self.call,
            "outcome": self.outcome,
            "bytesServed": self.bytes_served,
            "upstreamRequest": self.upstream_request,
            **({"count": self.count} if self.count is not None else {}),
            "server": {"host": _HOST, "pid": os.getpid()},
        }
        return json.dumps(line, ensure_ascii=False, separators=(",", ":"))


_HOST = socket.gethostname()


class _Refused(ConfigurationError):
    """The file at the path is not one to append to: ``why``, without the path."""

    def __init__(self, message: str, *, why: str, next_step: str) -> None:
        super().__init__(message, next_step=next_step)
        self.why = why


class AuditLog:
    """Appends entries to ``path``; checked once at start-up so a bad path stops the server there."""

    def __init__(self, path: Path) -> None:
        self.path = path.expanduser().absolute()
        fd = self._open()  # refuse a bad file now, with exit 2, not at the first call
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            _whole_lines(fd, self.path)  # a cut tail from a crash is reported at start-up
        except OSError as exc:
            raise ConfigurationError(
                f"CTE1_AUDIT_LOG {self.path} cannot be used ({exc.strerror}).", next_step=_NEXT
            ) from None
        finally:
            os.close(fd)

    async def append(self, entry: AuditEntry) -> None:
        """``write`` from the event loop: in a worker thread (open, stat and write may wait on the
        disk), and shielded, so a call the client cancels is still recorded."""
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.write, entry)

    def write(self, entry: AuditEntry) -> None:
        """One line, one write: whole or not at all. Raises StorageError if it cannot be written:
        the caller then serves nothing, since an access that cannot be recorded must not happen."""
        data = (entry.to_json() + "\n").encode()
        try:
            fd = self._open()
        except _Refused as exc:  # the path is for the operator's log, not the client's text
            logger.error("%s", exc.message)  # noqa: TRY400 (no traceback: the cause is said)
            raise StorageError(f"The audit log (CTE1_AUDIT_LOG) {exc.why}.", next_step=_NEXT) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # one writer at a time: the repair below sees the real end
            end = _whole_lines(fd, self.path)
            try:
                written = os.write(fd, data)
            except OSError as exc:
                _truncate(fd, end)  # a write that failed may still have added part of the line
                raise StorageError(
                    f"The audit log could not be written ({exc.strerror}).", next_step=_NEXT
                ) from None
            if written != len(data):  # only on a full disk: the cut line goes, whole lines stay
                _truncate(fd, end)
                raise StorageError("The audit log is full (the line did not fit).", next_step=_NEXT)
        except OSError as exc:  # flock, fstat, pread, ftruncate: the file itself is unusable
            raise StorageError(
                f"The audit log could not be written ({exc.strerror}).", next_step=_NEXT
            ) from None
        finally:
            os.close(fd)  # releases the lock

    def _open(self) -> int:
        try:
            fd = os.open(self.path, _FLAGS, 0o600)
        except OSError as exc:
            why = {
                errno.ELOOP: "is a symbolic link",
                errno.ENXIO: "is not a regular file (a FIFO or a socket)",
                errno.EISDIR: "is not a regular file (a directory)",
            }.get(exc.errno or 0, f"cannot be opened ({exc.strerror})")
            raise _Refused(
                f"CTE1_AUDIT_LOG {self.path} {why}.",
                why=why,
                next_step="Point CTE1_AUDIT_LOG at a file this user may create or append to, in an existing directory.",
            ) from None
        info = os.fstat(fd)
        problem: str | None = None
        next_step = f"Run `chmod 600 {self.path}` if it is yours, or choose another path."
        if not stat.S_ISREG(info.st_mode):
            problem = "is not a regular file"  # a device, or a FIFO (opened O_RDWR, so not blocking)
            next_step = "Point CTE1_AUDIT_LOG at a regular file, or at a new path (it is created 0600)."
        elif info.st_uid != os.geteuid():
            problem = "belongs to another user"
        elif info.st_mode & 0o077:
            problem = f"may be read by other users (mode {stat.S_IMODE(info.st_mode):04o})"
        if problem is not None:
            os.close(fd)
            raise _Refused(
                f"CTE1_AUDIT_LOG {self.path} {problem}; it records who fetched which recording.",
                why=problem,
                next_step=next_step,
            )
        return fd


def _whole_lines(fd: int, path: Path) -> int:
    """The file's end after its last whole line: a cut tail (a crash mid-write, a full disk under
    an older version) is truncated away, so the next line starts on a line of its own."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    cut = 0
    end = size
    while end > 0:  # backwards, a block at a time, to the last newline (or the file's start)
        start = max(0, end - _TAIL_BLOCK)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            cut = start + newline + 1
            break
        end = start
    os.ftruncate(fd, cut)
    logger.warning("audit log %s ended in a cut line; removed its %d bytes", path, size - cut)
    return cut


def _truncate(fd: int, end: int) -> None:
    """Back to ``end``; if even that fails, the next write's tail repair does it."""
    try:
        os.ftruncate(fd, end)
    except OSError as exc:
        logger.warning("audit log: a cut line could not be removed yet (%s)", exc.strerror)


_NEXT = "Ask the operator to check CTE1_AUDIT_LOG (space, permissions); nothing is served until it can be written."


def call_of_arguments(arguments: dict[str, Any]) -> str | None:
    """``tenantId/sessionId/recordId`` when the arguments name a call plainly, else None."""
    tenant, session, record = (arguments.get(name) for name in ("tenantId", "sessionId", "recordId"))
    ids = (session, record)
    if (
        isinstance(tenant, str)
        and re.fullmatch(r"[0-9]{1,32}", tenant)
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 < v < 2**63 for v in ids)
    ):
        return f"{tenant}/{session}/{record}"
    return None


def call_of_uri(uri: str) -> str | None:
    match = _CALL_URI.match(uri)
    return "/".join(match.groups()) if match else None


def bounded(text: str) -> str:
    return text if len(text) <= MAX_FIELD_CHARS else text[:MAX_FIELD_CHARS] + "…"
