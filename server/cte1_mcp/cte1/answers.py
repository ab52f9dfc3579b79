"""What a failed answer said: the platform's words out of JSON, plain text or a proxy's HTML page.

Every text taken from the body goes through the :class:`Redactor` here, where it is built.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from typing import Any

import multipart

from cte1_mcp.cte1.redaction import Redactor

#: Longest excerpt quoted from a body that is not the platform's JSON (an HTML page, say).
EXCERPT_MAX_CHARS = 200
#: Longest plain-text answer passed on verbatim as the platform's message.
PLATFORM_TEXT_MAX_CHARS = 1000

#: Phrases that mark a rate-limit refusal in a 200 failure's text. Deliberately narrow: a bare
#: "429" or "制限" (limit) could be part of an id or of the 31-day retention message.
_RATE_LIMIT_TEXT = re.compile(
    r"too[ _-]?many[ _-]?requests|rate[ _-]?limit|throttl"
    r"|\b(?:HTTP|status)\W{0,3}429\b"
    r"|リクエスト間隔|リクエストが多すぎ|リクエスト過多|アクセス過多|回数制限|頻度制限",
    re.IGNORECASE,
)
#: The documented error 5 (未完了の通話に対する取得要求) when it comes as a 200 failure.
_IN_PROGRESS_TEXT = re.compile(
    r"未完了の通話|通話が(?:まだ)?(?:終了|完了)していません|call (?:is )?(?:still )?in progress",
    re.IGNORECASE,
)
#: ``status``/``code`` values that mean "too many requests".
_RATE_LIMIT_CODE = re.compile(r"429|too[ _-]?many[ _-]?requests|rate[ _-]?limit\w*|throttl\w*", re.IGNORECASE)
_MESSAGE_FIELDS = ("description", "message", "errorMessage", "detail", "error")
_CODE_FIELDS = ("errorCode", "code", "error_code")
_HTML_DROP = re.compile(r"<(script|style)\b.*?</\1\s*>|<!--.*?-->", re.IGNORECASE | re.DOTALL)
_HTML_TAG = re.compile(r"<[^>]*>")


@dataclass(frozen=True, slots=True)
class Said:
    #: The platform's own words, verbatim but redacted (JSON message fields, or a short plain text).
    platform_message: str | None
    #: What to add to "(HTTP 200": '; status "error"', '; text/html: “Bad Gateway”', or "".
    detail: str
    rate_limited: bool

    @property
    def call_in_progress(self) -> bool:
        return bool(self.platform_message and _IN_PROGRESS_TEXT.search(self.platform_message))


def interpret(body: bytes, content_type: str | None, redactor: Redactor) -> Said:
    """The platform's words and a short description of the body, safe to show a client."""
    media_type, options = multipart.parse_options_header(content_type or "")
    text = redactor.for_client(decode(body, options.get("charset")))
    data = json_object(text)
    if data is not None:
        said = _interpret_json(data)
        # JSON escapes (``\u0041``) may spell what the raw text did not: redact what was decoded.
        words = _clean(redactor.for_client(said.platform_message)) if said.platform_message else None
        return Said(words, _clean(redactor.for_client(said.detail)), said.rate_limited)
    if not text.strip():
        return Said(None, f"; empty {media_type} body" if media_type else "; empty body", False)
    described = media_type or "no content type"
    if "html" in media_type or text.lstrip()[:1] == "<":
        excerpt = short(_html_text(text)) or "no readable text"
        # Unescaping may have rebuilt a key written as entities: redact once more.
        excerpt = redactor.for_client(excerpt)
        return Said(None, f"; {described}: “{excerpt}”", bool(_RATE_LIMIT_TEXT.search(excerpt)))
    words = text.strip()
    if len(words) > PLATFORM_TEXT_MAX_CHARS:
        words = words[:PLATFORM_TEXT_MAX_CHARS] + "…"
    return Said(words, f"; {described}", bool(_RATE_LIMIT_TEXT.search(words)))


def _interpret_json(data: dict[str, Any]) -> Said:
    """The shape of the platform's other APIs, ``{"status": "error", "description": …}``, and kin."""
    nested = data.get("error")
    fields = {**nested, **data} if isinstance(nested, dict) else data
    texts = [v.strip() for k in _MESSAGE_FIELDS if isinstance(v := fields.get(k), str) and v.strip()]
    words = " / ".join(dict.fromkeys(texts)) or short(json.dumps(data, ensure_ascii=False), 500)
    code = next((fields[k] for k in _CODE_FIELDS if fields.get(k) is not None), None)
    labels = {"status": fields.get("status"), "code": code}
    shown = {k: v for k, v in labels.items() if isinstance(v, str | int) and not isinstance(v, bool)}
    detail = "".join(f"; {k} {short(json.dumps(v, ensure_ascii=False), 80)}" for k, v in shown.items())
    rate_limited = any(_RATE_LIMIT_CODE.fullmatch(str(v)) for v in shown.values()) or bool(
        _RATE_LIMIT_TEXT.search(" ".join(texts))
    )
    return Said(words, detail, rate_limited)


def json_object(text: str) -> dict[str, Any] | None:
    """A JSON object, or None for anything else (including JSON nested too deep to parse)."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _clean(text: str) -> str:
    """Lone surrogates (``"\\ud800"`` in JSON) cannot be sent as UTF-8: replaced."""
    return text.encode("utf-8", errors="replace").decode("utf-8")


def decode(body: bytes, charset: str | None) -> str:
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


def short(text: str, limit: int = EXCERPT_MAX_CHARS) -> str:
    """Whitespace collapsed, cut to ``limit`` characters."""
    collapsed = " ".join(text.split())
    return collapsed if len(collapsed) <= limit else collapsed[: limit - 1] + "…"


def _html_text(text: str) -> str:
    return html.unescape(_HTML_TAG.sub(" ", _HTML_DROP.sub(" ", text)))
