"""The probe child of a model: ended when its caller gives up or its time is up, never left running."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cte1_mcp.transcribe.engines import child_probe

#: A probe that never ends (a large model on a slow CPU), saying its pid first.
ENDLESS = """
import os, pathlib, sys, time
pathlib.Path(os.environ["ENDLESS_PROBE_STARTED"]).write_text(str(os.getpid()))
print('{"step": "load"}', flush=True)
time.sleep(600)
"""


@pytest.fixture
def endless(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The module ``endless_probe`` importable by the child; returns where it writes its pid."""
    (tmp_path / "endless_probe.py").write_text(ENDLESS)
    started = tmp_path / "started"
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("ENDLESS_PROBE_STARTED", str(started))
    return started


def running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, not yet reaped, counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_caller_giving_up_kills_the_child(endless: Path) -> None:
    with child_probe.stopped_by(endless.exists), pytest.raises(child_probe.ProbeStopped):
        child_probe.run("endless_probe", {}, timeout=600)
    assert not running(int(endless.read_text()))


def test_a_child_past_its_time_is_killed(endless: Path) -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        child_probe.run("endless_probe", {}, timeout=2)
    assert not running(int(endless.read_text()))


def test_outside_stopped_by_nothing_asks_and_a_probe_that_ends_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "quick_probe.py").write_text(
        "import sys\nprint('not json')\nprint('{\"ok\": true}')\nprint('native log line', file=sys.stderr)\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    outcome = child_probe.run("quick_probe", {}, timeout=60)
    assert outcome.ok and outcome.log == ["native log line"]
