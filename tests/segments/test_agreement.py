"""One rule, two evaluators: ``evaluate`` in Python and ``compile_rule`` in SQL select the
same profiles, on SQLite and on PostgreSQL, for generated rules, profiles and events.

The generator mixes types on purpose (a trait that is a string for one profile and a
number, an array, null or a nested object for the next), uses values that sit on the
boundaries (window edges, "now", impossible calendar dates, time zones), and events dated
after ``now``. Also checked here: ``rule_to_json`` round-trips every generated rule, and
``next_change`` names exactly the instant at which the result flips.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from tests.segments import Backend, facts, postgres_backend, select_ids, sqlite_backend
from tidings.domain.rules import (
    EventFact,
    ProfileFacts,
    Rule,
    evaluate,
    next_change,
    parse_rule,
    rule_to_json,
)
from tidings.domain.rules.dates import parse_date_text
from tidings.domain.rules.model import OPERATORS

SECOND = 1_000_000
HOUR = 3600 * SECOND
DAY = 24 * HOUR
NOW = 1_717_200_000 * SECOND  # 2024-06-01T00:00:00Z
EVENT_NAMES = ("Order placed", "Page viewed")

# -- values ---------------------------------------------------------------------------------

DATE_TEXTS = (
    "2024-05-30",
    "2024-06-01",
    "2024-05-31T23:59:59.999999Z",
    "2024-06-01T01:00:00+02:00",
    "2024-05-25 10:00",
    "2024-05-01T10:00:00+0530",
    "2024-05-31T12:00:00.1234567-01:00",
    "2024-05-31T12:00Z",
    "2024-02-29",
    "0001-01-01",
    "9999-12-31T23:59:59",
)
NOT_DATES = (
    "2024-02-30",
    "2023-02-29",
    "2024-05-01T24:00:00",
    "2024-13-01",
    "0000-01-01",
    "20240501",
    "2024-05-01T10:00:60",
    "2024-05-01T10:00:00+24:00",
    "2024-05-01Z",
    "2024-05-01T10:00:00.Z",
    "2024-05-01T10",
    "2024-05-01T10:00:00Z+01:00",
    "2024-05-01\n",
    "not a date",
)
WORDS = ("pro", "free", "Pro", "", "pro plan", "é", "日本")
words = st.sampled_from(WORDS)
texts = (
    words
    | words
    | st.sampled_from(DATE_TEXTS + NOT_DATES)
    | st.text(alphabet="abP é-:0129\n", max_size=6)
)
small_numbers = st.sampled_from([0, 1, 2, 2.0, 3, -1, 0.5])
numbers = (
    small_numbers
    | small_numbers
    | st.integers(-3, 12)
    | st.sampled_from([0.5, 1.0, 2.5, -1.5, 1e10, 1e15, 3.000000000000001])
    # Unix seconds around now, some with fractions: numbers read as dates
    | st.integers(-40 * 86400, 3 * 86400).map(lambda s: NOW // SECOND + s)
    | st.integers(-40 * 86400, 86400).map(lambda s: NOW / SECOND + s + 0.25)
)
scalars = texts | numbers | st.booleans()
items = st.sampled_from(["pro", "free", "", 1, 1.0, 2, True, False]) | scalars
json_values = st.recursive(
    st.none() | scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["city", "since", "n"]), inner, max_size=2)
    ),
    max_leaves=4,
)
times = st.sampled_from(
    [NOW, NOW - 1, NOW + 1, NOW - 30 * DAY, NOW - 30 * DAY + 1, NOW - 7 * DAY, NOW - DAY]
) | st.integers(NOW - 45 * DAY, NOW + 3 * DAY)


def _iso(micros: int, style: int) -> str:
    moment = datetime.fromtimestamp(micros / SECOND, UTC)
    if style == 0:
        return moment.strftime("%Y-%m-%d")
    if style == 1:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if style == 2:
        return moment.strftime("%Y-%m-%d %H:%M")
    shifted = moment + timedelta(hours=5, minutes=30)
    return shifted.strftime("%Y-%m-%dT%H:%M:%S+05:30")


def _spoil(text: str, where: int, junk: str) -> str:
    """A date string with one part replaced: an impossible day, hour, zone, or garbage."""
    return text[:where] + junk + text[where + len(junk) :]


near_dates = st.builds(_iso, times, st.integers(0, 3))
dates = (
    near_dates
    | st.sampled_from(DATE_TEXTS + NOT_DATES)
    | st.builds(
        _spoil,
        near_dates,
        st.sampled_from([5, 8, 11, 14, 17, 19, 20]),
        st.sampled_from(["02-30", "04-31", "13", "00", "24", "60", "x", "+", "Z", ".", "9"]),
    )
    | st.integers(-40 * 86400, 3 * 86400).map(lambda s: NOW // SECOND + s)
)


def mostly(typed: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually a value of the expected type, sometimes any JSON at all."""
    return st.one_of(typed, typed, typed, json_values)


