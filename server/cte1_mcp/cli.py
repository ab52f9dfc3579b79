"""The ``cte1-mcp`` command: serve (stdio / HTTP, or against the embedded simulator), simulator, demo.

Heavy modules are imported inside each command so start-up stays quick and ``--help`` instant.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

import anyio
import click

from cte1_mcp import __version__
from cte1_mcp.errors import ConfigurationError

T = TypeVar("T")

#: Exit status for bad or missing configuration (the settings error lists every problem).
EXIT_CONFIG = 2


@click.group(invoke_without_command=True)
@click.version_option(__version__, prog_name="cte1-mcp")
@click.pass_context
def main(ctx: click.Context) -> None:
    """MCP server for CT-e1/SaaS call recordings. With no command: serve MCP over stdio."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(serve)


@main.command()
@click.option("--transport", type=click.Choice(["stdio", "http"]), default="stdio", show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="HTTP bind address.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="HTTP port.")
@click.option(
    "--demo", is_flag=True, help="Serve against the embedded CT-e1 simulator; needs no configuration."
)
def serve(
    transport: Literal["stdio", "http"] = "stdio",
    host: str = "127.0.0.1",
    port: int = 8000,
    demo: bool = False,
) -> None:
    """Serve MCP: over stdio (default) or Streamable HTTP at /mcp."""
    from cte1_mcp import runner
    from cte1_mcp.settings import load_settings

    with _simulator_settings() if demo else _nothing() as overrides:
        settings = _or_exit(lambda: load_settings(**overrides))
        if transport == "stdio":
            _run(lambda: runner.serve_stdio(settings))
        else:
            _run(lambda: runner.serve_http(settings, host, port))


@main.command()
@click.option("--host", default=None, help="Bind address.  [default: 127.0.0.1]")
@click.option("--port", default=None, type=click.IntRange(0, 65535), help="Port.  [default: 8787]")
@click.option(
    "--api-key",
    envvar="CTE1_SIMULATOR_API_KEY",
    default=None,
    help="Key clients must send (or CTE1_SIMULATOR_API_KEY).  [default: the public demo key]",
)
@click.option("--source-uuid", default=None, help="Accepted sourceUuid.  [default: the demo UUID]")
@click.option(
    "--min-interval",
    default=None,
    type=click.FloatRange(0),
    help="Refuse requests closer together than this many seconds; 0 turns it off.  [default: 5]",
)
def simulator(
    host: str | None,
    port: int | None,
    api_key: str | None,
    source_uuid: str | None,
    min_interval: float | None,
) -> None:
    """Run the embedded CT-e1 simulator (the General API's audio_data endpoint with sample calls)."""
    from cte1_mcp.simulator import SimulatorConfig
    from cte1_mcp.simulator.server import serve as serve_simulator

    config = SimulatorConfig()
    serve_simulator(
        SimulatorConfig(
            host=host or config.host,
            port=config.port if port is None else port,
            api_key=api_key or config.api_key,
            source_uuid=source_uuid or config.source_uuid,
            min_interval=config.min_interval if min_interval is None else min_interval,
        )
    )


@main.command()
@click.option(
    "--output",
    default="cte1-demo",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the demo saves the WAV it fetches.",
)
def demo(output: Path) -> None:
    """Walk through the server against the simulator with the official MCP client (under a minute)."""
    from cte1_mcp.demo import run_demo

    _run(lambda: run_demo(output))


@contextmanager
def _simulator_settings() -> Iterator[dict[str, Any]]:
    """A simulator on a free loopback port, and the settings that point the server at it."""
    from cte1_mcp.settings import default_cache_dir
    from cte1_mcp.simulator import DEFAULT_API_KEY, DEFAULT_SOURCE_UUID, SimulatorConfig
    from cte1_mcp.simulator.server import run_in_thread

    with run_in_thread(SimulatorConfig(port=0)) as running:
        yield {
            "base_url": running.url,
            "source_uuid": DEFAULT_SOURCE_UUID,
            "api_key": DEFAULT_API_KEY,
            "api_key_file": None,
            "cache_dir": Path(os.environ.get("CTE1_CACHE_DIR") or default_cache_dir() / "demo"),
        }


@contextmanager
def _nothing() -> Iterator[dict[str, Any]]:
    yield {}


def _or_exit(build: Callable[[], T]) -> T:
    try:
        return build()
    except ConfigurationError as error:
        click.echo(f"cte1-mcp: {error.message}", err=True)
        sys.exit(EXIT_CONFIG)


def _run(main_coroutine: Callable[[], Coroutine[Any, Any, None]]) -> None:
    try:
        anyio.run(main_coroutine)
    except ConfigurationError as error:
        click.echo(f"cte1-mcp: {error.message}", err=True)
        sys.exit(EXIT_CONFIG)
    except KeyboardInterrupt:
        sys.exit(130)
