"""``cte1-mcp check``: one real request that tells apart the ways a first set-up goes wrong.

The MCP tools map every failure to a code an assistant can act on; an operator setting the
server up needs the finer diagnosis instead: was it TLS, the key, the IP allow-list or the path?
So this sends exactly one documented request, for a call that surely does not exist, and reads
the answer at the HTTP level. The platform's documented answer to it is the "200 失敗" (HTTP 200,
JSON ``{"status": "error", ...}``): that, or a recording, proves URL, key, allow-list and TLS
right. The request keeps the spacing between requests the servers keep (shared through the
cache directory or Redis).
"""

from __future__ import annotations

import enum
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from cte1_mcp.coordination.base import Spacer
from cte1_mcp.cte1.answers import interpret
from cte1_mcp.cte1.client import retry_after_seconds, tls_context
from cte1_mcp.cte1.redaction import Redactor
from cte1_mcp.errors import CoordinationUnavailable
from cte1_mcp.models import CallKey
from cte1_mcp.settings import Settings

#: A session id no tenant reaches (the largest the platform's integer can hold).
PROBE_SESSION_ID = 2**31 - 1
#: How the platform words its documented refusal 許可されていないテナントの情報要求 (as the client reads it).
_TENANT_NOT_ALLOWED = (
    "許可されていないテナント",
    "tenant not allowed",
    "tenant is not permitted",
    "not permitted",
)


class Verdict(enum.Enum):
    """What the one answer says about the set-up; ``ok`` only for an answer the API documents."""

    ok = "ok"
    key_refused = "key_refused"
    tenant_refused = "tenant_refused"
    not_found = "not_found"
    rate_limited = "rate_limited"
    tls = "tls"
    unreachable = "unreachable"
    unexpected = "unexpected"
    redis_unreachable = "redis_unreachable"


@dataclass(frozen=True, slots=True)
class CheckResult:
    verdict: Verdict
    #: What the platform answered, in a line (the platform's words verbatim, the key redacted).
    answer: str
    #: What to do about it.
    next_step: str

    @property
    def exit_code(self) -> int:
        return 0 if self.verdict is Verdict.ok else 1


def probe_key(settings: Settings) -> CallKey:
    """A call that surely does not exist, of a tenant the operator named if they named any."""
    tenant = settings.allowed_tenants[0] if settings.allowed_tenants else "0"
    return CallKey(tenant, PROBE_SESSION_ID, 1)


async def run_check(
    settings: Settings,
    spacer: Spacer,
    *,
    key: CallKey | None = None,
    on_wait: Callable[[float], Awaitable[None]] | None = None,
) -> CheckResult:
    """Send the one request (after the shared spacing) and judge its answer."""
    # The operator named the tenant (CTE1_ALLOWED_TENANTS or --call): one the key may not read is a
    # problem. The placeholder tenant of the probe may well be refused: that answer is documented too.
    key = key or probe_key(settings)
    tenant_named = key != probe_key(settings) or bool(settings.allowed_tenants)
    redactor = Redactor(settings)
    verify = tls_context(settings)  # the server's trust: CTE1_CA_BUNDLE, or httpx's default
    try:
        await spacer.acquire(on_wait)
    except CoordinationUnavailable:
        return CheckResult(
            Verdict.redis_unreachable,
            "none: Redis unreachable (CTE1_REDIS_URL): no request is made to CT-e1 without the "
            "shared rate limiter",
            "Check that the Redis server CTE1_REDIS_URL names is running and that this machine may "
            "reach it (host, port, password, TLS), then run `cte1-mcp check` again; or unset "
            "CTE1_REDIS_URL when every server runs on this machine.",
        )
    try:
        async with (
            httpx.AsyncClient(
                timeout=settings.timeout_seconds,
                verify=verify,
                follow_redirects=False,
                # As the server connects: straight to CT-e1, whatever HTTP(S)_PROXY/ALL_PROXY say.
                trust_env=False,
                headers={"Accept-Encoding": "identity"},
            ) as http,
            http.stream(
                "POST",
                settings.audio_data_url,
                json=key.request_body(),
                headers={"Authorization": settings.authorization},
            ) as response,
        ):
            # A recording is not read: its headers are answer enough.
            body = b"" if _is_multipart(response) else await _head_of_body(response)
    except httpx.HTTPError as exc:
        return _transport_failure(exc, redactor)
    if response.status_code == 429:
        # Read as the server reads it (seconds or an HTTP date, capped), for everyone sharing the spacing.
        wait = retry_after_seconds(response.headers.get("retry-after"), cap=settings.max_retry_after_seconds)
        if wait is not None:
            await spacer.defer(wait)
    content_type = response.headers.get("content-type")
    return judge(
        response.status_code, content_type, body, redactor, tenant=key.tenant_id if tenant_named else None
    )


