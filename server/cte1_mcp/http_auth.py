"""Bearer-token check for MCP clients over HTTP, through the SDK's own token-verifier hook."""

from __future__ import annotations

import hmac

from mcp.server.auth.provider import AccessToken
from pydantic import SecretStr


class StaticTokenVerifier:
    """Accepts exactly one shared token (``CTE1_HTTP_TOKEN``), compared in constant time."""

    def __init__(self, token: SecretStr) -> None:
        self._token = token.get_secret_value().encode()

    async def verify_token(self, token: str) -> AccessToken | None:
        if hmac.compare_digest(token.encode(), self._token):
            return AccessToken(token=token, client_id="cte1-mcp-http-client", scopes=[])
        return None