TRAITS = {
    "plan": mostly(texts),
    "n": mostly(numbers),
    "flag": mostly(st.booleans()),
    "when": mostly(dates),
    "tags": mostly(st.lists(items, max_size=4)),
    "address": mostly(
        st.fixed_dictionaries({}, optional={"city": texts, "since": dates, "n": numbers})
    ),
}
EVENT_DATA = {
    "total": mostly(numbers),
    "plan": mostly(texts),
    "when": mostly(dates),
    "tags": mostly(st.lists(items, max_size=3)),
}


# -- rules ----------------------------------------------------------------------------------

# The paths of the right type come up most; the others test type mismatches.
USER_PATHS = {
    "string": ["data.plan"] * 3 + ["$.plan", "data.address.city", "email", "external_id", "data.n"],
    "number": ["data.n"] * 3 + ["$.n", "data.address.n", "data.plan"],
    "boolean": ["data.flag"] * 3 + ["data.n"],
    "date": ["data.when"] * 3
    + ["$.when", "data.address.since", "created_at", "created_at", "data.n", "data.plan"],
    "array": ["data.tags"] * 3 + ["data.plan", "data.address"],
}
EVENT_PATHS = {
    "string": ["data.plan"] * 3 + ["name", "data.when"],
    "number": ["data.total"] * 3 + ["data.plan"],
    "boolean": ["data.total", "data.plan"],
    "date": ["data.when", "data.when", "created_at", "created_at", "data.total"],
    "array": ["data.tags"] * 3 + ["data.plan"],
}


relative_dates = st.sampled_from(["now", "1 day ago", "30 days ago", "in 1 day"]) | st.builds(
    lambda n, unit, ago: f"{n} {unit}s ago" if ago else f"in {n} {unit}s",
    st.integers(0, 40),
    st.sampled_from(["minute", "hour", "day", "week"]),
    st.booleans(),
)


def operand(kind: str) -> st.SearchStrategy[Any]:
    if kind == "string":
        return words | texts
    if kind == "number":
        return small_numbers | numbers
    if kind == "boolean":
        return st.booleans()
    if kind == "date":
        return st.builds(_iso, times, st.integers(0, 3)) | relative_dates
    return st.lists(items, min_size=1, max_size=3)


@st.composite
def conditions(draw: st.DrawFn, group: str) -> dict[str, Any]:
    kind = draw(st.sampled_from(["string", "number", "boolean", "date", "array"]))
    paths = (USER_PATHS if group == "user" else EVENT_PATHS)[kind]
    node: dict[str, Any] = {
        "type": kind,
        "group": group,
        "path": draw(st.sampled_from(paths)),
        "operator": draw(st.sampled_from(OPERATORS[kind])),
    }
    if node["operator"] not in ("is set", "is not set", "empty"):
        node["value"] = draw(operand(kind))
    return node


frequencies = st.fixed_dictionaries(
    {
        "period": st.fixed_dictionaries(
            {
                "type": st.just("rolling"),
                "unit": st.sampled_from(["hour", "day", "week"]),
                "value": st.integers(1, 40),
            }
        )
        | st.builds(
            lambda start, end: (
                {"type": "fixed", "start_date": start} | ({"end_date": end} if end else {})
            ),
            st.sampled_from(["2024-05-01", "2024-05-25T00:00:00Z", "2024-05-31T12:00:00Z"]),
            st.sampled_from([None, "2024-05-31", "2024-06-01T00:00:00Z", "2024-06-10"]),
        ),
        "operator": st.sampled_from(["=", "<", "<=", ">", ">="]),
        "count": st.integers(0, 3),
    }
)


event_conditions = st.recursive(
    conditions("event"),
    lambda kids: st.builds(
        lambda op, children: {
            "type": "wrapper",
            "group": "event",
            "operator": op,
            "children": children,
        },
        st.sampled_from(["and", "or", "none", "xor"]),
        st.lists(kids, max_size=2),
    ),
    max_leaves=3,
)


@st.composite
def event_rules(draw: st.DrawFn) -> dict[str, Any]:
    node: dict[str, Any] = {
        "type": "wrapper",
        "group": "event",
        "path": "name",
        "value": draw(st.sampled_from(EVENT_NAMES)),
        "operator": draw(st.sampled_from(["and", "or", "none", "xor"])),
        "children": draw(st.lists(event_conditions, max_size=2)),
    }
    frequency = draw(st.none() | frequencies)
    if frequency is not None:
        node["frequency"] = frequency
    return node