def judge(
    status: int, content_type: str | None, body: bytes, redactor: Redactor, *, tenant: str | None = None
) -> CheckResult:
    """The verdict for one HTTP answer to the probe; ``tenant``: the one the operator named, if any."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if status == 200 and media_type.startswith("multipart/"):
        return CheckResult(Verdict.ok, "HTTP 200 with a recording (multipart)", "Nothing to do.")
    said = interpret(body, content_type, redactor)
    words = f": {said.platform_message}" if said.platform_message else said.detail
    if status == 200 and said.rate_limited:
        return CheckResult(
            Verdict.rate_limited,
            f"HTTP 200 failure saying the rate limit was hit{words}",
            "Another client with this key made a request just before; run the check again in a few seconds.",
        )
    refused = (said.platform_message or "").lower()
    if (
        status == 200
        and media_type.endswith("json")
        and tenant is not None
        and any(marker.lower() in refused for marker in _TENANT_NOT_ALLOWED)
    ):
        return CheckResult(
            Verdict.tenant_refused,
            f"HTTP 200 failure{words} (the API key may not read tenant {tenant})",
            f"URL, key, IP allow-listing and TLS are right, but this key may not read tenant {tenant}: "
            "check the tenant id (CTE1_ALLOWED_TENANTS or --call), or ask the platform's administrator "
            "to add the tenant to the General API application (汎用API申込書).",
        )
    if status == 200 and media_type.endswith("json"):  # the "200 失敗", whatever its fields
        return CheckResult(
            Verdict.ok,
            f"HTTP 200 failure{words} (the documented answer for a call that does not exist)",
            "Nothing to do: URL, key, IP allow-listing and TLS are right.",
        )
    if status in (401, 402, 403):
        return CheckResult(
            Verdict.key_refused,
            f"HTTP {status}: the platform refused the API key",
            "Give the General API secret key of this sourceUuid as CTE1_API_KEY_FILE (a file whose "
            "first line is the key) or CTE1_API_KEY, then run `cte1-mcp check` again; if it is the "
            "key you were given, ask the platform's administrator whether it is still valid.",
        )
    if status == 404:
        return CheckResult(
            Verdict.not_found,
            "HTTP 404: CT-e1 answers this when the caller's IP address is not allow-listed, "
            "and also when the path is wrong",
            "Compare CTE1_SOURCE_UUID and CTE1_API_VERSION with the General API application form "
            "(汎用API申込書); if they match, ask the administrator to allow-list this machine's "
            "outgoing IP address (allow-listing is mandatory for retrieval APIs).",
        )
    if status == 429:
        return CheckResult(
            Verdict.rate_limited,
            "HTTP 429: too many requests with this key",
            "Another client with this key made a request just before; run the check again later.",
        )
    return CheckResult(
        Verdict.unexpected,
        f"HTTP {status} {media_type or 'without a Content-Type'}{words}",
        "This is not an answer the General API documents: check CTE1_BASE_URL (a proxy or another "
        "service may be answering).",
    )


def _transport_failure(exc: httpx.HTTPError, redactor: Redactor) -> CheckResult:
    cause = _tls_cause(exc)
    if cause is not None:
        reason = getattr(cause, "reason", None) or type(cause).__name__
        return CheckResult(
            Verdict.tls,
            f"TLS failed ({reason})",
            "WRONG_VERSION_NUMBER or 'record layer failure' means the port does not speak TLS: check "
            "the scheme and port of CTE1_BASE_URL. A certificate error means the server's certificate "
            "is not trusted here: give the CA with CTE1_CA_BUNDLE.",
        )
    if isinstance(exc, httpx.TimeoutException):
        return CheckResult(
            Verdict.unreachable,
            f"no answer within {type(exc).__name__} (CTE1_TIMEOUT_SECONDS)",
            "Check CTE1_BASE_URL and that this machine may reach it (firewall, proxy).",
        )
    return CheckResult(
        Verdict.unreachable,
        f"could not connect ({redactor.secrets(str(exc)) or type(exc).__name__})",
        "Check the host and port of CTE1_BASE_URL and that this machine may reach it.",
    )


def _tls_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _is_multipart(response: httpx.Response) -> bool:
    media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    return response.status_code == 200 and media_type.startswith("multipart/")


async def _head_of_body(response: httpx.Response, limit: int = 64 * 1024) -> bytes:
    """Enough of a failure's body to read the platform's words; never a whole recording."""
    head = b""
    async for chunk in response.aiter_raw():
        head += chunk
        if len(head) >= limit:
            break
    return head[:limit]
