"""The outbox's guarantees, under concurrency: no message to a user after their
unsubscribe answered, one send per (campaign, user, reference), a provider's rate limit
shared by several workers, retries with backoff and jitter."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import sqlalchemy as sa

from tests.conftest import Project, bearer
from tests.messaging.helpers import (
    API,
    EMAIL_TEMPLATE,
    deliver,
    logger_provider,
    manual,
    patch,
    post,
    send_rows,
    trigger_campaign,
)
from tidings.bootstrap import Services
from tidings.domain.channels import DeliveryResult, EmailMessage, Message, Outcome
from tidings.domain.sending import Enqueued, SendRequest
from tidings.messaging.delivery import Delivery, DeliveryConfig
from tidings.messaging.worker import DeliveryWorker
from tidings.store.tables_messaging import sends


class Sink:
    """A provider at the edge of the world: records each message with a global order."""

    def __init__(self, order: itertools.count[int], lock: threading.Lock, pause: float) -> None:
        self.order = order
        self.lock = lock
        self.pause = pause
        self.received: list[tuple[int, str]] = []

    def build(self, _type: str, _data: Mapping[str, Any]) -> Sink:
        return self

    async def send(self, message: Message) -> DeliveryResult:
        assert isinstance(message, EmailMessage)
        with self.lock:
            self.received.append((next(self.order), message.to))
        await asyncio.sleep(self.pause)
        return DeliveryResult(Outcome.ACCEPTED, provider_message_id="x")

    async def aclose(self) -> None:
        return None


async def _users(client: httpx.AsyncClient, project: Project, count: int) -> int:
    for start in range(0, count, 100):
        items = [
            {"external_id": f"u{i}", "email": f"u{i}@example.com"}
            for i in range(start, min(count, start + 100))
        ]
        response = await client.post(f"{API}/users/batch", json=items, headers=bearer(project.sk))
        assert response.json()["failed"] == 0
    listed = await post(client, project, "/lists", {"name": "All", "type": "static"})
    ids = [f"u{i}" for i in range(count)]
    await post(client, project, f"/lists/{listed['id']}/users", {"external_ids": ids})
    return int(listed["id"])


async def test_an_unsubscribe_racing_a_blast_wins_once_it_has_answered(
    services: Services, client: httpx.AsyncClient, project: Project
) -> None:
    manual(services)
    assert services.messaging is not None
    count = 160
    list_id = await _users(client, project, count)
    await logger_provider(client, project)
    campaign = await post(
        client,
        project,
        "/campaigns",
        {"type": "blast", "name": "B", "channel": "email", "list_ids": [list_id]},
    )
    await post(
        client,
        project,
        "/templates",
        {"campaign_id": campaign["id"], "locale": "en", "data": EMAIL_TEMPLATE},
    )
    order = itertools.count(1)
    lock = threading.Lock()
    sink = Sink(order, lock, pause=0.003)
    delivery = Delivery(
        services.db.writer,
        services.db.reader,
        services.messaging.outbox,
        adapter_factory=sink.build,
        config=DeliveryConfig(batch_size=8, concurrency=4),
    )
    worker = DeliveryWorker(delivery)
    worker.start()
    store = services.messaging.subscriptions
    profiles = {
        f"u{i}@example.com": services.profiles.profile_id_for(project.id, "external", f"u{i}")
        for i in range(count)
    }
    victims = random.Random(7).sample(sorted(profiles), count // 2)
    answered: dict[str, int] = {}

    def unsubscribe(email: str) -> None:
        profile_id = profiles[email]
        assert profile_id is not None
        store.set_state(
            None,
            project.id,
            profile_id,
            campaign["subscription_id"],
            0,
            time.time_ns() // 1000,
            source="test",
        )
        with lock:
            answered[email] = next(order)

    try:
        send_at = "2020-01-01T00:00:00Z"
        await patch(
            client,
            project,
            f"/campaigns/{campaign['id']}",
            {"state": "scheduled", "send_at": send_at},
        )
        for _ in range(2000):  # start once the blast is under way
            if sink.received:
                break
            await asyncio.sleep(0.005)
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(unsubscribe, victims))
        for _ in range(3000):
            got = (
                await client.get(f"{API}/campaigns/{campaign['id']}", headers=bearer(project.sk))
            ).json()
            if got["state"] == "finished":
                break
            await asyncio.sleep(0.02)
        assert got["state"] == "finished", got
    finally:
        worker.stop()

    late = [
        (email, seq, answered[email])
        for seq, email in sink.received
        if email in answered and seq > answered[email]
    ]
    assert late == []  # nobody got a message after their unsubscribe answered
    assert len({email for _, email in sink.received}) == len(sink.received)  # none twice
    rows = send_rows(services, campaign["id"])
    skipped = [r for r in rows if r["state"] == "skipped"]
    assert skipped and all(r["reason"] == "unsubscribed" for r in skipped)
    assert len(sink.received) + len(skipped) == count


async def test_concurrent_triggers_with_one_key_make_one_send(
    services: Services, client: httpx.AsyncClient, project: Project
) -> None:
    manual(services)
    await logger_provider(client, project)
    campaign = await trigger_campaign(client, project)
    url = f"{API}/campaigns/{campaign['id']}/trigger"
    body = {"user": {"external_id": "u1", "email": "a@example.com"}}
    headers = bearer(project.sk, **{"Idempotency-Key": "once"})
    answers = await asyncio.gather(
        *(client.post(url, json=body, headers=headers) for _ in range(8))
    )
    assert all(a.status_code in (200, 409) for a in answers), [a.text for a in answers]
    assert any(a.status_code == 200 for a in answers)
    await deliver(services)
    assert len(send_rows(services, campaign["id"])) == 1


async def test_concurrent_enqueues_of_one_reference_queue_one_row(
    services: Services, client: httpx.AsyncClient, project: Project
) -> None:
    manual(services)
    assert services.messaging is not None
    sends_api = services.messaging.sends
    await logger_provider(client, project)
    campaign = await trigger_campaign(client, project)
    await post(
        client, project, f"/campaigns/{campaign['id']}/trigger", {"user": {"external_id": "u1"}}
    )
    profile_id = services.profiles.profile_id_for(project.id, "external", "u1")
    assert profile_id is not None
    request = SendRequest(project.id, campaign["id"], profile_id, "journey:1:2")
    barrier = threading.Barrier(6)

    def enqueue() -> Enqueued:
        barrier.wait()
        with services.db.writer.begin() as conn:
            return sends_api.enqueue(conn, request, time.time_ns() // 1000)

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(lambda _: enqueue(), range(6)))
    assert sorted(outcomes) == sorted([Enqueued.QUEUED] + [Enqueued.DUPLICATE] * 5)
    with services.db.reader.connect() as conn:
        rows = conn.execute(
            sa.select(sa.func.count()).where(sends.c.reference == "journey:1:2")
        ).scalar_one()
    assert rows == 1


async def test_a_rate_limit_holds_across_two_workers(
    services: Services, client: httpx.AsyncClient, project: Project
) -> None:
    manual(services)
    assert services.messaging is not None
    provider = await logger_provider(client, project, rate_limit=7, rate_interval="minute")
    campaign = await trigger_campaign(client, project)
    for i in range(20):
        await post(
            client,
            project,
            f"/campaigns/{campaign['id']}/trigger",
            {"user": {"external_id": f"u{i}", "email": f"u{i}@example.com"}},
        )
    window = 60_000_000
    now = [(time.time_ns() // 1000) // window * window + window + 1_000]  # a window's start

    def clock() -> int:
        return now[0]

    workers = [
        Delivery(
            services.db.writer,
            services.db.reader,
            services.messaging.outbox,
            clock=clock,
            config=DeliveryConfig(batch_size=3),
        )
        for _ in range(2)
    ]

    def run(delivery: Delivery) -> None:
        async def rounds() -> None:
            for _ in range(15):
                await delivery.run_once()
            await delivery.aclose()

        asyncio.run(rounds())

    def sent() -> int:
        return sum(1 for r in send_rows(services, campaign["id"]) if r["state"] == "sent")

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sent() == 7
    assert sum(w.sent_total for w in workers) == 7
    waiting = [r for r in send_rows(services, campaign["id"]) if r["state"] == "pending"]
    assert len(waiting) == 13 and all(r["due_at"] == now[0] - 1_000 + window for r in waiting)
    now[0] += window  # the next window
    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sent() == 14
    _ = provider


async def test_transient_failures_back_off_with_jitter(
    services: Services, client: httpx.AsyncClient, project: Project
) -> None:
    manual(services)
    assert services.messaging is not None
    await logger_provider(client, project, data={"fail": "transient"})
    campaign = await trigger_campaign(client, project)
    for i in range(10):
        await post(
            client,
            project,
            f"/campaigns/{campaign['id']}/trigger",
            {"user": {"external_id": f"u{i}", "email": f"u{i}@example.com"}},
        )
    start = time.time_ns() // 1000
    delivery = Delivery(
        services.db.writer,
        services.db.reader,
        services.messaging.outbox,
        clock=lambda: start,
        config=DeliveryConfig(backoff_base=10.0, max_attempts=3),
    )
    await delivery.run_once()
    rows = send_rows(services, campaign["id"])
    waits = [r["due_at"] - start for r in rows]
    assert all(r["state"] == "pending" and r["attempts"] == 1 for r in rows)
    assert all(5_000_000 <= w <= 10_000_000 for w in waits)  # half fixed, half random
    assert len(set(waits)) > 1  # jittered: not all at the same moment
    assert await delivery.run_once() == 0  # not due yet
    await delivery.aclose()
