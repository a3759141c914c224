"""Keys: missing, unknown, revoked, wrong scope, role too low, another project's."""

from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa

from tests.api.test_validation import assert_problem
from tests.conftest import Project, bearer, create_project, drain
from tidings.bootstrap import Services
from tidings.domain.auth import Role, Scope
from tidings.store.tables import api_keys

EVENT = [{"name": "E", "external_id": "u_1"}]
SECRET_WRITES = [
    ("PATCH", "/api/client/users", [{"external_id": "u_1"}]),
    ("POST", "/api/client/users/batch", [{"external_id": "u_1"}]),
]
SECRET_READS = ["/api/client/users/u_1", "/api/client/users/u_1/events"]
PUBLIC_WRITES = [
    ("/api/client/events", EVENT),
    ("/api/client/identify", {"external_id": "u_1"}),
    ("/api/client/alias", {"external_id": "u_1", "anonymous_id": "a"}),
    (
        "/api/client/devices",
        {
            "external_id": "u_1",
            "device_id": "d",
            "os": "ios",
            "model": "m",
            "app_build": "1",
            "app_version": "1",
        },
    ),
]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer"}, {"Authorization": "Basic abc"}, bearer("pk_unknown")],
)
async def test_missing_or_unknown_key_is_401(
    client: httpx.AsyncClient, project: Project, headers: dict[str, str]
) -> None:
    response = await client.post("/api/client/events", json=EVENT, headers=headers)
    assert_problem(response, 401, "authentication_required")
    for path in SECRET_READS:
        assert_problem(await client.get(path, headers=headers), 401, "authentication_required")


async def test_revoked_key_is_401(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    assert (
        await client.post("/api/client/events", json=EVENT, headers=bearer(project.pk))
    ).status_code == 204
    services.projects.revoke_key(key=project.pk)
    response = await client.post("/api/client/events", json=EVENT, headers=bearer(project.pk))
    assert_problem(response, 401, "authentication_required")


async def test_public_key_on_secret_endpoints_is_401(
    client: httpx.AsyncClient, project: Project
) -> None:
    for method, path, body in SECRET_WRITES:
        response = await client.request(method, path, json=body, headers=bearer(project.pk))
        assert_problem(response, 401, "authentication_required")
    for path in SECRET_READS:
        assert_problem(
            await client.get(path, headers=bearer(project.pk)), 401, "authentication_required"
        )


async def test_secret_key_may_use_public_endpoints(
    client: httpx.AsyncClient, project: Project
) -> None:
    for path, body in PUBLIC_WRITES:
        response = await client.post(path, json=body, headers=bearer(project.sk))
        assert response.status_code == 204, (path, response.text)


async def test_role_too_low_is_403(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    support = services.projects.create_key(project.id, Scope.SECRET, role=Role.SUPPORT).key
    for method, path, body in SECRET_WRITES:
        response = await client.request(method, path, json=body, headers=bearer(support))
        assert_problem(response, 403, "permission_denied")
    editor = services.projects.create_key(project.id, Scope.SECRET, role=Role.EDITOR).key
    response = await client.patch(
        "/api/client/users", json=[{"external_id": "u_1"}], headers=bearer(editor)
    )
    assert response.status_code == 204
    await drain(services)
    assert (await client.get(SECRET_READS[0], headers=bearer(support))).status_code == 200


async def test_a_key_never_reads_or_writes_another_project(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    other = create_project(services)
    body = [{"name": "Secret thing", "external_id": "shared_id", "data": {"project": "A"}}]
    assert (
        await client.post("/api/client/events", json=body, headers=bearer(project.pk))
    ).status_code == 204
    body = [{"name": "Other thing", "external_id": "shared_id", "data": {"project": "B"}}]
    assert (
        await client.post("/api/client/events", json=body, headers=bearer(other.pk))
    ).status_code == 204
    await drain(services)
    mine = await client.get("/api/client/users/shared_id/events", headers=bearer(project.sk))
    theirs = await client.get("/api/client/users/shared_id/events", headers=bearer(other.sk))
    assert [e["data"]["project"] for e in mine.json()["results"]] == ["A"]
    assert [e["data"]["project"] for e in theirs.json()["results"]] == ["B"]
    assert mine.json()["results"][0]["id"] != theirs.json()["results"][0]["id"]
    only_a = [{"name": "E", "external_id": "only_in_a"}]
    await client.post("/api/client/events", json=only_a, headers=bearer(project.pk))
    await drain(services)
    response = await client.get("/api/client/users/only_in_a", headers=bearer(other.sk))
    assert_problem(response, 404, "resource_missing")


def test_keys_are_stored_only_as_hashes(services: Services, project: Project) -> None:
    with services.db.reader.connect() as conn:
        rows = conn.execute(sa.select(api_keys)).all()
    dump = repr([tuple(row) for row in rows])
    assert project.pk not in dump and project.sk not in dump
    assert project.pk[3:20] not in dump
