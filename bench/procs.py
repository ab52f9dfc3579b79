"""Processes: free loopback ports, waiting for a listener, peak RSS from /proc, clean stops."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: The project's virtualenv, whichever interpreter runs the benchmark.
VENV_BIN = Path(sys.executable).parent
CTE1_MCP = VENV_BIN / "cte1-mcp"
#: The repository root: the working directory of ``python -m bench.<module>`` helpers.
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1 (released again for the caller to bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes] | None = None, timeout: float = 20.0) -> None:
    """Block until something accepts connections on 127.0.0.1:port (or the process dies)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process {process.args!r} exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout} s")


def proc_status_kib(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/<pid>/status, in KiB (VmHWM is the peak resident set size)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == field:
            number, _, unit = value.strip().partition(" ")
            if unit != "kB":
                raise ValueError(f"unexpected unit {unit!r} for {field}")
            return int(number)
    raise KeyError(f"{field} not in /proc/{pid}/status")


def vm_hwm_bytes(pid: int) -> int:
    """The process's peak resident set size so far."""
    return proc_status_kib(pid, "VmHWM") * 1024


def reset_peak_rss(pid: int) -> None:
    """Start the process's peak RSS (VmHWM) afresh from its current RSS (Linux ``clear_refs``)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def vm_rss_bytes(pid: int) -> int:
    return proc_status_kib(pid, "VmRSS") * 1024


def children(parent: int | None = None) -> set[int]:
    """Pids of the direct children of ``parent`` (this process by default), from /proc."""
    parent = os.getpid() if parent is None else parent
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ")".
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 1 and int(fields[1]) == parent:
            found.add(int(entry.name))
    return found


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def stop(process: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """SIGTERM this one process (by its pid), then SIGKILL if it lingers; reap it."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


def close(process: subprocess.Popen[Any], timeout: float) -> None:
    """End a child that stops when its stdin closes: close stdin, wait, stop it if it lingers."""
    if process.stdin is not None:
        process.stdin.close()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        stop(process)
    if process.stdout is not None:
        process.stdout.close()


def clean_env(**overrides: str) -> dict[str, str]:
    """This process's environment without any CTE1_* setting, plus the given ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTE1_")}
    env.update(overrides)
    return env
