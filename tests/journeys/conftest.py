"""Journeys' fixtures: services with a hand-moved clock and a real, small send interface.

``TableSends`` stands in for messaging (built in parallel, connected by the lead): it is
real code over a real table this test creates, with messaging's contract — one row per
(campaign, profile, reference), queued in the caller's transaction, a duplicate answered
``DUPLICATE`` — so the guarantees tested here hold against the database, not a mock.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from tests.conftest import Project, bearer, create_project, drain
from tidings.bootstrap import Services, build, ensure_schema
from tidings.domain.sending import Enqueued, SendRequest
from tidings.journeys.worker import JourneyWorker
from tidings.settings import Settings

SECOND = 1_000_000

_meta = sa.MetaData()
test_sends = sa.Table(
    "test_sends",
    _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("project_id", sa.Integer, nullable=False),
    sa.Column("campaign_id", sa.Integer, nullable=False),
    sa.Column("profile_id", sa.String(32), nullable=False),
    sa.Column("reference", sa.String(255), nullable=False),
    sa.Column("context", sa.JSON, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("campaign_id", "profile_id", "reference"),
)


class TableSends:
    """The ``Sends`` contract over ``test_sends``; ``not_running`` campaigns refuse."""

    def __init__(self) -> None:
        self.not_running: set[int] = set()

    def create(self, engine: Any) -> None:
        with engine.begin() as conn:
            _meta.create_all(conn)

    def enqueue(self, conn: Any, request: SendRequest, now: int) -> Enqueued:
        if request.campaign_id in self.not_running:
            return Enqueued.NOT_RUNNING
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        stmt = (
            insert(test_sends)
            .values(
                project_id=request.project_id,
                campaign_id=request.campaign_id,
                profile_id=request.profile_id,
                reference=request.reference,
                context=dict(request.context),
                created_at=now,
            )
            .on_conflict_do_nothing()
        )
        done = conn.execute(stmt).rowcount
        return Enqueued.QUEUED if done else Enqueued.DUPLICATE

    def sent_count(self, conn: Any, project_id: int, profile_id: str, since: int) -> int:
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(
                    test_sends.c.project_id == project_id,
                    test_sends.c.profile_id == profile_id,
                    test_sends.c.created_at >= since,
                )
            ).scalar_one()
        )

    @staticmethod
    def rows(engine: Any) -> list[Any]:
        with engine.connect() as conn:
            return list(conn.execute(sa.select(test_sends).order_by(test_sends.c.id)))


class Clock:
    """Microseconds: real time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = 0

    def __call__(self) -> int:
        return time.time_ns() // 1000 + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += int(seconds * SECOND)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sends() -> TableSends:
    return TableSends()


def journey_services(settings: Settings, sends: TableSends, clock: Clock) -> Services:
    services = build(settings, sends=sends, clock=clock)
    ensure_schema(services.db, auto_migrate=True)
    sends.create(services.db.writer)
    return services


@pytest.fixture
def services(settings: Settings, sends: TableSends, clock: Clock) -> Iterator[Services]:
    """Services whose journey worker does not run by itself: tests call ``tick``."""
    services = journey_services(settings, sends, clock)
    worker = services.journey_worker
    services.journey_worker = None
    services.start()
    services.journey_worker = worker
    try:
        yield services
    finally:
        services.journey_worker = None
        services.stop()


@pytest.fixture
def project(services: Services) -> Project:
    return create_project(services)


async def tick(services: Services) -> int:
    """One round of the journey worker, then the log drained (emitted events applied)."""
    worker = services.journey_worker
    assert isinstance(worker, JourneyWorker)
    worker._ticked = 0.0
    fired = await asyncio.to_thread(worker.run_once)
    await drain(services)
    return fired


def new_uuid() -> str:
    return str(uuid.uuid4())


def cart_graph(campaign_id: int = 7, hours: int = 4) -> dict[str, Any]:
    """The abandoned-cart journey: entered on "Cart updated" keyed by cart id; waits up
    to ``hours`` for "Order placed" with the same cart id; otherwise sends."""
    return {
        "entry": {
            "type": "entrance",
            "data": {
                "trigger": "event",
                "event_name": "Cart updated",
                "key": "data.cart_id",
                "multiple": True,
            },
            "children": [{"external_id": "wait"}],
        },
        "wait": {
            "type": "wait",
            "data": {
                "event_name": "Order placed",
                "match": "data.cart_id",
                "timeout": {"hours": hours},
            },
            "children": [
                {"external_id": "bought", "path": "yes"},
                {"external_id": "remind", "path": "no"},
            ],
        },
        "remind": {
            "type": "action",
            "data": {"campaign_id": campaign_id},
            "children": [{"external_id": "bought"}],
        },
        "bought": {"type": "exit", "data": {}},
    }


async def make_journey(
    client: httpx.AsyncClient,
    project: Project,
    graph: dict[str, Any],
    *,
    live: bool = True,
    settings: dict[str, Any] | None = None,
) -> int:
    body: dict[str, Any] = {"name": "J"}
    if settings is not None:
        body["settings"] = settings
    r = await client.post("/api/client/journeys", json=body, headers=bearer(project.sk))
    assert r.status_code == 201, r.text
    journey_id = int(r.json()["id"])
    r = await client.put(
        f"/api/client/journeys/{journey_id}/steps", json=graph, headers=bearer(project.sk)
    )
    assert r.status_code == 200, r.text
    if live:
        r = await client.patch(
            f"/api/client/journeys/{journey_id}",
            json={"status": "live"},
            headers=bearer(project.sk),
        )
        assert r.status_code == 200, r.text
    return journey_id


async def send_events(
    client: httpx.AsyncClient, project: Project, events: list[dict[str, Any]]
) -> None:
    r = await client.post("/api/client/events", json=events, headers=bearer(project.pk))
    assert r.status_code in (200, 202, 204), r.text
