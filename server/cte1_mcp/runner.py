"""Start the server on a transport: stdio for local clients, Streamable HTTP for remote ones."""

from __future__ import annotations

import logging
import socket
import sys
from typing import Any

from cte1_mcp.app_lifespan import on_shutdown
from cte1_mcp.audit import AuditLog
from cte1_mcp.errors import ConfigurationError
from cte1_mcp.log_flood import bound_floods, report_held
from cte1_mcp.mcp_server import Cte1MCPServer, Transport
from cte1_mcp.push import mount_push, warn_if_push_on_stdio
from cte1_mcp.repository.local.posix import private_dir
from cte1_mcp.service import RecordingService
from cte1_mcp.settings import Settings, is_loopback

logger = logging.getLogger(__name__)


#: Libraries that write whole messages at DEBUG, and the least level they log at here:
#: sse_starlette logs every event it sends (a recording read over HTTP went to stderr whole, base64,
#: with the results' phone numbers: a log has no retention and no 0600); httpx and httpcore log a
#: line per request and per header.
QUIET_LOGGERS = {"sse_starlette": logging.INFO, "httpx": logging.WARNING, "httpcore": logging.WARNING}


def configure_logging(settings: Settings) -> None:
    """Logs go to stderr (stdout is the MCP channel over stdio)."""
    level = logging.getLevelName(settings.log_level)
    logging.basicConfig(
        stream=sys.stderr,
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for name, least in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(max(least, level))


async def serve_stdio(settings: Settings, *, demo: bool = False) -> None:
    configure_logging(settings)
    audit = startup_checks(settings)
    async with RecordingService.open(settings) as service:
        announce(settings, "stdio")
        warn_if_push_on_stdio(settings)
        await mcp_server(service, "stdio", audit, demo=demo).run_stdio_async()


def mcp_server(
    service: RecordingService, transport: Transport, audit: AuditLog | None, **kwargs: Any
) -> Cte1MCPServer:
    """The MCP server, with an audit line per tool call and resource read when CTE1_AUDIT_LOG is set."""
    if audit is None:
        return Cte1MCPServer(service, transport, **kwargs)
    from cte1_mcp.audited_server import AuditedMCPServer

    return AuditedMCPServer(service, transport, audit=audit, **kwargs)


def _audit_log(settings: Settings) -> AuditLog | None:
    # Opened before anything else starts: a bad path is a configuration error (exit 2).
    return AuditLog(settings.audit_log) if settings.audit_log is not None else None


def startup_checks(settings: Settings, host: str | None = None) -> AuditLog | None:
    """What the settings alone cannot tell, all checked before failing, so every problem is said at
    once: the HTTP bind (``host``), the audit log (opened, and returned) and the store's directory
    (created private, or refused; the store checks it again when it opens)."""
    problems = http_problems(settings, host) if host is not None else []
    refusals: list[tuple[str, ConfigurationError]] = []
    audit = None
    try:
        audit = _audit_log(settings)
    except ConfigurationError as error:
        refusals.append(("CTE1_AUDIT_LOG", error))
    try:
        private_dir(settings.cache_dir.expanduser().absolute())
    except ConfigurationError as error:
        refusals.append(("CTE1_CACHE_DIR", error))
    if not problems and len(refusals) == 1:
        raise refusals[0][1]  # alone: as it is, with its own next step
    for name, refusal in refusals:
        said = refusal.message if refusal.message.startswith(name) else f"{name}: {refusal.message}"
        problems.append(f"  - {said} {refusal.next_step}")
    if problems:
        raise ConfigurationError("invalid configuration:\n" + "\n".join(problems))
    return audit


def announce(settings: Settings, transport: str) -> None:
    """One line on stderr once the server is ready, so a person at a terminal knows it did not hang.

    It names the upstream by host only (the path holds the sourceUuid), never the key.
    """
    url = settings.base_url
    upstream = f"{url.host}:{url.port}" if url.port not in (None, 443, 80) else url.host
    print(
        f"cte1-mcp: ready on {transport}; CT-e1 at {upstream}, recordings stored in {settings.cache_dir}",
        file=sys.stderr,
        flush=True,
    )


def http_problems(settings: Settings, host: str) -> list[str]:
    """What binding ``host`` still needs, every problem at once (as the settings check lists them)."""
    if is_loopback(host):
        return []
    problems = []
    if settings.http_token is None:
        problems.append(
            f"  - CTE1_HTTP_TOKEN: is required to serve on {host} (not loopback): "
            "a bearer token MCP clients must send"
        )
    if not settings.http_allowed_hosts:
        problems.append(
            f"  - CTE1_HTTP_ALLOWED_HOSTS: is required to serve on {host}: the Host header values "
            "clients use (e.g. mcp.example.internal:8000), checked against DNS rebinding"
        )
    return problems


async def serve_http(
    settings: Settings, host: str, port: int, *, stateless: bool = False, demo: bool = False
) -> None:
    """Streamable HTTP at ``/mcp``; DNS-rebinding protection always on; a token off loopback.

    ``stateless``: no session is kept in the process (each request carries all it needs), so
    replicas behind a load balancer can answer any request. Progress still reaches the caller:
    it travels on the SSE stream of the very POST that asked. ``demo``: see ``Cte1MCPServer``.
    """
    # Imported here: stdio never needs them, and start-up time is what a stdio client waits for.
    import uvicorn
    from mcp.server.auth.settings import AuthSettings
    from mcp.server.transport_security import TransportSecuritySettings

    from cte1_mcp.http_auth import StaticTokenVerifier
    from cte1_mcp.http_deadlines import DeadlinedH11Protocol
    from cte1_mcp.http_download import download_route
    from cte1_mcp.http_json import PlainJsonAnswers

    configure_logging(settings)
    audit = startup_checks(settings, host)
    allowed_hosts = list(settings.http_allowed_hosts)
    if is_loopback(host):
        # The address bound too (127.0.0.2 is loopback as well): the URL printed below must answer.
        bound = f"[{host.strip('[]')}]:*" if ":" in host else f"{host}:*"
        allowed_hosts += dict.fromkeys(["127.0.0.1:*", "localhost:*", "[::1]:*", bound])
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=allowed_hosts,
        allowed_origins=[f"http://{h}" for h in allowed_hosts] + [f"https://{h}" for h in allowed_hosts],
    )
    async with RecordingService.open(settings) as service:
        token = settings.http_token  # never blank: Settings refuses an empty one
        server = mcp_server(
            service,
            "http",
            audit,
            demo=demo,
            token_verifier=StaticTokenVerifier(token) if token is not None else None,
            # Nominal issuer (a static token, no OAuth server); fixed, so an IPv6 bind address
            # never has to be turned into a URL.
            auth=(
                AuthSettings(issuer_url="http://localhost", resource_server_url=None)
                if token is not None
                else None
            ),
        )
        app = server.streamable_http_app(transport_security=security, host=host, stateless_http=stateless)
        # Beside /mcp, in the same app: its authentication middleware checks the token for both.
        app.router.routes.append(download_route(service, security, audit, token_required=token is not None))
        mount_push(app, settings, service.repository, audit, security)
        on_shutdown(app, report_held)  # the warnings the flood filter still holds
        config = uvicorn.Config(
            PlainJsonAnswers(app, "/mcp"),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            http=DeadlinedH11Protocol,
        )
        http = uvicorn.Server(config)
        bound_floods()  # after uvicorn.Config, which (re)configures its loggers
        # Listening before the line is printed: whoever reads it can connect at once (and port 0
        # shows the port chosen).
        with _listening_socket(host, port) as sock:
            shown = f"[{host}]" if ":" in host else host
            mode = " (stateless)" if stateless else ""
            print(
                f"cte1-mcp: Streamable HTTP{mode} on http://{shown}:{sock.getsockname()[1]}/mcp",
                file=sys.stderr,
                flush=True,
            )
            await http.serve(sockets=[sock])


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on accepted
    # sockets whose protocol says TCP, and with it on, an answer written in two parts waits for
    # the client's delayed ACK: 44 ms on every request over a kept-alive connection.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigurationError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc})",
            next_step="Choose another --port (or stop what uses it), or a --host this machine has.",
        ) from None
    return sock
