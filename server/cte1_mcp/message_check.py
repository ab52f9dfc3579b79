"""Is this a JSON-RPC message of MCP? One verdict for a stdio line and an HTTP body alike.

The SDK's transports (mcp 2.3) read a request whose id is null, fractional, a boolean or an object
as a notification, which no answer ever follows; stdio drops a message it cannot validate, HTTP
answers it with ``-32602`` and pydantic's dump. Each message is checked here first, with the very
validation the SDK then applies (so what passes is what the SDK accepts), and what fails gets the
error JSON-RPC 2.0 asks for:

- ``-32700`` parse error, ``id`` null: not UTF-8, not JSON (``NaN``/``Infinity`` included),
  an integer past Python's 4,300 digits, nesting deeper than the parsers go;
- ``-32600`` invalid request: JSON but not a JSON-RPC message (a bare value, a batch, which MCP
  dropped, no ``"jsonrpc": "2.0"``, a method that is not a string, an id that is not a string or
  an integer). Its ``id`` is the message's when that is a valid id of a request, else null.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import mcp_types as types
from pydantic import ValidationError


class _NotJson(ValueError):
    pass


def _not_json(constant: str) -> Any:
    raise _NotJson(f"{constant} is not JSON")


def check_message(raw: bytes) -> str | types.JSONRPCError | None:
    """The message's text to hand to the SDK, the error to answer instead, or None if blank."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return _error(types.PARSE_ERROR, "Parse error: the message is not UTF-8")
    text = text.strip()
    if not text:
        return None
    try:
        # Python's parser first: stricter than the SDK's (NaN and Infinity are not JSON), and it
        # gives the id to answer an invalid request with.
        document = json.loads(text, parse_constant=_not_json)
    except RecursionError:
        return _error(types.PARSE_ERROR, "Parse error: nested too deeply")
    except (json.JSONDecodeError, _NotJson) as exc:
        return _error(types.PARSE_ERROR, f"Parse error: {exc}")
    except ValueError:  # int(): Python refuses to read longer integers (a guard against slow parsing)
        digits = sys.get_int_max_str_digits()
        return _error(types.PARSE_ERROR, f"Parse error: an integer of more than {digits} digits")
    try:
        message = types.jsonrpc_message_adapter.validate_json(text, by_name=False)
    except ValidationError as exc:
        if any(error["type"] == "json_invalid" for error in exc.errors()):  # e.g. its depth limit
            return _error(types.PARSE_ERROR, "Parse error: nested too deeply or too large")
        return _invalid(document)
    if isinstance(message, types.JSONRPCNotification) and isinstance(document, dict) and "id" in document:
        # An id the SDK cannot use (null, 1.5) makes it read a request as a notification: no
        # answer would ever come.
        return _invalid(document)
    return text


def _invalid(document: Any) -> types.JSONRPCError:
    if not isinstance(document, dict):
        what = "a batch (MCP has none)" if isinstance(document, list) else "not a JSON object"
        return _error(types.INVALID_REQUEST, f"Invalid Request: {what}")
    id_ = document.get("id")
    valid_id = isinstance(id_, str) or (isinstance(id_, int) and not isinstance(id_, bool))
    request_id = id_ if valid_id and "method" in document else None
    return _error(types.INVALID_REQUEST, "Invalid Request: not a JSON-RPC 2.0 message of MCP", request_id)


def _error(code: int, message: str, request_id: str | int | None = None) -> types.JSONRPCError:
    return types.JSONRPCError(jsonrpc="2.0", id=request_id, error=types.ErrorData(code=code, message=message))
