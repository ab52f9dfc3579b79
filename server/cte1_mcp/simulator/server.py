"""Running the simulator: in the foreground for the CLI, or in a background thread for tests and the demo."""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from cte1_mcp.simulator.app import create_app
from cte1_mcp.simulator.config import DEFAULT_API_KEY, DEFAULT_API_VERSION, SimulatorConfig
from cte1_mcp.simulator.state import SimulatorState

logger = logging.getLogger(__name__)

_STARTUP_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class RunningSimulator:
    """A simulator that is listening: where it is, how it is configured, and its test hooks."""

    url: str
    config: SimulatorConfig
    state: SimulatorState

    @property
    def audio_data_url(self) -> str:
        return self.url + self.config.endpoint_path

    def env(self) -> dict[str, str]:
        """The ``CTE1_*`` variables that point the MCP server at this simulator (key included)."""
        return client_env(self.url, self.config)


def client_env(url: str, config: SimulatorConfig) -> dict[str, str]:
    env = {
        "CTE1_BASE_URL": url,
        "CTE1_SOURCE_UUID": config.source_uuid,
        "CTE1_API_KEY": config.api_key,
        "CTE1_MIN_INTERVAL_SECONDS": f"{config.min_interval:g}",
    }
    if config.api_version != DEFAULT_API_VERSION:
        env["CTE1_API_VERSION"] = config.api_version
    return env


def _uvicorn_config(
    config: SimulatorConfig, state: SimulatorState, *, embedded: bool, tls_pem: Path | None
) -> uvicorn.Config:
    """``embedded``: inside another program (tests, demo), whose logging setup must be left alone.
    ``tls_pem``: serve HTTPS with this PEM file's private key and certificate chain."""
    return uvicorn.Config(
        create_app(config, state),
        host=config.host,
        port=config.port,
        access_log=False,
        log_level="warning",
        log_config=None if embedded else uvicorn.config.LOGGING_CONFIG,
        lifespan="off",
        # A benchmark client that stops reading must not hold a shutdown forever.
        timeout_graceful_shutdown=2,
        ssl_certfile=tls_pem,
    )


def _url(config: SimulatorConfig, tls_pem: Path | None) -> str:
    return f"{'https' if tls_pem else 'http'}://{_url_host(config.host)}:{config.port}"


def serve(config: SimulatorConfig, *, tls_pem: Path | None = None) -> None:
    """Serve until interrupted (Ctrl-C), after one line saying how to point the MCP server here.

    The socket is bound and listening before that line is printed, so whoever reads it (a person,
    a script waiting for it) can connect at once, and port 0 prints the port actually chosen.
    With ``tls_pem`` (the server's private key and certificate chain) it serves HTTPS.
    """
    sock = _listening_socket(config)
    bound = dataclasses.replace(config, port=sock.getsockname()[1])
    url = _url(bound, tls_pem)
    env = client_env(url, bound)
    if config.api_key != DEFAULT_API_KEY:
        env["CTE1_API_KEY"] = "<the key given with --api-key>"
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    logger.setLevel(logging.INFO)
    logger.info(
        "CT-e1 simulator listening on %s — point cte1-mcp at it with: %s",
        url,
        " ".join(f"{name}={value}" for name, value in env.items()),
    )
    try:
        server = uvicorn.Server(_uvicorn_config(bound, SimulatorState(), embedded=False, tls_pem=tls_pem))
        server.run(sockets=[sock])
    finally:
        sock.close()


def _listening_socket(config: SimulatorConfig) -> socket.socket:
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY: see runner.py
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((config.host, config.port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


@contextmanager
def run_in_thread(
    config: SimulatorConfig | None = None,
    *,
    state: SimulatorState | None = None,
    tls_pem: Path | None = None,
) -> Iterator[RunningSimulator]:
    """Start a simulator in a daemon thread, wait until it accepts, stop it on exit.

    It binds ``config.host``:``config.port``; port 0 (and the default when no config is given)
    means a free port, so tests and the demo never collide with a foreground ``cte1-mcp simulator``.
    The socket is bound here, before the thread starts, so the port is known without a race.
    With ``tls_pem`` (the server's private key and certificate chain) it serves HTTPS.
    """
    config = config or SimulatorConfig(port=0)
    state = state if state is not None else SimulatorState()
    sock = _listening_socket(config)
    bound = dataclasses.replace(config, port=sock.getsockname()[1])
    server = uvicorn.Server(_uvicorn_config(bound, state, embedded=True, tls_pem=tls_pem))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="cte1-simulator", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + _STARTUP_TIMEOUT
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the CT-e1 simulator did not start")
            time.sleep(0.005)
        yield RunningSimulator(_url(bound, tls_pem), bound, state)
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout=5)
        sock.close()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
