"""What the benchmark ran on: CPU, cores, memory, Python and the versions that matter."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("cte1-mcp", "mcp", "httpx", "pydantic", "multipart", "anyio", "uvicorn", "requests-toolbelt")
CURL = "/usr/bin/curl"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                kib = int(line.split()[1])
                return f"{kib / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def curl_version() -> str:
    try:
        out = subprocess.run([CURL, "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "not found"
    first = out.splitlines()[0].split()
    return first[1] if len(first) > 1 else out.strip()


def describe() -> list[tuple[str, str]]:
    """Rows for the report's machine table."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    rows = [
        ("CPU", cpu_model()),
        ("cores", f"{os.cpu_count()} ({affinity} usable)"),
        ("memory", memory_total()),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
    ]
    rows += [(name, package_version(name)) for name in PACKAGES]
    rows.append(("curl", curl_version()))
    return rows