raw_rules = st.recursive(
    conditions("user") | event_rules(),
    lambda kids: st.builds(
        lambda op, children: {
            "type": "wrapper",
            "group": "parent",
            "operator": op,
            "children": children,
        },
        st.sampled_from(["and", "or", "none", "xor"]),
        st.lists(kids, max_size=3),
    ),
    max_leaves=5,
)


# -- profiles and events --------------------------------------------------------------------


@st.composite
def people(
    draw: st.DrawFn,
    least: int = 1,
    most: int = 4,
    traits: dict[str, st.SearchStrategy[Any]] = TRAITS,
    event_data: dict[str, st.SearchStrategy[Any]] = EVENT_DATA,
    names: tuple[str, ...] = (*EVENT_NAMES, "Other"),
) -> tuple[list[ProfileFacts], dict[str, list[EventFact]]]:
    count = draw(st.integers(least, most))
    found: list[ProfileFacts] = []
    history: dict[str, list[EventFact]] = {}
    for i in range(count):
        pid = f"p{i}"
        found.append(
            facts(
                pid,
                data=draw(st.fixed_dictionaries({}, optional=traits)),
                created_at=draw(times),
                email=draw(st.sampled_from([None, "a@example.com", "pro@example.com"])),
                external_id=draw(st.sampled_from([None, "pro", "u-1"])),
            )
        )
        history[pid] = []
        if names:
            event = st.builds(
                EventFact,
                name=st.sampled_from(names),
                data=st.fixed_dictionaries({}, optional=event_data),
                created_at=times,
            )
            history[pid] = draw(st.lists(event, max_size=5))
    return found, history


Case = tuple[Rule, list[ProfileFacts], dict[str, list[EventFact]]]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    rule = parse_rule(draw(raw_rules))
    found, history = draw(people())
    return rule, found, history


single_conditions = conditions("user") | st.builds(
    lambda node, child: node | {"children": [child]}, event_rules(), conditions("event")
)


@st.composite
def single_cases(draw: st.DrawFn) -> Case:
    """One condition (or one event rule with one condition) over many profiles: each
    example tries one operator on many values."""
    raw = draw(single_conditions)
    rule = parse_rule(raw)
    leaf = raw["children"][0] if raw["type"] == "wrapper" else raw
    key = leaf["path"].removeprefix("$.").removeprefix("data.").split(".")[0]
    if raw["type"] == "wrapper":  # only the data this event rule reads, to draw quickly
        found, history = draw(
            people(
                4, 8, {}, {k: v for k, v in EVENT_DATA.items() if k == key}, (raw["value"], "Other")
            )
        )
    else:
        found, history = draw(people(4, 8, {k: v for k, v in TRAITS.items() if k == key}, {}, ()))
    return rule, found, history


def expected(case: Case, now: int = NOW) -> set[str]:
    rule, found, history = case
    note(f"rule: {rule_to_json(rule)}")
    for p in found:
        note(f"{p.id}: {p} events: {history[p.id]}")
    return {p.id for p in found if evaluate(rule, p, history[p.id], now)}


# -- the properties -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sqlite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    directory: Path = tmp_path_factory.mktemp("agreement")
    with sqlite_backend(directory) as backend:
        yield backend


@pytest.fixture(scope="module")
def postgres() -> Iterator[Backend]:
    with postgres_backend() as backend:
        yield backend


