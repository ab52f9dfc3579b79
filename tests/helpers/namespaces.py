"""The server in a private mount namespace, for storage faults root cannot otherwise meet.

Tests run as root, for whom ``chmod`` stops no write and a disk is never full. A read-only bind
mount (EROFS) or a small tmpfs (ENOSPC, short writes), made in a mount namespace of the server's
own (``unshare -m``), gives the real errors without touching the machine's mounts: they vanish
with the process. The test reads and changes files there through ``/proc/<pid>/root``.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client


@functools.cache
def _can_mount() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = "mount -t tmpfs -o size=4k tmpfs /mnt"
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", probe], capture_output=True
    )
    return done.returncode == 0


needs_mounts = pytest.mark.skipif(
    not _can_mount(), reason="needs `unshare -m` and mount (root with CAP_SYS_ADMIN)"
)


@dataclass
class Namespaced:
    client: Client
    pid_file: Path

    def inside(self, path: Path) -> Path:
        """``path`` as the server sees it (its mounts, not ours)."""
        return Path(f"/proc/{self.pid_file.read_text().strip()}/root") / path.relative_to("/")

    def run(self, command: str) -> None:
        """A shell command in the server's mount namespace (``mount -o remount,ro …``)."""
        pid = self.pid_file.read_text().strip()
        subprocess.run(["nsenter", "-t", pid, "-m", "sh", "-c", command], check=True, timeout=30)


@asynccontextmanager
async def namespaced_server(
    env: dict[str, str], setup: str, work: Path, errlog: TextIO | None = None
) -> AsyncIterator[Namespaced]:
    """``cte1-mcp`` over stdio, started after the shell commands ``setup`` in its own mount
    namespace; its stderr goes to ``errlog`` (a real file) if given."""
    pid_file = work / "server.pid"
    script = f'{setup} && echo $$ > "$0" && exec "$1" -m cte1_mcp'
    params = StdioServerParameters(
        command="unshare",
        args=["-m", "--propagation", "private", "sh", "-c", script, str(pid_file), sys.executable],
        env=env,
    )
    transport = stdio_client(params, errlog=errlog) if errlog is not None else params
    async with Client(transport, read_timeout_seconds=60) as client:
        with anyio.fail_after(30):  # written before the exec, so at once
            while not pid_file.exists() or not pid_file.read_text().strip():
                await anyio.sleep(0.01)
        yield Namespaced(client, pid_file)
