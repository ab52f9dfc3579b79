"""Start the server on a transport: stdio for local clients, Streamable HTTP for remote ones."""

from __future__ import annotations

import logging
import sys

from cte1_mcp.errors import ConfigurationError
from cte1_mcp.mcp_server import Cte1MCPServer
from cte1_mcp.service import RecordingService
from cte1_mcp.settings import Settings, is_loopback

logger = logging.getLogger(__name__)


def configure_logging(settings: Settings) -> None:
    """Logs go to stderr (stdout is the MCP channel over stdio); httpx's per-request lines stay quiet."""
    logging.basicConfig(
        stream=sys.stderr,
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLevelName(settings.log_level)))


async def serve_stdio(settings: Settings) -> None:
    configure_logging(settings)
    async with RecordingService.open(settings) as service:
        await Cte1MCPServer(service, "stdio").run_stdio_async()


async def serve_http(settings: Settings, host: str, port: int) -> None:
    """Streamable HTTP at ``/mcp``; DNS-rebinding protection always on; a token off loopback."""
    # Imported here: stdio never needs them, and start-up time is what a stdio client waits for.
    import uvicorn
    from mcp.server.auth.settings import AuthSettings
    from mcp.server.transport_security import TransportSecuritySettings

    from cte1_mcp.http_auth import StaticTokenVerifier

    configure_logging(settings)
    loopback = is_loopback(host)
    if not loopback and settings.http_token is None:
        raise ConfigurationError(
            f"serving on {host} (not loopback) requires CTE1_HTTP_TOKEN: a bearer token MCP clients must send"
        )
    allowed_hosts = list(settings.http_allowed_hosts)
    if loopback:
        allowed_hosts += ["127.0.0.1:*", "localhost:*", "[::1]:*"]
    elif not allowed_hosts:
        raise ConfigurationError(
            f"serving on {host} requires CTE1_HTTP_ALLOWED_HOSTS: the Host header values clients use "
            "(e.g. mcp.example.internal:8000), checked against DNS rebinding"
        )
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=allowed_hosts,
        allowed_origins=[f"http://{h}" for h in allowed_hosts] + [f"https://{h}" for h in allowed_hosts],
    )
    async with RecordingService.open(settings) as service:
        token = settings.http_token
        server = Cte1MCPServer(
            service,
            "http",
            token_verifier=StaticTokenVerifier(token) if token else None,
            # Nominal issuer (a static token, no OAuth server); fixed, so an IPv6 bind address
            # never has to be turned into a URL.
            auth=AuthSettings(issuer_url="http://localhost", resource_server_url=None) if token else None,
        )
        app = server.streamable_http_app(transport_security=security, host=host)
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
        http = uvicorn.Server(config)
        shown = f"[{host}]" if ":" in host else host
        print(f"cte1-mcp: Streamable HTTP on http://{shown}:{port}/mcp", file=sys.stderr, flush=True)
        await http.serve()
