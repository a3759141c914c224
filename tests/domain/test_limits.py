"""The input limits: depth and NUL checks, external ids, the timestamp range."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.domain import fields, limits


def nested(depth: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize("depth", [1, 2, limits.MAX_DEPTH])
def test_objects_up_to_the_depth_limit_pass(depth: int) -> None:
    assert limits.json_problem(nested(depth)) is None
    assert not limits.deeper_than(nested(depth), limits.MAX_DEPTH)


@pytest.mark.parametrize("depth", [limits.MAX_DEPTH + 1, 5000, 100_000])
def test_deeper_objects_are_refused_without_recursion(depth: int) -> None:
    problem = limits.json_problem(nested(depth))
    assert problem == f"is nested deeper than {limits.MAX_DEPTH} levels"
    assert limits.deeper_than(nested(depth), limits.MAX_DEPTH)


def test_arrays_count_as_levels() -> None:
    value: list = [1]
    for _ in range(limits.MAX_DEPTH - 1):
        value = [value]
    assert limits.json_problem({"a": value}) is not None  # the object is one more level
    assert limits.json_problem({"a": value[0]}) is None


@pytest.mark.parametrize(
    "value", [{"a\x00": 1}, {"a": "b\x00"}, {"a": ["\x00"]}, {"a": [{"b": "\x00"}]}]
)
def test_nul_anywhere_is_refused(value: dict) -> None:
    assert "NUL" in (limits.json_problem(value) or "")


@pytest.mark.parametrize("value", ["a/b", "/", ".", "..", "x\x00"])
def test_external_ids_no_url_can_name_are_refused(value: str) -> None:
    assert limits.external_id_problem(value) is not None


@pytest.mark.parametrize("value", ["u_1", "a.b", "...", "%2F", "a b", "é"])
def test_ordinary_external_ids_pass(value: str) -> None:
    assert limits.external_id_problem(value) is None


offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda m: dt.timezone(dt.timedelta(minutes=m))
)


@given(
    moment=st.datetimes(
        min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59, 59, 999999)
    ),
    tz=st.none() | offsets,
)
def test_a_timestamp_is_accepted_exactly_when_its_utc_value_is_in_range(
    moment: dt.datetime, tz: dt.timezone | None
) -> None:
    text = moment.replace(tzinfo=tz).isoformat()
    utc = moment - (tz.utcoffset(None) if tz else dt.timedelta(0))  # naive arithmetic
    in_range = dt.datetime(1, 1, 1) <= utc <= dt.datetime(9999, 12, 31, 23, 59, 59, 999999)
    try:
        micros = fields.parse_timestamp(text)
    except ValueError as exc:
        assert not in_range, exc
        assert "outside the accepted range" in str(exc)
        return
    assert in_range
    assert micros == (utc - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1)
    shown = fields.format_timestamp(micros)  # every accepted value can be shown
    assert shown.endswith("Z")


@pytest.mark.parametrize(
    ("text", "accepted"),
    [
        ("0001-01-01T00:00:00Z", True),
        ("0001-01-01T00:00:00+01:00", False),
        ("0001-01-01T00:00:00-01:00", True),
        ("9999-12-31T23:59:59.999999", True),
        ("9999-12-31T23:59:59.9999999Z", True),  # the 7th digit is dropped, not rounded up
        ("9999-12-31T23:00:00-01:00", False),
        ("9999-12-31T22:59:59-01:00", True),
    ],
)
def test_timestamps_at_the_calendar_edges(text: str, accepted: bool) -> None:
    if accepted:
        fields.format_timestamp(fields.parse_timestamp(text))
    else:
        with pytest.raises(ValueError, match="outside the accepted range"):
            fields.parse_timestamp(text)


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_any_stored_timestamp_can_be_shown(micros: int) -> None:
    shown = fields.format_timestamp(micros)
    assert shown.endswith("Z") and len(shown) == 24
