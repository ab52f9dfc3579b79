"""Bearer-token check for MCP clients over HTTP, through the SDK's own token-verifier hook."""

from __future__ import annotations

import hashlib
import hmac

from mcp.server.auth.provider import AccessToken
from pydantic import SecretStr


class StaticTokenVerifier:
    """Accepts exactly one shared token (``CTE1_HTTP_TOKEN``), compared in constant time.

    The client it names is the token's fingerprint (``token-sha256:`` and 16 hex digits): what
    the audit log records, which tells a rotated token from the previous one and never spells it.
    """

    def __init__(self, token: SecretStr) -> None:
        self._token = token.get_secret_value().encode()
        self.client_id = fingerprint(self._token)

    async def verify_token(self, token: str) -> AccessToken | None:
        if hmac.compare_digest(token.encode(), self._token):
            return AccessToken(token=token, client_id=self.client_id, scopes=[])
        return None


def fingerprint(token: bytes) -> str:
    return "token-sha256:" + hashlib.sha256(token).hexdigest()[:16]
