"""Segment rules: parsing and its errors, every operator, wrappers, event rules and their
windows, relative dates, dependencies and the next instant a result changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tidings.domain.errors import ValidationFailed
from tidings.domain.rules import (
    AbsoluteDate,
    DataPath,
    EventFact,
    Field,
    ProfileFacts,
    RelativeDate,
    dependencies,
    evaluate,
    next_change,
    parse_rule,
    rule_to_json,
)
from tidings.domain.rules.dates import parse_date_text, parse_relative, seconds_to_micros

SECOND = 1_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
NOW = 1_717_200_000 * SECOND  # 2024-06-01T00:00:00Z
ABSENT = object()


def micros(text: str) -> int:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def leaf(
    kind: str, path: str, operator: str, value: Any = ABSENT, group: str = "user"
) -> dict[str, Any]:
    node = {"type": kind, "group": group, "path": path, "operator": operator}
    if value is not ABSENT:
        node["value"] = value
    return node


def wrapper(operator: str, *children: dict[str, Any]) -> dict[str, Any]:
    return {"type": "wrapper", "group": "parent", "operator": operator, "children": list(children)}


def did(
    name: str,
    *children: dict[str, Any],
    frequency: dict[str, Any] | None = None,
    operator: str = "and",
) -> dict[str, Any]:
    node: dict[str, Any] = {
        "type": "wrapper",
        "group": "event",
        "path": "name",
        "value": name,
        "operator": operator,
        "children": list(children),
    }
    if frequency is not None:
        node["frequency"] = frequency
    return node


def rolling(count: int, unit: str, value: int, operator: str = ">=") -> dict[str, Any]:
    return {
        "period": {"type": "rolling", "unit": unit, "value": value},
        "operator": operator,
        "count": count,
    }


def holds(
    raw: dict[str, Any],
    data: dict[str, Any] | None = None,
    events: list[EventFact] | None = None,
    now: int = NOW,
    **columns: Any,
) -> bool:
    profile = ProfileFacts(id="p", data=data or {}, **columns)
    return evaluate(parse_rule(raw), profile, events or [], now)


def errors_of(raw: Any) -> list[tuple[str, str]]:
    with pytest.raises(ValidationFailed) as caught:
        parse_rule(raw)
    assert caught.value.code == "validation_failed"
    return [(e.param, e.code) for e in caught.value.errors]


# -- strings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operator", "value", "stored", "expected"),
    [
        ("=", "pro", "pro", True),
        ("=", "pro", "Pro", False),  # case-sensitive
        ("!=", "pro", "free", True),
        ("!=", "pro", "pro", False),
        ("contains", "ro", "pro", True),
        ("contains", "x", "pro", False),
        ("contains", "", "pro", True),
        ("not contain", "x", "pro", True),
        ("not contain", "ro", "pro", False),
        ("starts with", "pr", "pro", True),
        ("starts with", "ro", "pro", False),
        ("not start with", "ro", "pro", True),
        ("not start with", "pr", "pro", False),
        ("ends with", "ro", "pro", True),
        ("ends with", "pr", "pro", False),
        ("ends with", "", "pro", True),
        ("ends with", "longer than pro", "pro", False),
        ("starts with", "日本", "日本語", True),  # code points, not bytes
    ],
)
def test_string_operators(operator: str, value: str, stored: str, expected: bool) -> None:
    assert holds(leaf("string", "data.plan", operator, value), {"plan": stored}) is expected


@pytest.mark.parametrize(
    "operator", ["=", "!=", "contains", "not contain", "starts with", "not start with", "ends with"]
)
@pytest.mark.parametrize("stored", [ABSENT, None, 3, True, ["pro"], {"x": "pro"}])
def test_string_comparisons_are_false_on_missing_or_other_types(operator: str, stored: Any) -> None:
    data = {} if stored is ABSENT else {"plan": stored}
    assert holds(leaf("string", "data.plan", operator, "pro"), data) is False


@pytest.mark.parametrize(
    ("stored", "is_set", "empty"),
    [
        (ABSENT, False, True),
        (None, False, True),  # null is missing
        ("", True, True),
        ("pro", True, False),
        (3, True, False),  # set, but not an empty string
        ([], True, False),
    ],
)
def test_string_presence_and_empty(stored: Any, is_set: bool, empty: bool) -> None:
    data = {} if stored is ABSENT else {"plan": stored}
    assert holds(leaf("string", "data.plan", "is set"), data) is is_set
    assert holds(leaf("string", "data.plan", "is not set"), data) is not is_set
    assert holds(leaf("string", "data.plan", "empty"), data) is empty


def test_profile_columns_are_read_by_name_or_jsonpath() -> None:
    assert holds(leaf("string", "email", "ends with", "@example.com"), email="a@example.com")
    assert holds(leaf("string", "$.email", "=", "a@example.com"), email="a@example.com")
    assert not holds(leaf("string", "email", "is set"))
    assert holds(leaf("string", "locale", "starts with", "en"), locale="en-AU")
    assert holds(leaf("string", "external_id", "=", "u1"), external_id="u1")
    assert holds(leaf("string", "phone", "starts with", "+61"), phone="+61491570006")
    assert holds(leaf("string", "timezone", "contains", "Sydney"), timezone="Australia/Sydney")


def test_trait_paths_nest_and_accept_the_jsonpath_spelling() -> None:
    data = {"plan": "pro", "address": {"city": "Sydney"}, "data": {"plan": "inner"}}
    assert holds(leaf("string", "data.address.city", "=", "Sydney"), data)
    assert holds(leaf("string", "$.address.city", "=", "Sydney"), data)
    assert holds(leaf("string", "$.plan", "=", "pro"), data)
    # "$." is relative to the traits, as in Parcelvoy: $.data.plan is a trait named data.
    assert holds(leaf("string", "$.data.plan", "=", "inner"), data)
    # A path through a non-object is missing.
    assert not holds(leaf("string", "data.plan.x", "is set"), data)
    assert holds(leaf("string", "data.Order Total", "is set"), {"Order Total": "x"})


# -- numbers and booleans ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operator", "value", "stored", "expected"),
    [
        ("=", 3, 3, True),
        ("=", 3, 3.0, True),
        ("=", 0.1, 0.1, True),
        ("!=", 3, 4, True),
        ("!=", 3, 3.0, False),
        ("<", 3, 2.5, True),
        ("<", 3, 3, False),
        ("<=", 3, 3, True),
        (">", 3, 3, False),
        (">", -1, 0, True),
        (">=", 3, 3, True),
        (">=", 3, 2, False),
    ],
)
def test_number_operators(operator: str, value: float, stored: float, expected: bool) -> None:
    assert holds(leaf("number", "data.seats", operator, value), {"seats": stored}) is expected


@pytest.mark.parametrize("stored", [ABSENT, None, "3", True, False, [3]])
@pytest.mark.parametrize("operator", ["=", "!=", "<", ">="])
def test_numbers_are_not_converted(stored: Any, operator: str) -> None:
    data = {} if stored is ABSENT else {"seats": stored}
    assert holds(leaf("number", "data.seats", operator, 3), data) is False


def test_boolean_operators() -> None:
    assert holds(leaf("boolean", "data.vip", "=", True), {"vip": True})
    assert not holds(leaf("boolean", "data.vip", "=", True), {"vip": False})
    assert holds(leaf("boolean", "data.vip", "!=", True), {"vip": False})
    assert not holds(leaf("boolean", "data.vip", "!=", True), {})  # missing: false
    assert not holds(leaf("boolean", "data.vip", "=", True), {"vip": 1})  # 1 is not true
    assert not holds(leaf("boolean", "data.vip", "!=", False), {"vip": "true"})
    assert holds(leaf("boolean", "data.vip", "is set"), {"vip": False})
    assert holds(leaf("boolean", "data.vip", "is not set"), {"vip": None})


# -- dates ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01", "2024-05-01T00:00:00+00:00"),
        ("2024-05-01T10:00", "2024-05-01T10:00:00+00:00"),
        ("2024-05-01 10:00:05", "2024-05-01T10:00:05+00:00"),
        ("2024-05-01T10:00:00Z", "2024-05-01T10:00:00+00:00"),
        ("2024-05-01T10:00:00.5Z", "2024-05-01T10:00:00.500000+00:00"),
        ("2024-05-01T10:00:00.123456789+02:00", "2024-05-01T10:00:00.123456+02:00"),
        ("2024-05-01T10:00:00-0530", "2024-05-01T10:00:00-05:30"),
        ("2024-05-01T10:00Z", "2024-05-01T10:00:00+00:00"),
        ("2024-02-29", "2024-02-29T00:00:00+00:00"),
        ("1969-12-31T23:59:59.999999Z", "1969-12-31T23:59:59.999999+00:00"),
        ("0001-01-01", "0001-01-01T00:00:00+00:00"),
    ],
)
def test_date_strings_are_read(text: str, expected: str) -> None:
    assert parse_date_text(text) == micros(expected)


@pytest.mark.parametrize(
    "text",
    [
        "2023-02-29",
        "2024-04-31",
        "2024-13-01",
        "2024-00-10",
        "0000-01-01",
        "2024-05-01T24:00",
        "2024-05-01T10:60",
        "2024-05-01T10:00:60",
        "2024-05-01T10:00:00+24:00",
        "2024-05-01Z",
        "2024-05-01T10",
        "2024-05-01T10:00:00.",
        "20240501",
        "2024-5-1",
        "2024-05-01\n",
        "٢٠٢٤-05-01",  # only ASCII digits
        "yesterday",
    ],
)
def test_other_strings_are_not_dates(text: str) -> None:
    assert parse_date_text(text) is None


def test_numbers_are_unix_seconds() -> None:
    assert seconds_to_micros(1_717_200_000) == NOW
    assert seconds_to_micros(1_717_200_000.25) == NOW + 250_000
    assert seconds_to_micros(-1.5) == -1_500_000
    assert seconds_to_micros(1e12) is None  # past the year 9999


@pytest.mark.parametrize(
    ("text", "amount", "unit"),
    [
        ("now", 0, "day"),
        ("30 days ago", -30, "day"),
        ("1 day ago", -1, "day"),
        ("  2 Weeks  Ago ", -2, "week"),
        ("in 3 hours", 3, "hour"),
        ("5 minutes from now", 5, "minute"),
        ("1 month ago", -1, "month"),
        ("0 years ago", 0, "day"),
    ],
)
def test_relative_dates(text: str, amount: int, unit: str) -> None:
    assert parse_relative(text) == RelativeDate(amount, unit)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text", ["30 day", "ago", "3 fortnights ago", "-3 days ago", "in days", ""]
)
def test_not_relative_dates(text: str) -> None:
    assert parse_relative(text) is None


@pytest.mark.parametrize(
    ("operator", "value", "stored", "expected"),
    [
        ("=", "2024-05-01T10:00:00Z", "2024-05-01T12:00:00+02:00", True),
        ("!=", "2024-05-01T10:00:00Z", "2024-05-01T10:00:00.000001Z", True),
        ("<", "2024-05-01", "2024-04-30T23:59:59Z", True),
        ("<", "2024-05-01", "2024-05-01", False),
        ("<=", "2024-05-01", "2024-05-01", True),
        (">", "2024-05-01", "2024-05-01T00:00:00.000001Z", True),
        (">=", "2024-05-01", "2024-04-30", False),
        ("is same day", "2024-05-01", "2024-05-01T23:59:59.999999Z", True),
        ("is same day", "2024-05-01", "2024-05-02T00:00:00Z", False),
        ("is same day", "2024-05-01T15:00:00Z", "2024-05-01T00:00:00Z", True),
        ("is same day", "2024-05-01", "2024-05-02T01:00:00+02:00", True),  # UTC days
        ("<", "2024-05-01", 1_714_521_599, True),  # Unix seconds
        ("=", "2024-05-01", 1_714_521_600.0, True),
    ],
)
def test_date_operators(operator: str, value: str, stored: Any, expected: bool) -> None:
    assert holds(leaf("date", "data.renews", operator, value), {"renews": stored}) is expected


@pytest.mark.parametrize("stored", [ABSENT, None, "not a date", "2024-02-30", True, ["2024-05-01"]])
def test_dates_that_are_not_dates_compare_false(stored: Any) -> None:
    data = {} if stored is ABSENT else {"renews": stored}
    for operator in ("=", "!=", "<", ">", "is same day"):
        assert holds(leaf("date", "data.renews", operator, "2024-05-01"), data) is False
    assert holds(leaf("date", "data.renews", "is set"), data) is (stored not in (ABSENT, None))


def test_relative_dates_move_with_now() -> None:
    signed_up = leaf("date", "created_at", ">", "7 days ago")
    assert holds(signed_up, created_at=NOW - 7 * DAY + 1)
    assert not holds(signed_up, created_at=NOW - 7 * DAY)
    assert holds(signed_up, created_at=NOW - 7 * DAY, now=NOW - 1)
    yesterday = leaf("date", "data.seen", "is same day", "1 day ago")
    assert holds(yesterday, {"seen": "2024-05-31T08:00:00Z"})
    assert not holds(yesterday, {"seen": "2024-06-01T08:00:00Z"})
    soon = leaf("date", "data.renews", "<", "in 3 days")
    assert holds(soon, {"renews": "2024-06-03"})
    assert not holds(soon, {"renews": "2024-06-04"})


# -- arrays --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operator", "value", "stored", "expected"),
    [
        ("any", ["vip", "beta"], ["beta", "x"], True),
        ("any", ["vip"], ["x"], False),
        ("any", "vip", ["vip"], True),  # a single value
        ("any", [1], [1.0, "1"], True),
        ("any", ["1"], [1], False),  # types are not converted
        ("any", [True], [1], False),
        ("any", [1], [True], False),
        ("any", [True], [True], True),
        ("any", ["vip"], [["vip"]], False),  # nested arrays are not searched
        ("none", ["vip"], ["x"], True),
        ("none", ["vip"], ["vip", "x"], False),
        ("none", ["vip"], [], True),
        ("any", ["vip"], "vip", False),  # not an array
        ("none", ["vip"], "x", False),
        ("none", ["vip"], ABSENT, False),  # missing: false, also for none
    ],
)
def test_array_operators(operator: str, value: Any, stored: Any, expected: bool) -> None:
    data = {} if stored is ABSENT else {"tags": stored}
    assert holds(leaf("array", "data.tags", operator, value), data) is expected


@pytest.mark.parametrize(
    ("stored", "empty", "is_set"),
    [
        (ABSENT, True, False),
        (None, True, False),
        ([], True, True),
        (["a"], False, True),
        ("", False, True),
    ],
)
def test_array_empty_and_presence(stored: Any, empty: bool, is_set: bool) -> None:
    data = {} if stored is ABSENT else {"tags": stored}
    assert holds(leaf("array", "data.tags", "empty"), data) is empty
    assert holds(leaf("array", "data.tags", "is set"), data) is is_set


# -- wrappers ------------------------------------------------------------------------------

YES = leaf("string", "data.plan", "=", "pro")
NO = leaf("string", "data.plan", "=", "free")
MISSING = leaf("string", "data.nothing", "=", "x")


@pytest.mark.parametrize(
    ("operator", "children", "expected"),
    [
        ("and", [YES, YES], True),
        ("and", [YES, NO], False),
        ("or", [NO, YES], True),
        ("or", [NO, NO], False),
        ("none", [NO, MISSING], True),
        ("none", [NO, YES], False),
        ("xor", [YES, NO], True),
        ("xor", [YES, YES], False),
        ("xor", [YES, YES, YES], False),  # exactly one, not an odd count
        ("xor", [NO, NO], False),
        ("and", [], True),  # no conditions: everyone
        ("or", [], True),
        ("none", [], True),
        ("xor", [], True),
    ],
)
def test_wrappers(operator: str, children: list[dict[str, Any]], expected: bool) -> None:
    assert holds(wrapper(operator, *children), {"plan": "pro"}) is expected


def test_none_is_how_to_negate_a_missing_value() -> None:
    not_pro = wrapper("none", YES)
    assert holds(not_pro, {})
    assert holds(not_pro, {"plan": "free"})
    assert not holds(leaf("string", "data.plan", "!=", "pro"), {})


# -- event rules ---------------------------------------------------------------------------


def order(ago: int, **data: Any) -> EventFact:
    return EventFact("Order placed", data, NOW - ago)


def test_an_event_rule_without_frequency_means_ever() -> None:
    assert holds(did("Order placed"), events=[order(400 * DAY)])
    assert not holds(did("Order placed"), events=[EventFact("Page viewed", {}, NOW)])
    assert not holds(did("Order placed"))


def test_events_dated_after_now_have_not_happened() -> None:
    assert not holds(did("Order placed"), events=[order(-1)])
    assert holds(did("Order placed"), events=[order(0)])


def test_children_filter_the_events_data() -> None:
    big = did("Order placed", leaf("number", "data.total", ">=", 100, group="event"))
    assert holds(big, events=[order(DAY, total=20), order(DAY, total=150)])
    assert not holds(big, events=[order(DAY, total=20), order(DAY)])
    either = did(
        "Order placed",
        leaf("string", "data.currency", "=", "EUR", group="event"),
        leaf("number", "data.total", ">", 100, group="event"),
        operator="or",
    )
    assert holds(either, events=[order(DAY, currency="EUR", total=1)])
    neither = did(
        "Order placed", leaf("string", "data.currency", "=", "EUR", group="event"), operator="none"
    )
    assert holds(neither, events=[order(DAY, currency="USD")])
    assert holds(neither, events=[order(DAY)])
    recent = did("Order placed", leaf("date", "created_at", ">", "2 days ago", group="event"))
    assert holds(recent, events=[order(DAY)])
    assert not holds(recent, events=[order(3 * DAY)])
    named = did("Order placed", leaf("string", "name", "starts with", "Order", group="event"))
    assert holds(named, events=[order(DAY)])


def test_at_least_three_orders_in_the_last_30_days() -> None:
    rule = did("Order placed", frequency=rolling(3, "day", 30))
    inside = [order(DAY), order(10 * DAY), order(30 * DAY - 1)]
    assert holds(rule, events=inside)
    # The window is (now - 30 days, now]: an order exactly 30 days old has left it.
    assert not holds(rule, events=[order(DAY), order(10 * DAY), order(30 * DAY)])
    assert not holds(rule, events=[*inside[:2], order(-1)])  # not yet happened


@pytest.mark.parametrize(
    ("operator", "count", "orders", "expected"),
    [
        ("=", 2, 2, True),
        ("=", 2, 3, False),
        ("=", 0, 0, True),
        ("<", 2, 1, True),
        ("<", 2, 2, False),
        ("<", 1, 0, True),  # did not order: profiles without events match
        ("<=", 0, 0, True),
        ("<=", 0, 1, False),
        (">", 0, 1, True),
        (">", 1, 1, False),
        (">=", 0, 0, True),
        (">=", 2, 2, True),
    ],
)
def test_frequency_operators(operator: str, count: int, orders: int, expected: bool) -> None:
    rule = did("Order placed", frequency=rolling(count, "week", 1, operator))
    events = [order(HOUR * (i + 1)) for i in range(orders)] + [order(8 * DAY)]
    assert holds(rule, events=events) is expected


def test_fixed_periods_include_both_ends_and_whole_end_days() -> None:
    may = {
        "period": {"type": "fixed", "start_date": "2024-05-01", "end_date": "2024-05-31"},
        "operator": ">=",
        "count": 1,
    }
    rule = did("Order placed", frequency=may)

    def at(text: str) -> list[EventFact]:
        return [EventFact("Order placed", {}, micros(text))]

    assert holds(rule, events=at("2024-05-01T00:00:00+00:00"))
    assert holds(rule, events=at("2024-05-31T23:59:59.999999+00:00"))
    assert not holds(rule, events=at("2024-06-01T00:00:00+00:00"))
    assert not holds(rule, events=at("2024-04-30T23:59:59.999999+00:00"))
    exact = {
        "period": {"type": "fixed", "start_date": "2024-05-01", "end_date": "2024-05-10T12:00:00Z"},
        "operator": ">=",
        "count": 1,
    }
    assert holds(did("Order placed", frequency=exact), events=at("2024-05-10T12:00:00+00:00"))
    assert not holds(
        did("Order placed", frequency=exact), events=at("2024-05-10T12:00:00.000001+00:00")
    )
    open_ended = {
        "period": {"type": "fixed", "start_date": "2024-05-01"},
        "operator": ">=",
        "count": 1,
    }
    assert holds(did("Order placed", frequency=open_ended), events=at("2024-05-31T00:00:00+00:00"))
    assert not holds(did("Order placed", frequency=open_ended), events=[order(-DAY)])


def test_plan_is_pro_and_signed_up_in_the_last_7_days() -> None:
    rule = wrapper("and", YES, leaf("date", "created_at", ">", "7 days ago"))
    assert holds(rule, {"plan": "pro"}, created_at=NOW - 6 * DAY)
    assert not holds(rule, {"plan": "pro"}, created_at=NOW - 8 * DAY)
    assert not holds(rule, {"plan": "free"}, created_at=NOW - DAY)


# -- parsing -------------------------------------------------------------------------------


def test_parse_builds_the_tree() -> None:
    rule = parse_rule(
        wrapper(
            "and",
            leaf("string", "data.address.city", "=", "Sydney"),
            leaf("date", "created_at", ">", "2024-05-01"),
            leaf("date", "data.seen", "<", "30 days ago"),
        )
    )
    city, created, seen = rule.children  # type: ignore[union-attr]
    assert city.ref == DataPath(("address", "city"))  # type: ignore[union-attr]
    assert created.ref == Field("created_at")  # type: ignore[union-attr]
    assert created.operand == AbsoluteDate("2024-05-01", micros("2024-05-01"), date_only=True)  # type: ignore[union-attr]
    assert seen.operand == RelativeDate(-30, "day")  # type: ignore[union-attr]


def test_json_round_trips_canonically() -> None:
    raw = {
        "uuid": "root",
        "id": 7,
        "root_uuid": "x",
        "type": "wrapper",
        "group": "parent",
        "path": "$",
        "operator": "and",
        "children": [
            leaf("date", "data.seen", "<", "  30 DAYS ago"),
            leaf("string", "email", "is set", ""),
            leaf("array", "data.tags", "any", "vip"),
            did("Order placed", frequency=rolling(3, "day", 30)),
        ],
    }
    rule = parse_rule(raw)
    out = rule_to_json(rule)
    assert "id" not in out and "root_uuid" not in out
    assert out["children"][0]["value"] == "30 days ago"
    assert "value" not in out["children"][1]
    assert out["children"][2]["value"] == ["vip"]
    assert out["children"][3]["frequency"] == rolling(3, "day", 30)
    assert parse_rule(out) == rule
    assert rule_to_json(parse_rule(out)) == out


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ([], [("rule", "parameter_invalid_format")]),
        ({"group": "user"}, [("rule.type", "parameter_missing")]),
        ({"type": "text", "group": "user"}, [("rule.type", "parameter_invalid_format")]),
        (
            {**leaf("string", "email", "="), "colour": 1},
            [("rule.colour", "parameter_unknown"), ("rule.value", "parameter_missing")],
        ),
        (
            {"type": "string", "path": "email", "operator": "is set"},
            [("rule.group", "parameter_missing")],
        ),
        (
            leaf("string", "email", "is set", group="event"),
            [("rule.group", "parameter_invalid_format")],
        ),
        (leaf("string", "plan", "=", "pro"), [("rule.path", "parameter_invalid_format")]),
        (
            {"type": "string", "group": "user", "operator": "is set"},
            [("rule.path", "parameter_missing")],
        ),
        (leaf("string", "", "is set"), [("rule.path", "parameter_invalid_empty")]),
        (leaf("string", "data.a..b", "is set"), [("rule.path", "parameter_invalid_format")]),
        (leaf("string", 'data.a"b', "is set"), [("rule.path", "parameter_invalid_format")]),
        (leaf("number", "email", "=", 3), [("rule.path", "parameter_invalid_format")]),
        (leaf("string", "created_at", "=", "x"), [("rule.path", "parameter_invalid_format")]),
        (leaf("string", "data.plan", "<", "pro"), [("rule.operator", "parameter_invalid_format")]),
        (
            {"type": "string", "group": "user", "path": "data.plan"},
            [("rule.operator", "parameter_missing")],
        ),
        (leaf("string", "data.plan", "="), [("rule.value", "parameter_missing")]),
        (leaf("string", "data.plan", "=", 3), [("rule.value", "parameter_invalid_format")]),
        (
            leaf("string", "data.plan", "=", "x" * 1001),
            [("rule.value", "parameter_invalid_format")],
        ),
        (leaf("number", "data.n", "=", "3"), [("rule.value", "parameter_invalid_format")]),
        (leaf("number", "data.n", "=", True), [("rule.value", "parameter_invalid_format")]),
        (leaf("boolean", "data.b", "=", "true"), [("rule.value", "parameter_invalid_format")]),
        (leaf("date", "data.d", "<", "yesterday"), [("rule.value", "parameter_invalid_format")]),
        (leaf("date", "data.d", "<", "2023-02-29"), [("rule.value", "parameter_invalid_format")]),
        (
            leaf("date", "data.d", "<", "200 years ago"),
            [("rule.value", "parameter_invalid_format")],
        ),
        (leaf("date", "data.d", "<", 1714521600), [("rule.value", "parameter_invalid_format")]),
        (leaf("array", "data.t", "any", []), [("rule.value", "parameter_invalid_empty")]),
        (
            leaf("array", "data.t", "any", ["a", None, {"x": 1}]),
            [
                ("rule.value[1]", "parameter_invalid_format"),
                ("rule.value[2]", "parameter_invalid_format"),
            ],
        ),
        (
            {**leaf("string", "data.plan", "is set"), "children": [YES]},
            [("rule.children", "parameter_invalid_format")],
        ),
        (
            {"type": "wrapper", "group": "parent", "children": []},
            [("rule.operator", "parameter_missing")],
        ),
        (
            {"type": "wrapper", "group": "parent", "operator": "nand"},
            [("rule.operator", "parameter_invalid_format")],
        ),
        ({"type": "wrapper", "operator": "and"}, [("rule.group", "parameter_missing")]),
        (
            {"type": "wrapper", "group": "team", "operator": "and"},
            [("rule.group", "parameter_invalid_format")],
        ),
        (
            {"type": "wrapper", "group": "parent", "operator": "and", "children": {}},
            [("rule.children", "parameter_invalid_format")],
        ),
        (
            {"type": "wrapper", "group": "parent", "operator": "and", "value": "x"},
            [("rule.value", "parameter_invalid_format")],
        ),
        (
            {**wrapper("and"), "frequency": rolling(1, "day", 1)},
            [("rule.frequency", "parameter_invalid_format")],
        ),
        (
            {"type": "wrapper", "group": "event", "path": "data.x", "operator": "and"},
            [("rule.path", "parameter_invalid_format")],
        ),
        (
            wrapper("and", leaf("string", "data.x", "is set", group="event")),
            [("rule.children[0].group", "parameter_invalid_format")],
        ),
        (
            did("Order placed", leaf("string", "data.x", "is set")),
            [("rule.children[0].group", "parameter_invalid_format")],
        ),
        (
            did("Order placed", did("Page viewed")),
            [("rule.children[0].path", "parameter_invalid_format")],
        ),
        ({**did("x"), "value": None}, [("rule.value", "parameter_missing")]),
        ({**did("x"), "value": " "}, [("rule.value", "parameter_invalid_format")]),
        (
            did("x", frequency={"period": {"type": "rolling", "unit": "day", "value": 1}}),
            [
                ("rule.frequency.operator", "parameter_missing"),
                ("rule.frequency.count", "parameter_missing"),
            ],
        ),
        (
            did("x", frequency=rolling(-1, "day", 1, "~")),
            [
                ("rule.frequency.operator", "parameter_invalid_format"),
                ("rule.frequency.count", "parameter_invalid_format"),
            ],
        ),
        (
            did("x", frequency={"operator": ">=", "count": 1}),
            [("rule.frequency.period", "parameter_missing")],
        ),
        (
            did("x", frequency={"period": {"type": "sliding"}, "operator": ">=", "count": 1}),
            [("rule.frequency.period.type", "parameter_invalid_format")],
        ),
        (
            did("x", frequency=rolling(1, "fortnight", 0)),
            [
                ("rule.frequency.period.unit", "parameter_invalid_format"),
                ("rule.frequency.period.value", "parameter_invalid_format"),
            ],
        ),
        (
            did("x", frequency=rolling(1, "year", 101)),
            [("rule.frequency.period.value", "parameter_invalid_format")],
        ),
        (
            did(
                "x",
                frequency={
                    "period": {"type": "fixed", "unit": "day"},
                    "operator": ">=",
                    "count": 1,
                },
            ),
            [
                ("rule.frequency.period.unit", "parameter_unknown"),
                ("rule.frequency.period.start_date", "parameter_missing"),
            ],
        ),
        (
            did(
                "x",
                frequency={
                    "period": {"type": "fixed", "start_date": "30 days ago"},
                    "operator": ">=",
                    "count": 1,
                },
            ),
            [("rule.frequency.period.start_date", "parameter_invalid_format")],
        ),
        (
            did(
                "x",
                frequency={
                    "period": {
                        "type": "fixed",
                        "start_date": "2024-05-02",
                        "end_date": "2024-05-01",
                    },
                    "operator": ">=",
                    "count": 1,
                },
            ),
            [("rule.frequency.period.end_date", "parameter_invalid_format")],
        ),
        (
            did("x", frequency={**rolling(1, "day", 1), "window": 1}),
            [("rule.frequency.window", "parameter_unknown")],
        ),
        (
            wrapper("and", {**YES, "uuid": "a"}, {**NO, "uuid": "a"}),
            [("rule.children[1].uuid", "parameter_invalid_format")],
        ),
        ({**YES, "uuid": ""}, [("rule.uuid", "parameter_invalid_format")]),
    ],
)
def test_validation_errors_point_into_the_tree(raw: Any, expected: list[tuple[str, str]]) -> None:
    assert errors_of(raw) == expected


def test_validation_collects_every_problem() -> None:
    raw = wrapper(
        "nand",
        leaf("string", "plan", ">"),
        leaf("number", "data.x", "=", "3"),
        did("", frequency=rolling(-1, "fortnight", 0, "~")),
        wrapper("and", wrapper("or", leaf("boolean", "data.b", "=", "yes"))),
    )
    assert errors_of(raw) == [
        ("rule.operator", "parameter_invalid_format"),
        ("rule.children[0].path", "parameter_invalid_format"),
        ("rule.children[0].operator", "parameter_invalid_format"),
        ("rule.children[1].value", "parameter_invalid_format"),
        ("rule.children[2].value", "parameter_invalid_format"),
        ("rule.children[2].frequency.period.unit", "parameter_invalid_format"),
        ("rule.children[2].frequency.period.value", "parameter_invalid_format"),
        ("rule.children[2].frequency.operator", "parameter_invalid_format"),
        ("rule.children[2].frequency.count", "parameter_invalid_format"),
        ("rule.children[3].children[0].children[0].value", "parameter_invalid_format"),
    ]
    with pytest.raises(ValidationFailed, match=r"rule.operator: .* \(and 9 more\)"):
        parse_rule(raw)


def test_size_limits() -> None:
    deep = YES
    for _ in range(9):
        deep = wrapper("and", deep)
    assert ("rule" + ".children[0]" * 8, "parameter_invalid_format") in errors_of(deep)
    wide = wrapper("or", *[YES] * 200)
    assert errors_of(wide) == [("rule.children[199]", "parameter_invalid_format")]
    assert errors_of(leaf("string", "data." + ".".join("k" * 9), "is set")) == [
        ("rule.path", "parameter_invalid_format")
    ]
    assert errors_of(leaf("array", "data.t", "any", list(range(101)))) == [
        ("rule.value", "parameter_invalid_format")
    ]


def test_parse_accepts_a_custom_root_param() -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_rule({"type": "x"}, param="body.rule")
    assert caught.value.errors[0].param == "body.rule.type"


# -- dependencies and next_change ----------------------------------------------------------


def test_dependencies_name_what_the_rule_reads() -> None:
    rule = parse_rule(
        wrapper(
            "or",
            leaf("string", "data.address.city", "=", "Sydney"),
            leaf("string", "email", "is set"),
            did("Order placed", leaf("number", "data.total", ">", 1, group="event")),
            wrapper("none", did("Page viewed", frequency=rolling(1, "day", 1))),
        )
    )
    deps = dependencies(rule)
    assert deps.event_names == {"Order placed", "Page viewed"}
    assert deps.profile_fields == {"email"}
    assert deps.trait_paths == {("address", "city")}
    assert deps.time_dependent
    assert deps.reads_event("Order placed") and not deps.reads_event("Signed up")
    assert deps.reads_profile_change(trait_keys=["address"])
    assert deps.reads_profile_change(fields=["email"])
    assert not deps.reads_profile_change(fields=["phone"], trait_keys=["plan"])


def test_static_rules_do_not_depend_on_time() -> None:
    fixed = {"period": {"type": "fixed", "start_date": "2024-05-01"}, "operator": ">=", "count": 1}
    rule = parse_rule(
        wrapper(
            "and", YES, leaf("date", "created_at", ">", "2024-01-01"), did("x", frequency=fixed)
        )
    )
    assert not dependencies(rule).time_dependent
    relative = parse_rule(did("x", leaf("date", "data.when", "<", "now", group="event")))
    assert dependencies(relative).time_dependent
    assert dependencies(relative).trait_paths == frozenset()  # event data is not a trait


def changes(
    raw: dict[str, Any],
    data: dict[str, Any] | None = None,
    events: list[EventFact] | None = None,
    **columns: Any,
) -> int | None:
    profile = ProfileFacts(id="p", data=data or {}, **columns)
    return next_change(parse_rule(raw), profile, events or [], NOW)


def test_a_rolling_window_expires_members_at_the_exact_moment() -> None:
    rule = did("Order placed", frequency=rolling(2, "day", 30))
    events = [order(5 * DAY), order(2 * DAY), order(40 * DAY)]
    # The order of 5 days ago leaves the window 25 days from now; then only one is left.
    assert changes(rule, events=events) == NOW + 25 * DAY
    assert (
        changes(did("Order placed", frequency=rolling(1, "day", 30)), events=events)
        == NOW + 28 * DAY
    )
    assert changes(did("Order placed", frequency=rolling(4, "day", 30)), events=events) is None


def test_an_event_dated_in_the_future_counts_when_it_comes_due() -> None:
    assert changes(did("Order placed"), events=[order(-HOUR)]) == NOW + HOUR
    assert changes(did("Order placed"), events=[order(HOUR), order(-HOUR)]) is None


def test_relative_dates_change_when_they_pass_a_stored_date() -> None:
    rule = leaf("date", "created_at", ">", "7 days ago")
    assert changes(rule, created_at=NOW - 2 * DAY) == NOW + 5 * DAY
    assert changes(rule, created_at=NOW - 9 * DAY) is None  # never true again
    later = leaf("date", "data.renews", "<=", "now")
    assert changes(later, {"renews": "2024-06-03T00:00:00Z"}) == NOW + 2 * DAY
    assert (
        changes(leaf("date", "data.renews", "<", "now"), {"renews": "2024-06-03T00:00:00Z"})
        == NOW + 2 * DAY + 1
    )
    today = leaf("date", "data.seen", "is same day", "now")
    assert changes(today, {"seen": "2024-06-01T10:00:00Z"}) == NOW + DAY
    assert changes(today, {"seen": "2024-06-03T10:00:00Z"}) == NOW + 2 * DAY
    assert changes(leaf("date", "data.seen", "<", "now"), {"seen": "soon"}) is None


def test_next_change_is_none_for_a_rule_the_clock_cannot_move() -> None:
    assert changes(YES, {"plan": "pro"}) is None
    assert changes(did("Order placed", frequency=rolling(1, "day", 1)), events=[]) is None


def test_next_change_stays_exact_with_many_events() -> None:
    rule = parse_rule(did("Order placed", frequency=rolling(1, "day", 30)))
    events = [order(-HOUR * (i + 1)) for i in range(500)] + [order(DAY)]
    # True from now on, until the last of them (due in 500 hours) leaves the window.
    assert next_change(rule, ProfileFacts(id="p"), events, NOW) == NOW + 30 * DAY + 500 * HOUR
    three = parse_rule(did("Order placed", frequency=rolling(3, "day", 30)))
    # False now (one order counted); true when the second future order comes due.
    assert next_change(three, ProfileFacts(id="p"), events, NOW) == NOW + 2 * HOUR
