"""The probe child of a model: ended when its caller gives up or its time is up, never left running."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import pytest

from cte1_mcp.transcribe.engines import child_probe

#: A probe that never ends (a large model on a slow CPU), saying when it has started.
ENDLESS = """
import os, pathlib, time
started = pathlib.Path(os.environ["ENDLESS_PROBE_STARTED"])
started.with_suffix(".part").write_text(str(os.getpid()))
started.with_suffix(".part").rename(started)
time.sleep(600)
"""


@pytest.fixture
def endless(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """A module of a name of its own the child can import, and where it says it started."""
    module = f"endless_probe_{secrets.token_hex(4)}"
    (tmp_path / f"{module}.py").write_text(ENDLESS)
    started = tmp_path / "started"
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("ENDLESS_PROBE_STARTED", str(started))
    return module, started


def running(module: str) -> list[int]:
    """The live processes running ``module`` (a zombie, not yet reaped, counts as ended)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if module.encode() in (entry / "cmdline").read_bytes():
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def test_a_caller_giving_up_kills_the_child(endless: tuple[str, Path]) -> None:
    module, started = endless
    with child_probe.stopped_by(started.exists), pytest.raises(child_probe.ProbeStopped):
        child_probe.run(module, {}, timeout=600)
    assert running(module) == []


def test_a_child_past_its_time_is_killed(endless: tuple[str, Path]) -> None:
    module, _ = endless
    with pytest.raises(subprocess.TimeoutExpired):
        child_probe.run(module, {}, timeout=2)
    assert running(module) == []


def test_outside_stopped_by_nothing_asks_and_a_probe_that_ends_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "quick_probe.py").write_text(
        "import sys\nprint('not json')\nprint('{\"ok\": true}')\nprint('native log line', file=sys.stderr)\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    outcome = child_probe.run("quick_probe", {}, timeout=60)
    assert outcome.ok and outcome.log == ["native log line"]
