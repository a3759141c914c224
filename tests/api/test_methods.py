"""A wrong method on a known path: 405 with ``Allow`` naming every method of the path,
in the problem+json envelope; on the fast ingest routes too (which once said 404)."""

from __future__ import annotations

import httpx
import pytest

from tests.api.test_validation import assert_problem
from tests.conftest import Project, bearer


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/api/client/events", "GET, POST"),  # fast POST ingest, FastAPI GET reads
        ("GET", "/api/client/alias", "POST"),  # a fast ingest route alone
        ("PUT", "/api/client/identify", "POST"),
        ("GET", "/v1/batch", "POST"),  # the Segment API's fast routes
        ("PUT", "/api/client/users", "DELETE, GET, PATCH"),  # fast PATCH, FastAPI GET/DELETE
        ("POST", "/api/client/users/u_1", "DELETE, GET"),
        ("DELETE", "/api/health", "GET"),
    ],
)
async def test_a_wrong_method_is_405_with_allow(
    client: httpx.AsyncClient, project: Project, method: str, path: str, allowed: str
) -> None:
    response = await client.request(method, path, headers=bearer(project.sk))
    body = assert_problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == allowed
    assert response.headers["content-type"] == "application/problem+json"
    assert method in body["message"] and path in body["message"]
    assert body["request_id"]


async def test_the_right_methods_of_a_shared_path_still_work(
    client: httpx.AsyncClient, project: Project
) -> None:
    listed = await client.get("/api/client/users", headers=bearer(project.sk))
    assert listed.status_code == 200
    patched = await client.patch(
        "/api/client/users", json=[{"external_id": "u_m"}], headers=bearer(project.sk)
    )
    assert patched.status_code == 204, patched.text


async def test_an_unknown_path_is_still_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/api/client/nope"), 404, "resource_missing")
