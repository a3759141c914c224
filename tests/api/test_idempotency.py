"""Idempotency-Key replays and message_id deduplication."""

from __future__ import annotations

import asyncio
import time

import httpx
import sqlalchemy as sa

from tests.api.test_validation import assert_problem
from tests.conftest import Project, bearer, create_project, drain, make_services, make_settings
from tidings.api.app import create_app
from tidings.bootstrap import Services
from tidings.store.tables import events, idempotency_keys


def count_events(services: Services) -> int:
    with services.db.reader.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(events)).scalar_one())


async def test_replay_returns_the_stored_answer_and_writes_nothing_more(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    body = [{"name": "Order placed", "external_id": "u_i"}, {"name": "Paid", "external_id": "u_i"}]
    headers = bearer(project.pk, **{"Idempotency-Key": "order-1"})
    first = await client.post("/api/client/events", json=body, headers=headers)
    assert first.status_code == 204
    assert "idempotent-replayed" not in first.headers
    again = await client.post("/api/client/events", json=body, headers=headers)
    assert again.status_code == 204
    assert again.headers["idempotent-replayed"] == "true"
    await drain(services)
    assert count_events(services) == 2
    assert services.committer.committed_items == 2


async def test_same_key_with_another_body_is_a_mismatch(
    client: httpx.AsyncClient, project: Project
) -> None:
    headers = bearer(project.pk, **{"Idempotency-Key": "k"})
    await client.post(
        "/api/client/events", json=[{"name": "A", "external_id": "u"}], headers=headers
    )
    response = await client.post(
        "/api/client/events", json=[{"name": "B", "external_id": "u"}], headers=headers
    )
    assert_problem(response, 409, "idempotency_key_mismatch")


async def test_keys_are_per_project(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    other = create_project(services)
    body = [{"name": "A", "external_id": "u"}]
    for key in (project.pk, other.pk):
        response = await client.post(
            "/api/client/events", json=body, headers=bearer(key, **{"Idempotency-Key": "same"})
        )
        assert response.status_code == 204
        assert "idempotent-replayed" not in response.headers


async def test_invalid_key_header(client: httpx.AsyncClient, project: Project) -> None:
    response = await client.post(
        "/api/client/events",
        json=[{"name": "A", "external_id": "u"}],
        headers=bearer(project.pk, **{"Idempotency-Key": "k" * 256}),
    )
    assert_problem(response, 400, "idempotency_key_invalid")


async def test_message_id_is_stored_once(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    body = [{"name": "Order placed", "external_id": "u_m", "message_id": "msg-1"}]
    for _ in range(3):
        response = await client.post("/api/client/events", json=body, headers=bearer(project.pk))
        assert response.status_code == 204
    await drain(services)
    assert count_events(services) == 1


async def test_duplicate_message_ids_racing_are_stored_once(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    body = [{"name": "Order placed", "external_id": "u_r", "message_id": "race-1"}]
    responses = await asyncio.gather(
        *[
            client.post("/api/client/events", json=body, headers=bearer(project.pk))
            for _ in range(20)
        ]
    )
    assert {r.status_code for r in responses} == {204}
    await drain(services)
    assert count_events(services) == 1


async def test_items_without_message_id_get_a_stable_one_from_the_key(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    body = [{"name": "A", "external_id": "u_s"}, {"name": "B", "external_id": "u_s"}]
    headers = bearer(project.pk, **{"Idempotency-Key": "stable"})
    assert (await client.post("/api/client/events", json=body, headers=headers)).status_code == 204
    await drain(services)
    # The stored answer expires (24 h); a late retry must still have no second effect.
    with services.idempotency.writer.begin() as conn:
        conn.execute(sa.delete(idempotency_keys))
    again = await client.post("/api/client/events", json=body, headers=headers)
    assert again.status_code == 204 and "idempotent-replayed" not in again.headers
    await drain(services)
    assert count_events(services) == 2


async def test_concurrent_requests_with_one_key_have_one_effect(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    body = [{"name": "A", "external_id": "u_c"}]
    headers = bearer(project.pk, **{"Idempotency-Key": "concurrent"})
    responses = await asyncio.gather(
        *[client.post("/api/client/events", json=body, headers=headers) for _ in range(10)]
    )
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {204, 409}
    assert statuses.count(204) >= 1
    for response in responses:
        if response.status_code == 409:
            assert response.json()["code"] == "idempotency_in_progress"
    await drain(services)
    assert count_events(services) == 1


async def test_in_progress_while_a_synchronous_request_waits(tmp_path) -> None:
    # No consumer: the synchronous batch waits for processing that never comes.
    settings = make_settings(tmp_path, run_worker=False, sync_timeout=1.5)
    services = make_services(settings)
    services.start()
    try:
        project = create_project(services)
        app = create_app(services, manage_lifecycle=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            headers = bearer(project.sk, **{"Idempotency-Key": "sync-1"})
            body = [{"external_id": "u_w"}]
            first = asyncio.create_task(
                client.post("/api/client/users/batch", json=body, headers=headers)
            )
            for _ in range(200):
                if services.idempotency.get(project.id, "sync-1") is not None:
                    break
                await asyncio.sleep(0.005)
            second = await client.post("/api/client/users/batch", json=body, headers=headers)
            assert_problem(second, 409, "idempotency_in_progress")
            timed_out = await first
            assert_problem(timed_out, 503, "service_unavailable")
            assert timed_out.headers["retry-after"]
    finally:
        services.stop()


async def test_a_duplicate_event_has_no_effect_on_the_profile_either(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    first = [
        {
            "name": "Signed up",
            "external_id": "u_d",
            "message_id": "m-1",
            "user": {"data": {"plan": "pro"}},
        }
    ]
    assert (
        await client.post("/api/client/events", json=first, headers=bearer(project.pk))
    ).status_code == 204
    await drain(services)
    later = {"external_id": "u_d", "data": {"plan": "team"}}
    assert (
        await client.post("/api/client/identify", json=later, headers=bearer(project.pk))
    ).status_code == 204
    await drain(services)
    # A late retry of the first event, even naming another user, changes nothing.
    retry = [{**first[0], "external_id": "u_other"}]
    assert (
        await client.post("/api/client/events", json=retry, headers=bearer(project.pk))
    ).status_code == 204
    await drain(services)
    user = (await client.get("/api/client/users/u_d", headers=bearer(project.sk))).json()
    assert user["data"] == {"plan": "team"}
    other = await client.get("/api/client/users/u_other", headers=bearer(project.sk))
    assert other.status_code == 404
    assert count_events(services) == 1


async def test_an_expired_key_reused_for_another_request_is_a_new_request(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    headers = bearer(project.pk, **{"Idempotency-Key": "reused"})
    first = [{"name": "A", "external_id": "u_x"}]
    assert (await client.post("/api/client/events", json=first, headers=headers)).status_code == 204
    await drain(services)
    with services.idempotency.writer.begin() as conn:
        conn.execute(sa.delete(idempotency_keys))  # the 24 hours are over
    second = [{"name": "B", "external_id": "u_x"}]
    assert (
        await client.post("/api/client/events", json=second, headers=headers)
    ).status_code == 204
    await drain(services)
    assert count_events(services) == 2


async def _time_out_then_retry(
    client: httpx.AsyncClient, tmp_path, body: list[dict], headers: dict[str, str]
) -> httpx.Response:
    """The batch times out (no worker: 503); a worker comes up; the client retries as
    the 503 told it to. The retry's answer."""
    first = await client.post("/api/client/users/batch", json=body, headers=headers)
    assert_problem(first, 503, "service_unavailable")
    worker = make_services(make_settings(tmp_path, run_worker=True))
    worker.start()
    try:
        return await client.post("/api/client/users/batch", json=body, headers=headers)
    finally:
        worker.stop()


async def test_a_batch_that_timed_out_is_answered_on_retry_without_a_second_append(
    tmp_path,
) -> None:
    settings = make_settings(tmp_path, run_worker=False, sync_timeout=0.3)
    api = make_services(settings)
    api.start()
    try:
        project = create_project(api)
        transport = httpx.ASGITransport(app=create_app(api, manage_lifecycle=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            headers = bearer(project.sk, **{"Idempotency-Key": "slow-batch"})
            body = [
                {"external_id": "u_slow", "data": {"v": 1}},
                {"external_id": "u_bad", "email": "x"},
            ]
            retry = await _time_out_then_retry(client, tmp_path, body, headers)
            assert retry.status_code == 200, retry.text
            result = retry.json()
            assert (result["succeeded"], result["failed"]) == (1, 1)
            assert result["results"][0]["user"]["data"] == {"v": 1}
            again = await client.post("/api/client/users/batch", json=body, headers=headers)
            assert again.headers["idempotent-replayed"] == "true"
            assert again.json() == result
        assert api.committer.committed_items == 1  # appended once, by the first request
    finally:
        api.stop()


async def test_a_retried_batch_that_timed_out_still_reports_a_refused_merge(tmp_path) -> None:
    """The retry computes the answer without the first request's log positions: a link
    refused while processing is still reported as refused, and the answer is stored."""
    api = make_services(make_settings(tmp_path, run_worker=False, sync_timeout=0.3))
    api.start()
    try:
        project = create_project(api)
        transport = httpx.ASGITransport(app=create_app(api, manage_lifecycle=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            owner = {"external_id": "z", "anonymous_id": "shared"}
            response = await client.post(
                "/api/client/identify", json=owner, headers=bearer(project.pk)
            )
            assert response.status_code == 204
            headers = bearer(project.sk, **{"Idempotency-Key": "refused-link"})
            body = [{"external_id": "y", "anonymous_id": "shared"}, {"external_id": "w"}]
            retry = await _time_out_then_retry(client, tmp_path, body, headers)
            assert retry.status_code == 200, retry.text
            result = retry.json()
            assert (result["succeeded"], result["failed"]) == (1, 1)
            assert result["results"][0]["error"]["code"] == "state_conflict"
            assert "shared" in result["results"][0]["error"]["message"]
            assert result["results"][1]["user"]["external_id"] == "w"
            again = await client.post("/api/client/users/batch", json=body, headers=headers)
            assert again.headers["idempotent-replayed"] == "true"
            assert again.json() == result
    finally:
        api.stop()


async def test_a_batch_held_by_another_process_is_in_progress_until_it_must_have_given_up(
    tmp_path,
) -> None:
    """A record without an answer belongs to a request that may still wait (here: one of
    another process, written straight to the table): 409 while it may; once it cannot
    be waiting any more (it died), a retry computes the answer."""
    services = make_services(make_settings(tmp_path, sync_timeout=1.0))
    services.start()
    try:
        project = create_project(services)
        transport = httpx.ASGITransport(app=create_app(services, manage_lifecycle=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            headers = bearer(project.sk, **{"Idempotency-Key": "elsewhere"})
            body = [{"external_id": "u_else"}]
            # Learn the request hash the way the server computes it, under another key.
            probe = bearer(project.sk, **{"Idempotency-Key": "probe"})
            assert (
                await client.post("/api/client/users/batch", json=body, headers=probe)
            ).status_code == 200
            request_hash = services.idempotency.get(project.id, "probe").request_hash  # type: ignore[union-attr]
            now = time.time_ns() // 1000
            with services.idempotency.writer.begin() as conn:
                conn.execute(
                    sa.insert(idempotency_keys),
                    {
                        "project_id": project.id,
                        "key": "elsewhere",
                        "request_hash": request_hash,
                        "status": None,
                        "body": None,
                        "created_at": now,
                    },
                )
            busy = await client.post("/api/client/users/batch", json=body, headers=headers)
            assert_problem(busy, 409, "idempotency_in_progress")
            with services.idempotency.writer.begin() as conn:  # as if it started 6.5 s ago
                conn.execute(
                    sa.update(idempotency_keys)
                    .where(idempotency_keys.c.key == "elsewhere")
                    .values(created_at=now - 6_500_000)
                )
            resumed = await client.post("/api/client/users/batch", json=body, headers=headers)
            assert resumed.status_code == 200, resumed.text
            assert resumed.json()["results"][0]["user"]["external_id"] == "u_else"
            record = services.idempotency.get(project.id, "elsewhere")
            assert record is not None and record.status == 200
    finally:
        services.stop()


async def test_concurrent_retries_of_a_stored_answer_all_replay(
    client: httpx.AsyncClient, project: Project
) -> None:
    headers = bearer(project.sk, **{"Idempotency-Key": "stored"})
    body = [{"external_id": "u_stored"}]
    first = await client.post("/api/client/users/batch", json=body, headers=headers)
    assert first.status_code == 200
    retries = await asyncio.gather(
        *(client.post("/api/client/users/batch", json=body, headers=headers) for _ in range(5))
    )
    assert [r.status_code for r in retries] == [200] * 5
    assert all(r.headers["idempotent-replayed"] == "true" for r in retries)
    assert all(r.content == first.content for r in retries)


async def test_a_key_left_without_an_answer_is_finished_by_its_retry_without_a_second_effect(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    """A record without an answer (its request died between appending and answering, as
    can happen with the JetStream log) is, once its request must have given up, finished
    by a retry: it appends the events again and the copies are dropped (message ids
    derived from the key), and the answer is stored for later replays."""
    body = [
        {"name": "Order placed", "external_id": "u_left"},
        {"name": "Paid", "external_id": "u_left"},
    ]
    headers = bearer(project.pk, **{"Idempotency-Key": "left"})
    assert (await client.post("/api/client/events", json=body, headers=headers)).status_code == 204
    await drain(services)
    long_ago = time.time_ns() // 1000 - int((services.settings.sync_timeout + 10) * 1_000_000)
    with services.idempotency.writer.begin() as conn:  # the answer was never stored
        conn.execute(
            sa.update(idempotency_keys)
            .where(idempotency_keys.c.key == "left")
            .values(status=None, body=None, created_at=long_ago)
        )
    retry = await client.post("/api/client/events", json=body, headers=headers)
    assert retry.status_code == 204, retry.text
    assert "idempotent-replayed" not in retry.headers
    record = services.idempotency.get(project.id, "left")
    assert record is not None and record.status == 204 and record.created_at == long_ago
    replay = await client.post("/api/client/events", json=body, headers=headers)
    assert replay.headers["idempotent-replayed"] == "true"
    await drain(services)
    assert count_events(services) == 2
    assert services.committer.committed_items == 4  # appended twice, stored once
