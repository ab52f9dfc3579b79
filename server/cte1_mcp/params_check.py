"""Request params the SDK would refuse with a bare "Invalid request parameters", answered in this
server's own words: which parameter, what was expected, what to do next.

mcp 2.3 validates a request's params against the protocol (``mcp_types.methods``) before any
handler runs and answers every failure with ``-32602``, "Invalid request parameters" and empty
data. ``ParamsCheck``, a ``Server.middleware`` (which runs before that validation, on stdio and
HTTP alike), applies the very same validation first, so what it passes the SDK accepts, and turns
a failure into a ``[code]`` error:

- a ``tools/call`` of a known tool whose one fault is ``arguments`` (a JSON-encoded string, an
  array) is that tool's argument error, a result with ``isError`` like every other one: the call
  goes on without its arguments, and ``call_tool`` answers with ``refused_arguments()`` (so it is
  rendered and audited as the others are);
- anything else (no tool name or not a string, a tool this server lacks, a bad ``uri``, a
  ``_meta.progressToken`` that is neither a string nor an integer) is the JSON-RPC error
  ``-32602`` whose message carries the ``[code]`` and ``Next:``, with ``data.code``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import replace
from typing import Any, Final

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp_types.methods import SPEC_CLIENT_METHODS, validate_client_request
from pydantic import ValidationError

from cte1_mcp.errors import Cte1Error, InputError, InvalidParameter, MissingParameter
from cte1_mcp.resources import protocol_error
from cte1_mcp.tools.arguments import EXAMPLE
from cte1_mcp.views import excerpt

_MISSING: Final = object()

#: What each parameter must be, and the next step when it is not.
_EXPECTED: Final[dict[str, tuple[str, str]]] = {
    "name": (
        "the name of one of this server's tools, as a string",
        "Call tools/list and use one of the tools it names.",
    ),
    "arguments": (
        "a JSON object of the tool's parameters",
        f"Call again with arguments as a JSON object (the tool's inputSchema in tools/list). {EXAMPLE}",
    ),
    "uri": (
        "a resource URI, as a string",
        "Use a URI that resources/list or resources/templates/list gives, "
        "e.g. cte1://calls/05053698341/942125/1/metadata.",
    ),
    "_meta.progressToken": (
        "a string or an integer",
        "Send a string or integer progressToken, or none to get no progress notifications.",
    ),
}

_refused: ContextVar[InputError | None] = ContextVar("cte1_refused_arguments", default=None)


def refused_arguments() -> InputError | None:
    """What is wrong with this tools/call's ``arguments``, when ``ParamsCheck`` let it through
    without them to be answered as the tool's own error; else None."""
    return _refused.get()


class ParamsCheck:
    """``ServerMiddleware``: ``tool`` raises ``UnknownTool`` for a name the server lacks."""

    def __init__(self, tool: Callable[[str], object]) -> None:
        self._tool = tool

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.request_id is None or ctx.method not in SPEC_CLIENT_METHODS:
            return await call_next(ctx)
        try:
            validate_client_request(ctx.method, ctx.protocol_version, ctx.params)
        except KeyError:  # not a method of the session's protocol version: the SDK says so
            return await call_next(ctx)
        except ValidationError as exc:
            return await self._refuse(ctx, call_next, exc)
        return await call_next(ctx)

    async def _refuse(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext, exc: ValidationError
    ) -> HandlerResult:
        params = ctx.params or {}
        faults = _faults(params, exc)
        error = _describe(ctx.method, faults)
        name = params.get("name")
        if ctx.method == "tools/call" and isinstance(name, str):
            try:
                self._tool(name)
            except Cte1Error as unknown:
                raise protocol_error(unknown) from None
            if set(faults) == {"arguments"}:
                token = _refused.set(error)
                try:
                    return await call_next(
                        replace(ctx, params={k: v for k, v in params.items() if k != "arguments"})
                    )
                finally:
                    _refused.reset(token)
        raise protocol_error(error) from None


def _faults(params: Mapping[str, Any], exc: ValidationError) -> dict[str, tuple[Any, str]]:
    """Each faulty parameter's dotted path: its value (``_MISSING`` if absent) and pydantic's word.

    A union's error is located past the value (``progressToken.str``, ``progressToken.int``): the
    path stops where the params stop, so both name the one parameter.
    """
    faults: dict[str, tuple[Any, str]] = {}
    for error in exc.errors(include_url=False):
        located = error["loc"][1:]  # past "params"
        parts: list[str] = []
        value: Any = params
        for n, part in enumerate(located):
            if isinstance(value, Mapping) and isinstance(part, str) and part in value:
                value = value[part]
            elif error["type"] == "missing" and n == len(located) - 1:
                value = _MISSING
            else:
                break
            parts.append(str(part))
        faults.setdefault(".".join(parts) or "params", (value, error["msg"]))
    return faults


def _describe(method: str, faults: dict[str, tuple[Any, str]]) -> InputError:
    missing = [path for path, (value, _) in faults.items() if value is _MISSING]
    if missing:
        listed = ", ".join(missing)
        known = _EXPECTED.get(missing[0])
        return MissingParameter(
            f"{method} needs {listed}.",
            next_step=known[1] if known else f"Send {method} again with {listed}.",
        )
    sentences: list[str] = []
    next_steps: list[str] = []
    for path, (value, word) in faults.items():
        known = _EXPECTED.get(path)
        if known is None:
            sentences.append(f"{path}: {word[0].lower()}{word[1:]}, not {_kind(value)}.")
            continue
        sentences.append(f"{path} must be {known[0]}, not {_kind(value)}.")
        if path == "arguments" and isinstance(value, str) and _is_json_object(value):
            next_steps.append("Send the object itself as arguments, not a string of its JSON.")
        else:
            next_steps.append(known[1])
    return InvalidParameter(" ".join(sentences), next_step=" ".join(next_steps) or None)


def _kind(value: Any) -> str:
    """A JSON value as a client would name it: "a string", "the number 1.5", "a JSON object…"."""
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return f"the number {excerpt(value)}"
    return excerpt(value)


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):
        return False
