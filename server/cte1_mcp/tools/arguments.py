"""Tool arguments: pydantic models that are at once the input schema clients see and the
validation applied before any upstream request, and the one mapping of their errors to
``missing_parameter`` / ``unknown_parameter`` / ``invalid_parameter``.

Lenient where clients are known to differ (ids as digit strings, integral floats), strict where
a conversion would hide a mistake (booleans, a numeric tenantId that lost its leading zero).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, ValidationError
from pydantic_core import PydanticCustomError

from cte1_mcp.errors import InvalidParameter, MissingParameter, UnknownParameter
from cte1_mcp.models import MAX_ID, TENANT_ID_PATTERN, CallKey, is_tenant_id
from cte1_mcp.views import excerpt, names_excerpt

#: Digits of the largest id: a longer digit string is refused before int() sees it (Python
#: refuses to convert more than 4,300 digits, and a 1 MB string costs time to convert).
MAX_ID_DIGITS = len(str(MAX_ID))
#: Longest string accepted where a number is expected.
MAX_NUMBER_CHARS = 32

EXAMPLE = 'Example: {"tenantId": "05053698341", "sessionId": 942125, "recordId": 1}.'


def _invalid(message: str) -> PydanticCustomError:
    return PydanticCustomError("cte1_invalid", message)


def _tenant_id(value: Any) -> Any:
    if isinstance(value, str) and is_tenant_id(value):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        raise _invalid(
            "tenantId must be a string of digits (quote it: as a number its leading zeros are lost), "
            f"not the number {excerpt(value)}"
        )
    raise _invalid(f'tenantId must be a string of 1 to 32 digits such as "05053698341", not {excerpt(value)}')


def _call_id(value: Any) -> Any:
    """JSON integers, and the digit strings and integral floats some clients send instead."""
    if isinstance(value, bool):
        raise _invalid(f"must be an integer from 1, not {excerpt(value)}")
    if isinstance(value, str):
        if len(value) <= MAX_ID_DIGITS and value.isascii() and value.isdigit():
            value = int(value)
        else:
            raise _invalid(f"must be an integer from 1 to {MAX_ID}, not {excerpt(value)}")
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise _invalid(f"must be an integer from 1 to {MAX_ID}, not {excerpt(value)}")
    return value


def lenient_number(value: Any) -> Any:
    """A number, or a short numeric string; never a boolean (JSON true is not 1)."""
    if isinstance(value, bool):
        raise _invalid(f"must be a number, not {excerpt(value)}")
    if isinstance(value, str):
        if len(value) > MAX_NUMBER_CHARS:
            raise _invalid(f"must be a number, not {excerpt(value)}")
        try:
            number = float(value)
        except ValueError:
            raise _invalid(f"must be a number, not {excerpt(value)}") from None
        return int(number) if number.is_integer() else number
    if isinstance(value, float) and not math.isfinite(value):
        raise _invalid(f"must be a finite number, not {excerpt(value)}")
    if isinstance(value, int) and value.bit_length() > 64:
        raise _invalid(f"must be a number of sensible size, not {excerpt(value)}")
    return value


TenantId = Annotated[
    str,
    Field(
        description='Tenant id: a string of digits (the tenant\'s representative number), e.g. "05053698341".',
        pattern=f"^{TENANT_ID_PATTERN.pattern}$",
    ),
    BeforeValidator(_tenant_id),
]
SessionId = Annotated[
    int,
    Field(description="Per-tenant call id (unchanged across transfers), from 1.", ge=1, le=MAX_ID),
    BeforeValidator(_call_id),
]
RecordId = Annotated[
    int,
    Field(description="Which recording of the call, from 1 (transfers add 2, 3, ...).", ge=1, le=MAX_ID),
    BeforeValidator(_call_id),
]


class Arguments(BaseModel):
    """Base of every tool's arguments: unknown names are refused, nothing is silently dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CallArguments(Arguments):
    """The three ids every call tool takes."""

    tenantId: TenantId
    sessionId: SessionId
    recordId: RecordId

    @property
    def key(self) -> CallKey:
        return CallKey(self.tenantId, self.sessionId, self.recordId)


Inline = Annotated[
    StrictBool,
    Field(
        description="Also return the audio inline as an audio content block when it is at most the "
        "server's inline limit (default 512 KiB). For clients that cannot read resources."
    ),
]

ArgumentsT = TypeVar("ArgumentsT", bound=Arguments)


def parse_arguments(model: type[ArgumentsT], arguments: Mapping[str, Any], *, where: str = "") -> ArgumentsT:
    """Validate, or raise the one documented error: unknown names first, then missing ones, then
    every invalid value in one message. ``null`` for a declared argument counts as missing."""
    fields = model.model_fields
    given = {name: value for name, value in arguments.items() if not (value is None and name in fields)}
    try:
        return model.model_validate(given)
    except ValidationError as exc:
        raise describe(model, exc, where=where) from None


def describe(
    model: type[Arguments], exc: ValidationError, *, where: str = ""
) -> UnknownParameter | MissingParameter | InvalidParameter:
    unknown: list[str] = []
    missing: list[str] = []
    invalid: list[str] = []
    invalid_names: list[str] = []
    for error in exc.errors(include_url=False):
        name = str(error["loc"][0]) if error["loc"] else "arguments"
        kind = error["type"]
        if kind == "extra_forbidden":
            unknown.append(name)
            continue
        if kind == "missing":
            missing.append(name)
            continue
        invalid_names.append(name)
        message = error["msg"]
        if kind == "cte1_invalid":
            invalid.append(f"{message}." if name == "tenantId" else f"{name} {message}.")
        else:
            invalid.append(f"{name}: {message[0].lower()}{message[1:]}, not {excerpt(error['input'])}.")
    names = ", ".join(model.model_fields)
    ids_involved = any(name in CallArguments.model_fields for name in (*missing, *invalid_names))
    example = EXAMPLE if ids_involved else None
    if unknown:
        return UnknownParameter(
            f"{where}Unknown argument(s): {names_excerpt(sorted(unknown))}. This tool takes only: {names}.",
            next_step="Call again without "
            + ("them." if len(unknown) > 3 else f"{names_excerpt(sorted(unknown))}."),
        )
    if missing:
        listed = ", ".join(missing)
        return MissingParameter(
            f"{where}Missing required argument(s): {listed}.",
            next_step=f"Call again with {listed}." + (f" {example}" if example else ""),
        )
    return InvalidParameter(f"{where}Invalid argument(s): " + " ".join(invalid), next_step=example)
