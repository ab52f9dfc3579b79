"""The argument models and their one error mapping, directly: corner cases a client rarely sends."""

from __future__ import annotations

from typing import Any

import pytest

from cte1_mcp.errors import ConfigurationError, InvalidParameter, MissingParameter, UnknownParameter
from cte1_mcp.models import CallKey
from cte1_mcp.settings import load_settings
from cte1_mcp.tools.arguments import CallArguments, parse_arguments
from cte1_mcp.tools.call_audio import Arguments as AudioArguments
from cte1_mcp.views import excerpt, mask_number

IDS = {"tenantId": "05053698341", "sessionId": 942125, "recordId": 1}


def test_unknown_is_reported_before_missing() -> None:
    with pytest.raises(UnknownParameter, match="callId"):
        parse_arguments(AudioArguments, {"callId": 1})


def test_none_counts_as_missing_for_declared_names_only() -> None:
    with pytest.raises(MissingParameter, match="recordId"):
        parse_arguments(AudioArguments, {**IDS, "recordId": None})
    with pytest.raises(UnknownParameter, match="callId"):
        parse_arguments(AudioArguments, {**IDS, "callId": None})
    assert parse_arguments(AudioArguments, {**IDS, "inline": None}).inline is False


def test_digit_strings_and_integral_floats_are_accepted_for_integer_ids() -> None:
    parsed = parse_arguments(
        CallArguments, {"tenantId": "05053698341", "sessionId": "942125", "recordId": 1.0}
    )
    assert parsed.key == CallKey("05053698341", 942125, 1)


@pytest.mark.parametrize(
    "arguments",
    [
        {"tenantId": "٠١٢", "sessionId": 1, "recordId": 1},  # non-ASCII digits never reach a path
        {"tenantId": "../etc", "sessionId": 1, "recordId": 1},
        {"tenantId": "1" * 33, "sessionId": 1, "recordId": 1},
        {"tenantId": "1\n", "sessionId": 1, "recordId": 1},
        {"tenantId": "", "sessionId": 1, "recordId": 1},
        {"tenantId": "1", "sessionId": 2**63, "recordId": 1},
        {"tenantId": "1", "sessionId": 10**5000, "recordId": 1},
        {
            "tenantId": "1",
            "sessionId": "9" * 4301,
            "recordId": 1,
        },  # int() would refuse it: was internal_error
        {"tenantId": "1", "sessionId": "9" * 20, "recordId": 1},
        {"tenantId": "1", "sessionId": " 12", "recordId": 1},
        {"tenantId": "1", "sessionId": "1_000", "recordId": 1},
        {"tenantId": "1", "sessionId": 1.5, "recordId": 1},
        {"tenantId": "1", "sessionId": float("inf"), "recordId": 1},
        {"tenantId": "1", "sessionId": -3, "recordId": 1},
        {"tenantId": "1", "sessionId": True, "recordId": 1},
        {"tenantId": "1", "sessionId": [1], "recordId": 1},
    ],
)
def test_invalid_ids(arguments: dict[str, Any]) -> None:
    with pytest.raises(InvalidParameter) as caught:
        parse_arguments(CallArguments, arguments)
    assert len(caught.value.render()) < 600


def test_every_invalid_id_is_listed_once() -> None:
    with pytest.raises(InvalidParameter) as caught:
        parse_arguments(CallArguments, {"tenantId": 5, "sessionId": 0, "recordId": "x"})
    message = caught.value.message
    for name in ("tenantId", "sessionId", "recordId"):
        assert message.count(name) == 1, message
    assert "leading zeros" in message


def test_inline_is_strictly_boolean() -> None:
    for value in ("true", 1, "yes"):
        with pytest.raises(InvalidParameter, match="inline"):
            parse_arguments(AudioArguments, {**IDS, "inline": value})


def test_unknown_names_are_quoted_truncated_and_counted() -> None:
    names = {f"n{i}": 1 for i in range(50)} | {"a\nb" + "c" * 500: 1}
    with pytest.raises(UnknownParameter) as caught:
        parse_arguments(CallArguments, {**IDS, **names})
    rendered = caught.value.render()
    assert "'a\\nb" in rendered  # escaped, on one line
    assert "\nb" not in rendered
    assert "and 41 more" in rendered
    assert len(rendered) < 1000


def test_one_tenant_rule_for_keys_arguments_and_settings(tmp_path: Any) -> None:
    for bad in ("٠١٢", "1" * 33, "12a"):
        with pytest.raises(ValueError, match="tenant_id"):
            CallKey(bad, 1, 1)
        with pytest.raises(InvalidParameter):
            parse_arguments(CallArguments, {**IDS, "tenantId": bad})
        with pytest.raises(ConfigurationError, match="CTE1_ALLOWED_TENANTS"):
            load_settings(
                base_url="http://127.0.0.1:9",
                source_uuid="6f1c2a4e-8d3b-4e55-9a71-0c2b7d9e4f10",
                api_key="k",
                cache_dir=tmp_path,
                allowed_tenants=bad,
            )
    assert CallKey("1" * 32, 1, 1).tenant_id == "1" * 32


def test_excerpt_is_bounded_and_single_line() -> None:
    assert excerpt("x\n[internal_error]") == "'x\\n[internal_error]'"
    assert len(excerpt("y" * 1_000_000)) < 70
    assert excerpt(10**10000) == "a very large integer"
    assert excerpt({"a": 1}) == "a JSON object of 1 item(s)"
    assert "\u2028" not in excerpt("a\u2028b")


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("08075082398", "*******2398"),
        ("anonymous", "anonymous"),
        ("+81-80-7508-2398", "+**-**-****-2398"),
        ("2398", "2398"),
        ("", ""),
    ],
)
def test_mask_number(number: str, masked: str) -> None:
    assert mask_number(number) == masked
