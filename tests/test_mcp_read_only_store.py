"""A cache directory the server can no longer write: stored recordings are served, a new one is
refused with ``[storage_error]`` naming the directory (never ``[internal_error]``).

Root is not stopped by ``chmod``; a read-only bind mount in the server's own mount namespace
gives the real EROFS (see tests/helpers/namespaces.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError

from tests.helpers.namespaces import namespaced_server, needs_mounts
from tests.mcp_harness import EXAMPLE, SMALL, call_uri, server_env, stdio_server, structured, text

pytestmark = [pytest.mark.anyio, needs_mounts]


async def _refused_for_new_recordings(client: Any, cache: Path, named: str = "coordination/") -> None:
    structured(await client.call_tool("get_call_metadata", EXAMPLE))  # stored before: still served
    for tool in ("get_call_metadata", "get_call_audio", "get_call_analytics"):
        result = await client.call_tool(tool, SMALL)
        assert result.is_error
        message = text(result)
        assert message.startswith("[storage_error]"), message
        next_step = message.split("Next:", 1)[1]
        assert "CTE1_CACHE_DIR" in next_step and named in next_step  # names the directory
        assert str(cache) not in message  # by its setting: the path is for the operator's log
        assert "Read-only file system" in message
    with pytest.raises(MCPError) as caught:
        await client.read_resource(call_uri(SMALL, "metadata"))
    assert caught.value.data["code"] == "storage_error"


async def test_a_store_made_read_only_while_serving(simulator: Any, tmp_path: Path) -> None:
    # Before: the download lock file's EROFS escaped as [internal_error].
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    env = server_env(simulator.url, cache)
    with (tmp_path / "stderr").open("w") as errlog:
        async with namespaced_server(env, f"mount --bind {cache} {cache}", tmp_path, errlog) as server:
            structured(await server.client.call_tool("get_call_metadata", EXAMPLE))
            server.run(f"mount -o remount,bind,ro {cache}")
            await _refused_for_new_recordings(server.client, cache)
    assert len(simulator.state.requests) == 1  # nothing was asked of CT-e1 that could not be kept
    log = (tmp_path / "stderr").read_text()
    assert f"the coordination files in {cache}/coordination" in log  # the operator gets the path
    assert "Traceback" not in log


async def test_a_store_read_only_from_the_start(simulator: Any, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = server_env(simulator.url, cache)
    async with stdio_server(env) as client:
        structured(await client.call_tool("get_call_metadata", EXAMPLE))
    read_only = f"mount --bind {cache} {cache} && mount -o remount,bind,ro {cache}"
    async with namespaced_server(env, read_only, tmp_path) as server:
        await _refused_for_new_recordings(server.client, cache)
    assert len(simulator.state.requests) == 1


async def test_a_staging_directory_made_read_only(simulator: Any, tmp_path: Path) -> None:
    # The lock files still work; the download cannot be written: the next step names the store.
    cache = tmp_path / "cache"
    env = server_env(simulator.url, cache)
    async with namespaced_server(env, "true", tmp_path) as server:
        structured(await server.client.call_tool("get_call_metadata", EXAMPLE))
        server.run(f"mount --bind {cache}/tmp {cache}/tmp && mount -o remount,bind,ro {cache}/tmp")
        await _refused_for_new_recordings(server.client, cache, named="tmp/")


async def test_a_store_of_an_older_version_read_only_from_the_start(simulator: Any, tmp_path: Path) -> None:
    # Before: the pushed/ directory (new with CT-e1's push) was made at start-up, and failed here.
    cache = tmp_path / "cache"
    env = server_env(simulator.url, cache)
    async with stdio_server(env) as client:
        structured(await client.call_tool("get_call_metadata", EXAMPLE))
    if (cache / "pushed").exists():
        (cache / "pushed").rmdir()  # as an older version left it
    read_only = f"mount --bind {cache} {cache} && mount -o remount,bind,ro {cache}"
    async with namespaced_server(env, read_only, tmp_path) as server:
        await _refused_for_new_recordings(server.client, cache)
