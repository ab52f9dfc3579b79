"""The argument guard, directly: the corner cases an MCP client cannot easily produce."""

from __future__ import annotations

import pytest

from cte1_mcp.arguments import CALL_PARAMETERS, ToolArguments, call_key, check_names
from cte1_mcp.errors import InvalidParameter, MissingParameter, UnknownParameter

SPEC = ToolArguments(CALL_PARAMETERS, ("inline",))


def test_unknown_is_reported_before_missing() -> None:
    with pytest.raises(UnknownParameter, match="callId"):
        check_names(SPEC, {"callId": 1})


def test_none_counts_as_missing() -> None:
    with pytest.raises(MissingParameter, match="recordId"):
        check_names(SPEC, {"tenantId": "1", "sessionId": 1, "recordId": None})


def test_digit_strings_are_accepted_for_integer_ids() -> None:
    key = call_key({"tenantId": "05053698341", "sessionId": "942125", "recordId": 1.0})
    assert (key.tenant_id, key.session_id, key.record_id) == ("05053698341", 942125, 1)


@pytest.mark.parametrize(
    "arguments",
    [
        {"tenantId": "٠١٢", "sessionId": 1, "recordId": 1},  # non-ASCII digits never reach a path
        {"tenantId": "../etc", "sessionId": 1, "recordId": 1},
        {"tenantId": "1" * 33, "sessionId": 1, "recordId": 1},
        {"tenantId": "1", "sessionId": 2**63, "recordId": 1},
        {"tenantId": "1", "sessionId": 1.5, "recordId": 1},
        {"tenantId": "1", "sessionId": -3, "recordId": 1},
    ],
)
def test_invalid_ids(arguments: dict[str, object]) -> None:
    with pytest.raises(InvalidParameter):
        call_key(arguments)


def test_every_invalid_id_is_listed_once() -> None:
    with pytest.raises(InvalidParameter) as caught:
        call_key({"tenantId": 5, "sessionId": 0, "recordId": "x"})
    message = caught.value.message
    assert "tenantId" in message
    assert "sessionId" in message
    assert "recordId" in message