# TIDINGS_AGREEMENT_EXAMPLES=5000 hunts longer (the default keeps the suite quick).
EXAMPLES = int(os.environ.get("TIDINGS_AGREEMENT_EXAMPLES", "150"))
AGREEMENT = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
# The focused properties try many values per example: fewer examples cover as much.
FOCUSED = settings(AGREEMENT, max_examples=max(1, EXAMPLES * 2 // 3))
DATES = settings(AGREEMENT, max_examples=max(1, EXAMPLES * 2 // 5))


@AGREEMENT
@given(case=cases())
def test_sql_on_sqlite_selects_what_evaluate_selects(sqlite: Backend, case: Case) -> None:
    rule, found, history = case
    assert sqlite.matching(rule, found, history, NOW) == expected(case)


@AGREEMENT
@given(case=cases())
def test_sql_on_postgres_selects_what_evaluate_selects(postgres: Backend, case: Case) -> None:
    rule, found, history = case
    assert postgres.matching(rule, found, history, NOW) == expected(case)


@FOCUSED
@given(case=single_cases())
def test_single_conditions_agree_on_sqlite(sqlite: Backend, case: Case) -> None:
    rule, found, history = case
    assert sqlite.matching(rule, found, history, NOW) == expected(case)


@FOCUSED
@given(case=single_cases())
def test_single_conditions_agree_on_postgres(postgres: Backend, case: Case) -> None:
    rule, found, history = case
    assert postgres.matching(rule, found, history, NOW) == expected(case)


def _digits(n: int) -> st.SearchStrategy[str]:
    return st.text("0123456789", min_size=n, max_size=n)


def _part(likely: list[str], n: int) -> st.SearchStrategy[str]:
    return st.sampled_from(likely) | _digits(n)


_clock = st.builds(
    lambda sep, hh, mm, seconds, zone: f"{sep}{hh}:{mm}{seconds}{zone}",
    st.sampled_from(["T", " ", "t", "_"]),
    _part(["00", "09", "23", "24"], 2),
    _part(["00", "59", "60"], 2),
    st.just("")
    | st.builds(
        lambda ss, fraction: f":{ss}{fraction}",
        _part(["00", "59", "60"], 2),
        st.just("") | st.text("0123456789", max_size=9).map(lambda f: "." + f),
    ),
    st.sampled_from(["", "Z", "z", " Z", "+00:00", "-05:30", "+0530", "+14", "+24:00", "-23:59"])
    | st.builds(
        lambda sign, hh, mm: f"{sign}{hh}:{mm}", st.sampled_from("+-"), _digits(2), _digits(2)
    ),
)
#: Strings shaped like dates, right and wrong in every part, and some junk of the same letters.
date_like = st.builds(
    lambda y, m, d, clock: f"{y}-{m}-{d}{clock}",
    _part(["2024", "2023", "1900", "2000", "0000", "0001", "9999"], 4),
    _part(["01", "02", "04", "06", "12", "13", "00"], 2),
    _part(["01", "28", "29", "30", "31", "32", "00"], 2),
    st.just("") | _clock,
) | st.text("0123456789-:TZ+. ", max_size=24)


def _iso_exact(micros: int) -> str | None:
    try:
        moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    except OverflowError:
        return None
    return moment.isoformat(timespec="microseconds")


def _dates_read_alike(backend: Backend, texts: list[str]) -> None:
    people = [facts(f"d{i}", data={"d": text}) for i, text in enumerate(texts)]
    values = {p.id: parse_date_text(text) for p, text in zip(people, texts, strict=True)}
    with backend.loaded(people, {}) as conn:

        def select(raw: dict[str, Any]) -> set[str]:
            return select_ids(conn, backend.name, parse_rule(raw), NOW)

        leaf = {"type": "date", "group": "user", "path": "data.d"}
        either = {
            "type": "wrapper",
            "group": "parent",
            "operator": "or",
            "children": [
                leaf | {"operator": "<", "value": "2000-01-01"},
                leaf | {"operator": ">=", "value": "2000-01-01"},
            ],
        }
        assert select(either) == {pid for pid, v in values.items() if v is not None}
        for value in {v for v in values.values() if v is not None}:
            exact = _iso_exact(value)
            if exact is not None and 1 <= int(exact[:4]) <= 9999:
                same = {pid for pid, v in values.items() if v == value}
                assert select(leaf | {"operator": "=", "value": exact}) == same


@DATES
@given(texts=st.lists(date_like, min_size=1, max_size=8))
def test_date_strings_read_alike_on_sqlite(sqlite: Backend, texts: list[str]) -> None:
    _dates_read_alike(sqlite, texts)


@DATES
@given(texts=st.lists(date_like, min_size=1, max_size=8))
def test_date_strings_read_alike_on_postgres(postgres: Backend, texts: list[str]) -> None:
    _dates_read_alike(postgres, texts)


@settings(max_examples=EXAMPLES, deadline=None)
@given(raw=raw_rules)
def test_every_rule_round_trips_through_json(raw: dict[str, Any]) -> None:
    rule = parse_rule(raw)
    assert parse_rule(rule_to_json(rule)) == rule
    assert rule_to_json(parse_rule(rule_to_json(rule))) == rule_to_json(rule)


@settings(max_examples=EXAMPLES, deadline=None)
@given(case=cases())
def test_next_change_is_the_instant_the_result_flips(case: Case) -> None:
    rule, found, history = case
    for profile in found:
        events = history[profile.id]
        current = evaluate(rule, profile, events, NOW)
        flip = next_change(rule, profile, events, NOW)
        if flip is None:
            for later in (NOW + 1, NOW + DAY, NOW + 60 * DAY, NOW + 400 * DAY):
                assert evaluate(rule, profile, events, later) == current
            continue
        assert flip > NOW
        assert evaluate(rule, profile, events, flip) != current
        assert evaluate(rule, profile, events, flip - 1) == current
        assert evaluate(rule, profile, events, (NOW + flip) // 2) == current
