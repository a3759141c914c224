"""Who may call what, generated from the route table.

Every route under /api/client must be listed in ``ACCESS`` with the key it needs: a new
endpoint fails ``test_every_route_is_classified`` until someone decides its access rule,
and then the matrix below checks that rule for every key kind.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.test_validation import assert_problem
from tests.conftest import Project, bearer, create_project, drain
from tidings.api.app import TidingsApp
from tidings.bootstrap import Services
from tidings.domain.auth import Role, Scope

PUBLIC = "public"  # pk_ or sk_ keys of any role
# The preference centre: a key of the project and a user token from /users/{id}/sessions;
# any key without the token is refused (tests/messaging/test_subscriptions.py has the rest).
USER_TOKEN = "user token"
# (method, path) → PUBLIC, or the least role a secret key needs.
ACCESS: dict[tuple[str, str], str | Role] = {
    ("POST", "/api/client/events"): PUBLIC,
    ("POST", "/api/client/identify"): PUBLIC,
    ("POST", "/api/client/alias"): PUBLIC,
    ("GET", "/api/client/notifications"): PUBLIC,
    ("PUT", "/api/client/notifications/{notification_id}"): PUBLIC,
    ("POST", "/api/client/devices"): PUBLIC,
    ("PATCH", "/api/client/users"): Role.EDITOR,
    ("POST", "/api/client/users/batch"): Role.EDITOR,
    ("GET", "/api/client/users/{external_id}"): Role.SUPPORT,
    ("GET", "/api/client/users/{external_id}/events"): Role.SUPPORT,
    ("GET", "/api/client/schema"): Role.SUPPORT,
    ("GET", "/api/client/users"): Role.SUPPORT,
    ("DELETE", "/api/client/users/{external_id}"): Role.ADMIN,
    ("DELETE", "/api/client/users"): Role.ADMIN,
    ("GET", "/api/client/lists"): Role.SUPPORT,
    ("POST", "/api/client/lists"): Role.EDITOR,
    ("GET", "/api/client/lists/{id}"): Role.SUPPORT,
    ("PATCH", "/api/client/lists/{id}"): Role.EDITOR,
    ("DELETE", "/api/client/lists/{id}"): Role.EDITOR,
    ("GET", "/api/client/lists/{id}/users"): Role.SUPPORT,
    ("POST", "/api/client/lists/{id}/users"): Role.EDITOR,
    ("DELETE", "/api/client/lists/{id}/users"): Role.EDITOR,
    ("GET", "/api/client/journeys"): Role.SUPPORT,
    ("POST", "/api/client/journeys"): Role.EDITOR,
    ("GET", "/api/client/journeys/{id}"): Role.SUPPORT,
    ("PATCH", "/api/client/journeys/{id}"): Role.EDITOR,  # status "live": publisher
    ("DELETE", "/api/client/journeys/{id}"): Role.EDITOR,
    ("GET", "/api/client/journeys/{id}/steps"): Role.SUPPORT,
    ("PUT", "/api/client/journeys/{id}/steps"): Role.EDITOR,
    ("POST", "/api/client/journeys/{id}/trigger"): Role.EDITOR,
    ("GET", "/api/client/journeys/{id}/users/{external_id}"): Role.SUPPORT,
    ("POST", "/api/client/journeys/{id}/simulate"): Role.SUPPORT,
    # Reporting (docs/reporting.md).
    ("GET", "/api/client/events"): Role.SUPPORT,
    ("GET", "/api/client/events/aggregations"): Role.SUPPORT,
    ("GET", "/api/client/events/export"): Role.SUPPORT,
    ("GET", "/api/client/users/export"): Role.SUPPORT,
    ("GET", "/api/client/lists/{id}/history"): Role.SUPPORT,
    # Messaging (docs/messaging.md).
    ("GET", "/api/client/providers"): Role.ADMIN,
    ("POST", "/api/client/providers"): Role.ADMIN,
    ("GET", "/api/client/providers/{id}"): Role.ADMIN,
    ("PATCH", "/api/client/providers/{id}"): Role.ADMIN,
    ("DELETE", "/api/client/providers/{id}"): Role.ADMIN,
    ("GET", "/api/client/subscriptions"): Role.SUPPORT,
    ("POST", "/api/client/subscriptions"): Role.ADMIN,
    ("GET", "/api/client/subscriptions/{id}"): Role.SUPPORT,
    ("PATCH", "/api/client/subscriptions/{id}"): Role.ADMIN,
    ("POST", "/api/client/subscriptions/batch"): Role.EDITOR,
    ("GET", "/api/client/users/{external_id}/subscriptions"): Role.SUPPORT,
    ("PATCH", "/api/client/users/{external_id}/subscriptions"): Role.EDITOR,
    ("POST", "/api/client/users/{external_id}/sessions"): Role.EDITOR,
    ("GET", "/api/client/users/me"): USER_TOKEN,
    ("PATCH", "/api/client/subscriptions/me"): USER_TOKEN,
    ("GET", "/api/client/campaigns"): Role.SUPPORT,
    ("POST", "/api/client/campaigns"): Role.EDITOR,
    ("GET", "/api/client/campaigns/{id}"): Role.SUPPORT,
    ("PATCH", "/api/client/campaigns/{id}"): Role.EDITOR,
    ("DELETE", "/api/client/campaigns/{id}"): Role.EDITOR,
    ("POST", "/api/client/campaigns/{id}/duplicate"): Role.EDITOR,
    ("POST", "/api/client/campaigns/{id}/trigger"): Role.EDITOR,
    ("GET", "/api/client/campaigns/{id}/sends"): Role.SUPPORT,
    ("GET", "/api/client/templates"): Role.SUPPORT,
    ("POST", "/api/client/templates"): Role.EDITOR,
    ("GET", "/api/client/templates/{id}"): Role.SUPPORT,
    ("PATCH", "/api/client/templates/{id}"): Role.EDITOR,
    ("DELETE", "/api/client/templates/{id}"): Role.EDITOR,
    ("POST", "/api/client/templates/{id}/preview"): Role.SUPPORT,
    ("POST", "/api/client/templates/{id}/proof"): Role.EDITOR,
}

QUERIES: dict[tuple[str, str], str] = {("DELETE", "/api/client/users"): "?user_id=matrix"}

# A body that passes validation, per route, so that only access decides the answer.
BODIES: dict[tuple[str, str], Any] = {
    ("PUT", "/api/client/notifications/{notification_id}"): {"external_id": "matrix"},
    ("POST", "/api/client/events"): [{"name": "E", "external_id": "matrix"}],
    ("POST", "/api/client/identify"): {"external_id": "matrix"},
    ("POST", "/api/client/alias"): {"external_id": "matrix", "anonymous_id": "matrix-anon"},
    ("POST", "/api/client/devices"): {
        "external_id": "matrix",
        "device_id": "d",
        "os": "ios",
        "model": "m",
        "app_build": "1",
        "app_version": "1",
    },
    ("PATCH", "/api/client/users"): [{"external_id": "matrix"}],
    ("POST", "/api/client/users/batch"): [{"external_id": "matrix"}],
    ("POST", "/api/client/lists"): {"name": "matrix", "type": "static"},
    ("PATCH", "/api/client/lists/{id}"): {"name": "matrix"},
    ("POST", "/api/client/lists/{id}/users"): {"external_ids": ["matrix"]},
    ("DELETE", "/api/client/lists/{id}/users"): {"external_ids": ["matrix"]},
    ("POST", "/api/client/journeys"): {"name": "matrix"},
    ("PATCH", "/api/client/journeys/{id}"): {"name": "matrix"},
    ("PUT", "/api/client/journeys/{id}/steps"): {},
    ("POST", "/api/client/journeys/{id}/trigger"): {"user": {"external_id": "matrix"}},
    ("POST", "/api/client/journeys/{id}/simulate"): {"external_id": "matrix"},
}


def routes(app: TidingsApp) -> set[tuple[str, str]]:
    """The raw ingest routes, plus every route FastAPI serves (its OpenAPI paths)."""
    found = {route for route in app._fast if route[1].startswith("/api/client")}
    for path, operations in app.fastapi.openapi()["paths"].items():
        if path.startswith("/api/client"):
            found |= {(method.upper(), path) for method in operations}
    return found


def test_every_route_is_classified(app: TidingsApp) -> None:
    unclassified = routes(app) - set(ACCESS)
    assert not unclassified, f"decide the access rule of {sorted(unclassified)} in ACCESS"
    assert not set(ACCESS) - routes(app), "ACCESS lists routes that no longer exist"


# Headers a route needs besides the key (the in-app list names its user in headers).
HEADERS: dict[tuple[str, str], dict[str, str]] = {
    ("GET", "/api/client/notifications"): {"x-external-id": "matrix"},
}
# Routes whose answer, once the key is accepted, is 404 for the made-up resource.
MISSING = {("PUT", "/api/client/notifications/{notification_id}")}


def _request(client: httpx.AsyncClient, method: str, path: str, key: str | None):  # type: ignore[no-untyped-def]
    url = path.replace("{external_id}", "matrix").replace("{notification_id}", "1")
    url += QUERIES.get((method, path), "")
    headers = {**(bearer(key) if key else {}), **HEADERS.get((method, path), {})}
    body = BODIES.get((method, path))
    if body is None:
        return client.request(method, url, headers=headers)
    return client.request(method, url, json=body, headers=headers)


async def test_access_matrix(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    revoked = services.projects.create_key(project.id, Scope.PUBLIC).key
    services.projects.revoke_key(key=revoked)
    by_role = {
        role: services.projects.create_key(project.id, Scope.SECRET, role=role).key for role in Role
    }
    for (method, path), rule in sorted(ACCESS.items(), key=lambda x: (x[0][1], x[0][0])):
        where = f"{method} {path}"
        for key in (None, "pk_not_a_key", "sk_not_a_key", revoked):
            response = await _request(client, method, path, key)
            assert_problem(response, 401, "authentication_required")
        public = await _request(client, method, path, project.pk)
        if rule == USER_TOKEN:
            assert_problem(public, 401, "authentication_required")
            for key in by_role.values():
                assert_problem(
                    await _request(client, method, path, key), 401, "authentication_required"
                )
            continue
        if rule == PUBLIC and (method, path) in MISSING:
            assert_problem(public, 404, "resource_missing")
        elif rule == PUBLIC:
            assert public.status_code < 300, (where, public.text)
        else:
            assert_problem(public, 401, "authentication_required")
        for role, key in by_role.items():
            response = await _request(client, method, path, key)
            if rule == PUBLIC or role >= rule:
                assert response.status_code not in (401, 403), (where, role, response.text)
            else:
                assert_problem(response, 403, "permission_denied")


async def test_another_projects_keys_see_nothing(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    other = create_project(services)
    for method, path in ACCESS:
        if method != "GET" or "{external_id}" not in path or "{id}" in path:
            continue
        await client.post(
            "/api/client/events",
            json=[{"name": "Private", "external_id": "matrix"}],
            headers=bearer(project.pk),
        )
        await drain(services)
        mine = await _request(client, method, path, project.sk)
        theirs = await _request(client, method, path, other.sk)
        assert mine.status_code == 200, (path, mine.text)
        assert_problem(theirs, 404, "resource_missing")


@pytest.mark.parametrize("scheme", ["Basic", "Token", "bearer"])
async def test_only_the_bearer_scheme_authenticates(
    client: httpx.AsyncClient, project: Project, scheme: str
) -> None:
    response = await client.post(
        "/api/client/events",
        json=[{"name": "E", "external_id": "u"}],
        headers={"Authorization": f"{scheme} {project.pk}"},
    )
    assert response.status_code == (204 if scheme.lower() == "bearer" else 401)
