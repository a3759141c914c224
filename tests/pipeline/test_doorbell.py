"""An idle worker dozes and is woken by the next commit (pipeline/doorbell.py).

The services here are real (SQLite, the log file, the consumer thread); the doorbell's
two sides live in one process, on the same pipe and shared byte a `serve` and its worker
child would use."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx

from tests.conftest import bearer, create_project, drain, make_services, make_settings
from tidings.api.app import create_app
from tidings.pipeline.doorbell import Doorbell


def test_the_bell_rings_only_while_the_flag_is_up() -> None:
    parent = Doorbell.create()
    child = Doorbell.attach(*parent.child_fds)
    woken = threading.Event()
    child.listen(woken)
    parent.ring()  # the child does not doze: nothing is written
    assert not woken.wait(0.05)
    child.dozing(True)
    parent.ring()
    assert woken.wait(10)
    woken.clear()
    parent.ring()  # the first ring lowered the flag
    assert not woken.wait(0.05)


async def test_a_dozing_worker_is_woken_by_a_commit_and_not_by_its_fallback(
    tmp_path: Path,
) -> None:
    """The fallback wait is an hour: the event is applied because the commit rang."""
    services = make_services(make_settings(tmp_path))
    assert services.consumer is not None
    parent = Doorbell.create()
    child = Doorbell.attach(*parent.child_fds)
    said: list[bool] = []

    def dozing(value: bool) -> None:
        said.append(value)
        child.dozing(value)

    consumer = services.consumer
    consumer.idle_after = 0.05
    consumer.sleep_wait = 3600.0
    consumer.dozing = dozing
    child.listen(consumer.wake)
    services.committer.on_commit = parent.ring
    services.start()
    try:
        project = create_project(services)
        for _ in range(2000):  # bounded: the consumer dozes after 50 ms of nothing
            if said:
                break
            await asyncio.sleep(0.01)
        assert said == [True]
        consumer.wake.clear()
        transport = httpx.ASGITransport(app=create_app(services, manage_lifecycle=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            # A synchronous call: answered once the worker has applied it.
            response = await client.post(
                "/api/client/users/batch",
                json=[{"external_id": "u_wake"}],
                headers=bearer(project.sk),
            )
            assert response.status_code == 200, response.text
            await drain(services)
            user = await client.get("/api/client/users/u_wake", headers=bearer(project.sk))
            assert user.status_code == 200
        assert said[:2] == [True, False]  # busy again: no bells wanted
    finally:
        services.stop()


def test_without_a_doorbell_the_worker_never_dozes(tmp_path: Path) -> None:
    services = make_services(make_settings(tmp_path))
    try:
        assert services.consumer is not None
        assert services.consumer.dozing is None  # `tidings worker` alone polls as before
    finally:
        services.close()
