"""Helpers for the segment tests: real SQLite and PostgreSQL databases holding the real
(migrated) tables, and a way to run a compiled rule over a few profiles and events.

PostgreSQL comes from ``TIDINGS_TEST_POSTGRES_URL``; each test module gets its own
schema, dropped afterwards. Without the variable the PostgreSQL tests skip, unless
``TIDINGS_TEST_REQUIRE_SERVICES`` is set (as in CI), where they fail instead.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tests.conftest import postgres_url_or_skip
from tidings.domain.rules import EventFact, ProfileFacts, Rule
from tidings.segments import compile_rule
from tidings.store import migrate
from tidings.store.database import open_database
from tidings.store.tables import events, profiles

PROJECT = 1
OTHER_PROJECT = 2
_counter = itertools.count()
_encoder = msgspec.json.Encoder()


def _encode_json(value: Any) -> str:
    return _encoder.encode(value).decode()


@dataclass
class Backend:
    """One database with the Tidings schema; every ``run`` rolls back what it wrote."""

    name: str  # the SQLAlchemy dialect name, as compile_rule wants it
    engine: Engine

    @contextmanager
    def loaded(
        self,
        people: Sequence[ProfileFacts],
        history: Mapping[str, Sequence[EventFact]],
        *,
        project_id: int = PROJECT,
    ) -> Iterator[Connection]:
        """A connection in a transaction that holds these profiles and events (of
        ``project_id``); rolled back on exit."""
        with self.engine.connect() as conn:
            transaction = conn.begin()
            try:
                insert(conn, people, history, project_id=project_id)
                yield conn
            finally:
                transaction.rollback()

    def matching(
        self,
        rule: Rule,
        people: Sequence[ProfileFacts],
        history: Mapping[str, Sequence[EventFact]],
        now: int,
    ) -> set[str]:
        """The ids ``compile_rule`` selects among ``people`` (with their ``history``)."""
        with self.loaded(people, history) as conn:
            return select_ids(conn, self.name, rule, now)


def select_ids(conn: Connection, dialect: str, rule: Rule, now: int) -> set[str]:
    query = compile_rule(rule, project_id=PROJECT, now=now, dialect=dialect)
    return set(conn.execute(query).scalars())


def insert(
    conn: Connection,
    people: Sequence[ProfileFacts],
    history: Mapping[str, Sequence[EventFact]],
    *,
    project_id: int = PROJECT,
) -> None:
    if people:
        conn.execute(
            profiles.insert(),
            [
                {
                    "id": p.id,
                    "project_id": project_id,
                    "external_id": p.external_id,
                    "email": p.email,
                    "phone": p.phone,
                    "timezone": p.timezone,
                    "locale": p.locale,
                    "data": dict(p.data),
                    "created_at": p.created_at,
                    "updated_at": p.created_at,
                }
                for p in people
            ],
        )
    rows = []
    for profile_id, facts in history.items():
        for fact in facts:
            n = next(_counter)
            rows.append(
                {
                    "id": f"evt{n}",
                    "project_id": project_id,
                    "profile_id": profile_id,
                    "message_id": f"m{n}",
                    "name": fact.name,
                    "external_id": None,
                    "anonymous_id": None,
                    "data": dict(fact.data),
                    "created_at": fact.created_at,
                    "received_at": fact.created_at,
                    "context": None,
                }
            )
    if rows:
        conn.execute(events.insert(), rows)


@contextmanager
def sqlite_backend(directory: Path) -> Iterator[Backend]:
    """A migrated SQLite file opened as the server opens it."""
    db = open_database(f"sqlite:///{directory / 'segments.db'}", sqlite_synchronous="OFF")
    try:
        migrate.upgrade(db.writer)
        yield Backend("sqlite", db.reader)
    finally:
        db.dispose()


def postgres_url() -> str:
    """The PostgreSQL to test against, or a skip (a failure where services are required)."""
    url = postgres_url_or_skip()
    try:
        import psycopg  # noqa: F401
    except ImportError:
        message = "psycopg (the PostgreSQL driver) is not installed: add psycopg[binary]"
        if os.environ.get("TIDINGS_TEST_REQUIRE_SERVICES"):
            pytest.fail(message)
        pytest.skip(message)
    return url


@contextmanager
def postgres_backend() -> Iterator[Backend]:
    """The migrated schema in a fresh PostgreSQL schema of its own, dropped afterwards."""
    url = postgres_url()
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    schema = f"tidings_segments_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    except sa.exc.OperationalError as exc:
        admin.dispose()
        if os.environ.get("TIDINGS_TEST_REQUIRE_SERVICES"):
            raise
        pytest.skip(f"PostgreSQL at TIDINGS_TEST_POSTGRES_URL is unreachable: {exc}")
    engine = sa.create_engine(
        url,
        connect_args={"options": f"-csearch_path={schema}"},
        json_serializer=_encode_json,
        json_deserializer=msgspec.json.decode,
    )
    try:
        migrate.upgrade(engine)
        yield Backend("postgresql", engine)
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


def facts(
    profile_id: str,
    *,
    data: Mapping[str, Any] | None = None,
    created_at: int = 0,
    **columns: Any,
) -> ProfileFacts:
    return ProfileFacts(id=profile_id, data=dict(data or {}), created_at=created_at, **columns)
