"""The call-review view (an MCP App): its ``ui://`` resource, registered through the SDK's Apps
extension so initialize advertises ``io.modelcontextprotocol/ui`` and resources/read serves it.

The HTML is built from ``ui/`` by ``make ui`` and committed (``app/review.html``): the server serves
that file as it is, so running the server needs no node.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mcp.server.apps import APP_MIME_TYPE, Apps

#: The view's resource; ``review_call``'s ``_meta.ui.resourceUri``.
REVIEW_URI = "ui://cte1/review.html"
REVIEW_HTML = Path(__file__).parent / "app" / "review.html"

__all__ = ["APP_MIME_TYPE", "REVIEW_URI", "apps_extension", "tool_meta"]


def tool_meta() -> dict[str, Any]:
    """What a tool with the view carries in ``_meta`` (the Apps extension's own shape)."""
    return {"ui": {"resourceUri": REVIEW_URI}}


def apps_extension() -> Apps:
    """The extension with the view registered. No CSP domains are declared: the view loads nothing
    from the network (its script and style are inline; audio comes through tool calls)."""
    apps = Apps()
    apps.add_html_resource(
        REVIEW_URI,
        REVIEW_HTML.read_text(encoding="utf-8"),
        name="call-review",
        title="Call review",
        description="A call's timeline, transcript and playback, for review_call",
    )
    return apps
