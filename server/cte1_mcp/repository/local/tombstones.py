"""Tombstones: what is left of a call past the platform's 31 days, so ``recording_expired`` needs
no request. ``expired/<tenant>/<session>/<record>.json`` holds the date and nothing personal."""

from __future__ import annotations

import logging
import os
from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from cte1_mcp.errors import StorageError
from cte1_mcp.models import PLATFORM_RETENTION, CallKey
from cte1_mcp.repository.local.layout import Layout, keys_under
from cte1_mcp.repository.local.posix import (
    create_locked_temp,
    fsync_dir,
    open_dir,
    prune,
    read_file,
    unlink_quietly,
    write_all,
)

logger = logging.getLogger(__name__)

#: A tombstone outlives the recording it stands for by this long; after that, "expired" is old news.
TOMBSTONE_TTL = PLATFORM_RETENTION


class _Tombstone(BaseModel):
    model_config = ConfigDict(frozen=True)

    available_until: AwareDatetime


class Tombstones:
    def __init__(self, layout: Layout) -> None:
        self._layout = layout

    def write(self, key: CallKey, until: datetime) -> None:
        """Remember, atomically, that the platform kept ``key``'s audio only until ``until``."""
        (tenant, session), name = self._layout.tombstone_parts(key)
        fd, part = create_locked_temp(self._layout.tmp)
        try:
            write_all(fd, _Tombstone(available_until=until).model_dump_json().encode())
            os.fsync(fd)
            dir_fd = open_dir(self._layout.expired, (tenant, session), create=True)
            assert dir_fd is not None
            try:
                os.replace(part, name, dst_dir_fd=dir_fd)
                fsync_dir(dir_fd)
            finally:
                os.close(dir_fd)
        finally:
            os.close(fd)
            unlink_quietly(part)

    def read(self, key: CallKey) -> datetime | None:
        (tenant, session), name = self._layout.tombstone_parts(key)
        try:
            dir_fd = open_dir(self._layout.expired, (tenant, session), create=False)
            if dir_fd is None:
                return None
            try:
                raw = read_file(name, dir_fd=dir_fd, limit=4096)
            finally:
                os.close(dir_fd)
            return _Tombstone.model_validate_json(raw).available_until
        except (OSError, ValidationError, StorageError):
            return None

    def forget(self, key: CallKey) -> None:
        """Delete ``key``'s tombstone; one that cannot be deleted (a directory in its place, a
        read-only store) is logged and left: it holds nothing personal, and must not stop a sweep."""
        path = self._layout.tombstone_path(key)
        try:
            unlink_quietly(path)
        except OSError as exc:
            logger.warning("leaving the tombstone %s in place: %s", path, exc.strerror or exc)
            return
        prune(path.parent, self._layout.expired)

    def clean(self, now: datetime) -> None:
        """Delete tombstones that are old news (or unreadable)."""
        for key in keys_under(self._layout.expired, suffix=".json"):
            until = self.read(key)
            if until is None or now >= until + TOMBSTONE_TTL:
                self.forget(key)
