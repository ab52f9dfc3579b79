"""The documented request rules, applied to tool arguments before any upstream request is spent.

The SDK drops arguments a tool does not declare and reports type errors in its own words; this
guard runs first so every mistake gets a stable code and names the arguments involved.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cte1_mcp.errors import InvalidParameter, MissingParameter, UnknownParameter
from cte1_mcp.models import CallKey

#: Largest id the platform's integer ids can plausibly take (signed 64-bit).
MAX_ID = 2**63 - 1
#: Generous bound on a tenant id (a phone number in practice).
MAX_TENANT_DIGITS = 32

CALL_PARAMETERS = ("tenantId", "sessionId", "recordId")


@dataclass(frozen=True, slots=True)
class ToolArguments:
    """The parameters a tool declares: all of them required unless they have a default."""

    required: tuple[str, ...]
    optional: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return self.required + self.optional


def check_names(spec: ToolArguments, arguments: Mapping[str, Any]) -> None:
    """Unknown arguments first (documented error 1), then missing ones (documented error 2)."""
    unknown = sorted(name for name in arguments if name not in spec.names)
    if unknown:
        raise UnknownParameter(
            f"Unknown argument(s): {', '.join(unknown)}. This tool takes only: {', '.join(spec.names)}.",
            next_step=f"Call again without {', '.join(unknown)}.",
        )
    missing = [name for name in spec.required if arguments.get(name) is None]
    if missing:
        raise MissingParameter(
            f"Missing required argument(s): {', '.join(missing)}.",
            next_step=f"Call again with {', '.join(missing)}. {_EXAMPLE}",
        )


def call_key(arguments: Mapping[str, Any]) -> CallKey:
    """Validated ids; every problem is listed in one error."""
    problems: list[str] = []
    tenant = _tenant_id(arguments["tenantId"], problems)
    session = _positive_int("sessionId", arguments["sessionId"], problems)
    record = _positive_int("recordId", arguments["recordId"], problems)
    if problems or tenant is None or session is None or record is None:
        raise InvalidParameter("Invalid argument(s): " + " ".join(problems), next_step=_EXAMPLE)
    return CallKey(tenant, session, record)


def boolean(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise InvalidParameter(f"{name} must be true or false, not {_shown(value)}.")


_EXAMPLE = 'Example: {"tenantId": "05053698341", "sessionId": 942125, "recordId": 1}.'


def _tenant_id(value: Any, problems: list[str]) -> str | None:
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= MAX_TENANT_DIGITS:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        problems.append(
            "tenantId must be a string of digits (quote it: as a number its leading zeros are lost), "
            f"not the number {value}."
        )
    else:
        problems.append(f'tenantId must be a string of digits such as "05053698341", not {_shown(value)}.')
    return None


def _positive_int(name: str, value: Any, problems: list[str]) -> int | None:
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit():
        number = int(value)  # some clients send every argument as a string
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    if number is None or not 1 <= number <= MAX_ID:
        problems.append(f"{name} must be an integer from 1, not {_shown(value)}.")
        return None
    return number


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
