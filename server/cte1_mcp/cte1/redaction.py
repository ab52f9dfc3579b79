"""What this server must never repeat: the API key (in any letter case, with or without ``Bearer``)
and CT-e1's host name (customer configuration), blanked in every text that came from the upstream,
where that text is built."""

from __future__ import annotations

import re

from cte1_mcp.settings import Settings

#: What stands in for the key.
REDACTED = "[redacted]"
#: What stands in for CT-e1's host name in texts that reach clients.
HOST_PLACEHOLDER = "[CT-e1 host]"


class Redactor:
    """Built once from the settings; ``secrets`` for every text, ``hosts`` for texts clients see."""

    def __init__(self, settings: Settings) -> None:
        self._secret = _secret_pattern(settings)
        self._host = _host_pattern(settings.base_url.host or "")

    def secrets(self, text: str) -> str:
        """The key blanked out, as ``Bearer <key>`` whole when it comes with its scheme."""
        return self._secret.sub(REDACTED, text) if self._secret is not None else text

    def hosts(self, text: str, *, also: str = "") -> str:
        """CT-e1's host name (and ``also``, say a redirect's target) replaced, whole names only."""
        for pattern in (self._host, _host_pattern(also)):
            if pattern is not None:
                text = pattern.sub(HOST_PLACEHOLDER, text)
        return text

    def for_client(self, text: str, *, also_host: str = "") -> str:
        """Both: what a text from the upstream must become before a client may read it."""
        return self.hosts(self.secrets(text), also=also_host)


def _secret_pattern(settings: Settings) -> re.Pattern[str] | None:
    if settings.api_key is None:
        return None
    key = settings.api_key.get_secret_value().strip()
    bare = re.sub(r"^bearer\s+", "", key, flags=re.IGNORECASE).strip()
    if not bare:
        return None
    # Hex keys echo back in any case; the scheme word may come with any spacing.
    return re.compile(rf"(?:bearer\s*)?{re.escape(bare)}", re.IGNORECASE)


def _host_pattern(host: str) -> re.Pattern[str] | None:
    """Whole host names only: not ``ct-e1.example`` inside ``api.ct-e1.example.net``."""
    host = host.strip().strip("[]")
    if not host:
        return None
    return re.compile(rf"(?<![\w.-]){re.escape(host)}(?![\w-]|\.[\w-])", re.IGNORECASE)
