"""POSIX helpers of the local store: private directories, link-free walks, whole writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cte1_mcp.errors import ConfigurationError
from cte1_mcp.repository.local import posix


@pytest.mark.parametrize("most", [1, 7, 4096])
def test_short_writes_resume_where_they_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, most: int
) -> None:
    """A disk cannot be made to write short on demand: write here writes at most ``most`` bytes."""
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:most])))
    data = os.urandom(70_000)
    path = tmp_path / "out"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        posix.write_all(fd, data)
    finally:
        os.close(fd)
    assert path.read_bytes() == data


def test_a_write_that_writes_nothing_is_an_error_not_a_busy_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "write", lambda fd, data: 0)
    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with pytest.raises(OSError, match="wrote nothing"):
            posix.write_all(fd, b"abc")
    finally:
        os.close(fd)


# --- the root: every refusal a ConfigurationError naming CTE1_CACHE_DIR --------------------------


def test_a_root_below_a_dangling_symlink_is_refused_without_recursing(tmp_path: Path) -> None:
    """Regression: the recursive mkdir went on until RecursionError (8,800 lines of traceback)."""
    (tmp_path / "gone").symlink_to(tmp_path / "does-not-exist")
    root = tmp_path / "gone" / "cache" / "cte1-mcp"
    with pytest.raises(ConfigurationError) as refused:
        posix.private_dir(root)
    rendered = refused.value.render()
    assert "CTE1_CACHE_DIR" in rendered
    assert "symbolic link to something that does not exist" in rendered
    assert not (tmp_path / "does-not-exist").exists()


def test_a_root_under_proc_is_refused_without_recursing() -> None:
    with pytest.raises(ConfigurationError) as refused:
        posix.private_dir(Path("/proc/cte1-mcp/cache"))
    assert "CTE1_CACHE_DIR" in refused.value.render()


def test_a_root_below_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigurationError, match="cannot be created"):
        posix.private_dir(tmp_path / "file" / "cache")


# --- inside the store: no link is ever followed ------------------------------------------------


def test_open_dir_makes_missing_directories_private_and_refuses_links(tmp_path: Path) -> None:
    top = tmp_path / "top"
    top.mkdir(mode=0o700)
    fd = posix.open_dir(top, ("a", "b"), create=True)
    assert fd is not None
    os.close(fd)
    assert (top / "a" / "b").is_dir()
    assert posix.open_dir(top, ("a", "missing"), create=False) is None
    outside = tmp_path / "outside"
    outside.mkdir()
    (top / "a" / "link").symlink_to(outside)
    with pytest.raises(posix.LinkInStore, match="symbolic link"):
        posix.open_dir(top, ("a", "link", "c"), create=True)
    assert list(outside.iterdir()) == []


def test_a_directory_named_like_a_temporary_file_is_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: removing it raised IsADirectoryError, which broke the cleaning of tmp/."""
    stray = tmp_path / "stray.part"
    stray.mkdir()
    assert posix.remove_if_unlocked(stray) is False
    assert stray.is_dir()
    assert "not a file this store made" in caplog.text


def test_remove_tree_deletes_links_as_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("not the store's")
    inside = tmp_path / "inside"
    (inside / "sub").mkdir(parents=True)
    (inside / "sub" / "file").write_text("x")
    (inside / "link").symlink_to(outside)
    fd = os.open(inside, os.O_RDONLY | os.O_DIRECTORY)
    try:
        posix.remove_tree(fd)
    finally:
        os.close(fd)
    assert list(inside.iterdir()) == []
    assert (outside / "keep").read_text() == "not the store's"
