"""The providers API: write-only secrets, defaults per group, roles, bad input."""

from __future__ import annotations

import httpx

from tests.api.test_validation import assert_problem
from tests.conftest import Project, bearer
from tests.messaging.helpers import API, patch, post
from tidings.bootstrap import Services
from tidings.domain.auth import Role, Scope
from tidings.store.tables_messaging import providers


def _stored(services: Services, provider_id: int) -> dict[str, object]:
    with services.db.reader.connect() as conn:
        row = conn.execute(providers.select().where(providers.c.id == provider_id)).one()
    return dict(row.data)


async def test_secrets_are_write_only(
    services: Services, client: httpx.AsyncClient, project: Project
) -> None:
    created = await post(
        client,
        project,
        "/providers",
        {
            "type": "logger",
            "name": "Trial",
            "group": "email",
            "rate_limit": 10,
            "rate_interval": "minute",
            "data": {"password": "hunter2", "api_token": "t0k", "host": "mail.test"},
        },
    )
    assert created["data"] == {"password": "********", "api_token": "********", "host": "mail.test"}
    assert created["rate_limit"] == 10 and created["rate_interval"] == "minute"
    listed = (await client.get(f"{API}/providers", headers=bearer(project.sk))).json()
    assert listed["results"][0]["data"]["password"] == "********"

    kept = await patch(
        client,
        project,
        f"/providers/{created['id']}",
        {"data": {"password": "********", "api_token": "new", "host": "mail2.test"}},
    )
    assert kept["data"]["password"] == "********"
    assert _stored(services, created["id"]) == {
        "password": "hunter2",
        "api_token": "new",
        "host": "mail2.test",
    }


async def test_one_default_per_group_and_roles(
    services: Services, client: httpx.AsyncClient, project: Project
) -> None:
    first = await post(
        client,
        project,
        "/providers",
        {"type": "logger", "name": "A", "group": "text", "is_default": True},
    )
    second = await post(
        client,
        project,
        "/providers",
        {"type": "logger", "name": "B", "group": "text", "is_default": True},
    )
    again = (await client.get(f"{API}/providers/{first['id']}", headers=bearer(project.sk))).json()
    assert again["is_default"] is False and second["is_default"] is True

    editor = services.projects.create_key(project.id, Scope.SECRET, role=Role.EDITOR).key
    assert_problem(
        await client.get(f"{API}/providers", headers=bearer(editor)), 403, "permission_denied"
    )
    assert_problem(
        await client.get(f"{API}/providers", headers=bearer(project.pk)),
        401,
        "authentication_required",
    )

    wrong_group = await client.post(
        f"{API}/providers",
        json={"type": "logger", "name": "C", "group": "fax"},
        headers=bearer(project.sk),
    )
    assert_problem(wrong_group, 422, "validation_failed")
    unknown_type = await client.post(
        f"{API}/providers",
        json={"type": "pigeon", "name": "C", "group": "email"},
        headers=bearer(project.sk),
    )
    assert_problem(unknown_type, 422, "validation_failed")
    missing = await client.post(
        f"{API}/providers", json={"type": "logger"}, headers=bearer(project.sk)
    )
    assert_problem(missing, 400, "parameter_missing")
    deleted = await client.delete(f"{API}/providers/{first['id']}", headers=bearer(project.sk))
    assert deleted.status_code == 204
    gone = await client.get(f"{API}/providers/{first['id']}", headers=bearer(project.sk))
    assert_problem(gone, 404, "resource_missing")
