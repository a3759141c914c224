"""``compile_rule`` on real SQLite and PostgreSQL: one population, many rules, the ids
each selects (and ``evaluate`` agrees on every one)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from tests.segments import (
    OTHER_PROJECT,
    PROJECT,
    Backend,
    facts,
    insert,
    postgres_backend,
    sqlite_backend,
)
from tidings.domain.rules import EventFact, ProfileFacts, evaluate, next_change, parse_rule
from tidings.domain.rules.dates import parse_date_text
from tidings.segments import compile_rule
from tidings.store.tables import profiles

SECOND = 1_000_000
HOUR = 3600 * SECOND
DAY = 24 * HOUR
NOW = 1_717_200_000 * SECOND  # 2024-06-01T00:00:00Z


def order(at: int, **data: Any) -> EventFact:
    return EventFact("Order placed", data, at)


PEOPLE = [
    facts(
        "new_pro",
        email="new@example.com",
        external_id="u1",
        locale="en-AU",
        created_at=NOW - 2 * DAY,
        data={
            "plan": "pro",
            "seats": 5,
            "vip": True,
            "tags": ["vip", "beta"],
            "renews": "2024-06-03T00:00:00Z",
            "address": {"city": "Sydney"},
        },
    ),
    facts(
        "old_pro",
        email="old@example.org",
        created_at=NOW - 40 * DAY,
        data={
            "plan": "pro",
            "seats": 1.0,
            "vip": False,
            "tags": [],
            "renews": 1_717_372_800,  # 2024-06-03T00:00:00Z in Unix seconds
            "address": {"city": "Melbourne"},
        },
    ),
    facts(
        "free",
        created_at=NOW - DAY,
        data={
            "plan": "free",
            "seats": "5",
            "vip": "true",
            "tags": "vip",
            "renews": "2024-02-30",
            "address": "Sydney",
        },
    ),
    facts("bare", created_at=NOW - 100 * DAY),
    facts("nulls", created_at=NOW - 3 * DAY, data={"plan": None, "tags": None, "seats": None}),
    facts("shopper", created_at=NOW - 60 * DAY, data={"plan": "Pro"}),
    facts("edge", created_at=NOW - 30 * DAY, data={"plan": "pro plan"}),
]
HISTORY = {
    "shopper": [
        order(NOW - DAY, total=150, currency="EUR"),
        order(NOW - 10 * DAY, total=20),
        order(NOW - 29 * DAY, total=30),
        order(NOW - 31 * DAY, total=500),
        order(NOW + HOUR, total=999),  # dated in the future: not yet happened
        EventFact("Page viewed", {"url": "/"}, NOW - HOUR),
    ],
    "edge": [order(NOW - 30 * DAY, total=150), order(NOW, total=10)],
}
ALL = {p.id for p in PEOPLE}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    """A database holding PEOPLE and HISTORY, plus a profile of another project."""
    if request.param == "sqlite":
        opened = sqlite_backend(tmp_path_factory.mktemp("compile"))
    else:
        opened = postgres_backend()
    with opened as backend:
        with backend.engine.begin() as conn:
            insert(conn, PEOPLE, HISTORY)
            other = facts("other", created_at=NOW - DAY, data={"plan": "pro", "tags": ["vip"]})
            insert(conn, [other], {"other": [order(NOW - DAY)]}, project_id=OTHER_PROJECT)
        yield backend


def leaf(
    kind: str, path: str, operator: str, value: Any = None, group: str = "user"
) -> dict[str, Any]:
    node = {"type": kind, "group": group, "path": path, "operator": operator}
    if value is not None:
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


def last_days(days: int, operator: str, count: int) -> dict[str, Any]:
    return {
        "period": {"type": "rolling", "unit": "day", "value": days},
        "operator": operator,
        "count": count,
    }


PRO = leaf("string", "data.plan", "=", "pro")
BIG = leaf("number", "data.total", ">=", 100, group="event")
NO_ORDERS = {"new_pro", "old_pro", "free", "bare", "nulls"}

CASES: list[tuple[str, dict[str, Any], set[str]]] = [
    ("string =", PRO, {"new_pro", "old_pro"}),
    ("string !=", leaf("string", "data.plan", "!=", "pro"), {"free", "shopper", "edge"}),
    (
        "contains",
        leaf("string", "data.plan", "contains", "ro"),
        {"new_pro", "old_pro", "shopper", "edge"},
    ),
    ("not contain", leaf("string", "data.plan", "not contain", "pro"), {"free", "shopper"}),
    ("starts with", leaf("string", "$.plan", "starts with", "pro"), {"new_pro", "old_pro", "edge"}),
    ("not start with", leaf("string", "data.plan", "not start with", "pro"), {"free", "shopper"}),
    ("ends with", leaf("string", "data.plan", "ends with", "plan"), {"edge"}),
    ("string empty", leaf("string", "data.plan", "empty"), {"bare", "nulls"}),
    (
        "string is set",
        leaf("string", "data.plan", "is set"),
        {"new_pro", "old_pro", "free", "shopper", "edge"},
    ),
    ("string is not set", leaf("string", "data.plan", "is not set"), {"bare", "nulls"}),
    ("column", leaf("string", "email", "ends with", "@example.com"), {"new_pro"}),
    ("column is not set", leaf("string", "email", "is not set"), ALL - {"new_pro", "old_pro"}),
    ("column empty", leaf("string", "locale", "empty"), ALL - {"new_pro"}),
    ("nested", leaf("string", "data.address.city", "=", "Sydney"), {"new_pro"}),
    ("number >=", leaf("number", "data.seats", ">=", 5), {"new_pro"}),
    ("number <", leaf("number", "data.seats", "<", 5), {"old_pro"}),
    ("number = int/float", leaf("number", "data.seats", "=", 1), {"old_pro"}),
    ("number !=", leaf("number", "data.seats", "!=", 1), {"new_pro"}),
    ("boolean =", leaf("boolean", "data.vip", "=", True), {"new_pro"}),
    ("boolean !=", leaf("boolean", "data.vip", "!=", True), {"old_pro"}),
    ("array any", leaf("array", "data.tags", "any", ["beta", "x"]), {"new_pro"}),
    ("array none", leaf("array", "data.tags", "none", ["vip"]), {"old_pro"}),
    (
        "array empty",
        leaf("array", "data.tags", "empty"),
        {"old_pro", "bare", "nulls", "shopper", "edge"},
    ),
    ("array is set", leaf("array", "data.tags", "is set"), {"new_pro", "old_pro", "free"}),
    (
        "created_at relative",
        leaf("date", "created_at", ">", "7 days ago"),
        {"new_pro", "free", "nulls"},
    ),
    (
        "created_at absolute",
        leaf("date", "created_at", "<=", "2024-05-02"),
        {"old_pro", "bare", "shopper", "edge"},
    ),
    (
        "trait date =",
        leaf("date", "data.renews", "=", "2024-06-03T02:00:00+02:00"),
        {"new_pro", "old_pro"},
    ),
    (
        "same day relative",
        leaf("date", "data.renews", "is same day", "in 2 days"),
        {"new_pro", "old_pro"},
    ),
    ("date <", leaf("date", "data.renews", "<", "in 2 days"), set()),
    ("date is set", leaf("date", "data.renews", "is set"), {"new_pro", "old_pro", "free"}),
    ("ever", did("Order placed"), {"shopper", "edge"}),
    ("at least 3 in 30 days", did("Order placed", frequency=last_days(30, ">=", 3)), {"shopper"}),
    ("more than 2 in 30 days", did("Order placed", frequency=last_days(30, ">", 2)), {"shopper"}),
    ("exactly 1 in 30 days", did("Order placed", frequency=last_days(30, "=", 1)), {"edge"}),
    ("none in 30 days", did("Order placed", frequency=last_days(30, "=", 0)), NO_ORDERS),
    ("fewer than 2", did("Order placed", frequency=last_days(30, "<", 2)), NO_ORDERS | {"edge"}),
    ("at most 1", did("Order placed", frequency=last_days(30, "<=", 1)), NO_ORDERS | {"edge"}),
    ("at least 0", did("Order placed", frequency=last_days(30, ">=", 0)), ALL),
    ("fewer than 0", did("Order placed", frequency=last_days(30, "<", 0)), set()),
    ("big order ever", did("Order placed", BIG), {"shopper", "edge"}),
    (
        "big order in 30 days",
        did("Order placed", BIG, frequency=last_days(30, ">=", 1)),
        {"shopper"},
    ),
    (
        "filter with or",
        did(
            "Order placed",
            BIG,
            leaf("string", "data.currency", "=", "EUR", group="event"),
            operator="or",
            frequency=last_days(30, ">=", 2),
        ),
        set(),
    ),
    (
        "fixed May",
        did(
            "Order placed",
            frequency={
                "period": {"type": "fixed", "start_date": "2024-05-01", "end_date": "2024-05-31"},
                "operator": ">=",
                "count": 4,
            },
        ),
        {"shopper"},
    ),
    (
        "event none filter",
        did(
            "Page viewed",
            leaf("string", "name", "starts with", "Order", group="event"),
            operator="none",
        ),
        {"shopper"},
    ),
    (
        "event created_at",
        did("Order placed", leaf("date", "created_at", ">=", "now", group="event")),
        {"edge"},
    ),
    (
        "pro and new",
        wrapper("and", PRO, leaf("date", "created_at", ">", "7 days ago")),
        {"new_pro"},
    ),
    ("xor", wrapper("xor", PRO, leaf("boolean", "data.vip", "=", True)), {"old_pro"}),
    ("none", wrapper("none", PRO), ALL - {"new_pro", "old_pro"}),
    (
        "none of an event rule",
        wrapper("none", did("Order placed", frequency=last_days(30, ">=", 3))),
        ALL - {"shopper"},
    ),
    (
        "xor with events",
        wrapper("xor", did("Order placed"), leaf("string", "data.plan", "is set")),
        {"new_pro", "old_pro", "free"},
    ),
    (
        "or nested",
        wrapper(
            "or", wrapper("and", PRO, leaf("number", "data.seats", ">", 2)), did("Page viewed")
        ),
        {"new_pro", "shopper"},
    ),
    ("empty wrapper", wrapper("and"), ALL),
]


@pytest.mark.parametrize(("rule", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_compiled_rule_selects_the_matching_profiles(
    database: Backend, rule: dict[str, Any], expected: set[str]
) -> None:
    parsed = parse_rule(rule)
    with database.engine.connect() as conn:
        query = compile_rule(parsed, project_id=PROJECT, now=NOW, dialect=database.name)
        selected = set(conn.execute(query).scalars())
    assert selected == expected
    assert {p.id for p in PEOPLE if evaluate(parsed, p, HISTORY.get(p.id, []), NOW)} == expected


def test_results_move_with_now(database: Backend) -> None:
    rule = parse_rule(did("Order placed", frequency=last_days(30, ">=", 3)))

    def at(now: int) -> set[str]:
        with database.engine.connect() as conn:
            return set(
                conn.execute(
                    compile_rule(rule, project_id=PROJECT, now=now, dialect=database.name)
                ).scalars()
            )

    assert at(NOW) == {"shopper"}
    # At NOW + 1d the order of NOW - 29d has left, but the one dated NOW + 1h has come.
    assert at(NOW + DAY) == {"shopper"}
    # The order of NOW - 10d leaves at exactly NOW + 20d, and with it the shopper.
    assert at(NOW + 20 * DAY - 1) == {"shopper"}
    assert at(NOW + 20 * DAY) == set()
    profile = next(p for p in PEOPLE if p.id == "shopper")
    assert next_change(rule, profile, HISTORY["shopper"], NOW) == NOW + 20 * DAY


def test_the_select_narrows_like_any_other(database: Backend) -> None:
    query = compile_rule(parse_rule(PRO), project_id=PROJECT, now=NOW, dialect=database.name)
    with database.engine.connect() as conn:
        assert set(conn.execute(query.where(profiles.c.id.in_(["old_pro", "free"]))).scalars()) == {
            "old_pro"
        }
        page = query.order_by(profiles.c.id).limit(1)
        assert list(conn.execute(page).scalars()) == ["new_pro"]
        assert conn.execute(sa.select(sa.func.count()).select_from(query.subquery())).scalar() == 2


def test_other_projects_are_never_selected(database: Backend) -> None:
    with database.engine.connect() as conn:
        query = compile_rule(
            parse_rule(PRO), project_id=OTHER_PROJECT, now=NOW, dialect=database.name
        )
        assert set(conn.execute(query).scalars()) == {"other"}
        query = compile_rule(
            parse_rule(did("Order placed")),
            project_id=OTHER_PROJECT,
            now=NOW,
            dialect=database.name,
        )
        assert set(conn.execute(query).scalars()) == {"other"}


def test_unknown_dialects_are_refused() -> None:
    with pytest.raises(ValueError, match="mysql"):
        compile_rule(parse_rule(PRO), project_id=1, now=NOW, dialect="mysql")


# -- dates in SQL: the same grammar and arithmetic as Python --------------------------------

DATE_TEXTS = [
    "2024-05-01",
    "2024-05-01T10:00",
    "2024-05-01 10:00:05",
    "2024-05-01T10:00:00Z",
    "2024-05-01T10:00:00.5Z",
    "2024-05-01T10:00:00.123456789+02:00",
    "2024-05-01T10:00:00-0530",
    "2024-05-01T23:30-05:00",
    "2024-05-01T10:00Z",
    "2024-02-29T12:00:00+14:00",
    "1969-12-31T23:59:59.999999Z",
    "0001-01-01",
    "1600-02-29",
    "9999-12-31T23:59:59.999999+23:59",
]
NOT_DATES = [
    "2023-02-29",
    "1900-02-29",
    "2024-04-31",
    "2024-13-01",
    "2024-00-10",
    "0000-01-01",
    "2024-05-01T24:00",
    "2024-05-01T10:60",
    "2024-05-01T10:00:60",
    "2024-05-01T10:00:00+24:00",
    "2024-05-01T10:00:00+01:60",
    "2024-05-01Z",
    "2024-05-01T10",
    "2024-05-01T10:00:00.",
    "2024-05-01T10:00:00Z+01:00",
    "2024-05-01T10:00:00+01:00Z",
    "2024-05-01T10:00+",
    "20240501",
    "2024-5-1",
    "2024-05-01\n",
    "2024-05-01T10:00:00 Z",
    "٢٠٢٤-05-01",
    "yesterday",
    "",
]


def _iso(micros: int) -> str:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    return moment.isoformat(timespec="microseconds")


def test_sql_reads_date_strings_as_python_does(database: Backend) -> None:
    people = [facts(f"d{i}", data={"d": text}) for i, text in enumerate(DATE_TEXTS + NOT_DATES)]
    readable = {f"d{i}" for i in range(len(DATE_TEXTS))}
    with database.loaded(people, {}, project_id=3) as conn:

        def select(rule: dict[str, Any]) -> set[str]:
            query = compile_rule(parse_rule(rule), project_id=3, now=NOW, dialect=database.name)
            return set(conn.execute(query).scalars())

        assert select(leaf("date", "data.d", ">=", "0001-01-01")) == readable
        for text in DATE_TEXTS:
            value = parse_date_text(text)
            assert value is not None
            exact = _iso(value)
            same = {
                f"d{j}" for j, other in enumerate(DATE_TEXTS) if parse_date_text(other) == value
            }
            assert select(leaf("date", "data.d", "=", exact)) == same, text
        assert select(leaf("date", "data.d", "is set")) == {p.id for p in people}


def test_sql_reads_unix_seconds_as_python_does(database: Backend) -> None:
    values = [1_717_200_000, 1_717_200_000.5, -1.25, 0, 1e12, -1e12, 253_402_300_799.5, True]
    people = [facts(f"s{i}", data={"d": v}) for i, v in enumerate(values)]
    with database.loaded(people, {}, project_id=3) as conn:
        for rule in (
            leaf("date", "data.d", "=", "2024-06-01T00:00:00Z"),
            leaf("date", "data.d", "=", "2024-06-01T00:00:00.5Z"),
            leaf("date", "data.d", "<", "1970-01-01"),
            leaf("date", "data.d", ">=", "1970-01-01"),
            leaf("date", "data.d", "is same day", "9999-12-31"),
        ):
            parsed = parse_rule(rule)
            query = compile_rule(parsed, project_id=3, now=NOW, dialect=database.name)
            expected = {p.id for p in people if evaluate(parsed, p, [], NOW)}
            assert set(conn.execute(query).scalars()) == expected, rule


def test_sql_survives_values_that_would_break_a_cast(database: Backend) -> None:
    """Huge and tiny JSON numbers, and strings that look almost like numbers or dates,
    never make the query fail (PostgreSQL raises on a bad cast)."""
    odd: list[Any] = [
        "1e400",
        "NaN",
        "12abc",
        "2024-99-99",
        "9999-12-31T23:59:59+23:59",
        10**30,
        1e300,
        -(10**25),
    ]
    people = [facts(f"x{i}", data={"v": v, "tags": [v]}) for i, v in enumerate(odd)]
    with database.loaded(people, {}, project_id=3) as conn:
        for rule in (
            leaf("number", "data.v", ">", 0),
            leaf("date", "data.v", ">", "2000-01-01"),
            leaf("array", "data.tags", "any", [1, "x"]),
            leaf("string", "data.v", "contains", "e"),
        ):
            parsed = parse_rule(rule)
            query = compile_rule(parsed, project_id=3, now=NOW, dialect=database.name)
            expected = {p.id for p in people if evaluate(parsed, p, [], NOW)}
            assert set(conn.execute(query).scalars()) == expected, rule


def test_profile_facts_default_to_a_bare_profile() -> None:
    assert ProfileFacts(id="p").data == {}
