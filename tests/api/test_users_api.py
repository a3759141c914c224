"""The users API: listing and search, timeline filters, erasure, and who may do what."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.api.test_validation import assert_problem
from tests.conftest import Project, bearer, create_project, drain
from tidings.bootstrap import Services
from tidings.domain.auth import Role, Scope
from tidings.store.tables import devices, events, identities, profiles

USERS = "/api/client/users"


async def _batch(client: httpx.AsyncClient, project: Project, items: list[dict[str, Any]]) -> None:
    response = await client.post(f"{USERS}/batch", json=items, headers=bearer(project.sk))
    assert response.status_code == 200, response.text
    assert response.json()["failed"] == 0, response.text


async def _users_one_by_one(
    client: httpx.AsyncClient, project: Project, external_ids: list[str]
) -> None:
    """One synchronous batch each, so that every profile has its own created_at."""
    for external_id in external_ids:
        await _batch(client, project, [{"external_id": external_id}])


async def _list(
    client: httpx.AsyncClient, key: str, **params: Any
) -> tuple[list[str | None], dict[str, Any]]:
    response = await client.get(USERS, params=params, headers=bearer(key))
    assert response.status_code == 200, response.text
    page = response.json()
    return [u["external_id"] for u in page["results"]], page


def _key(services: Services, project: Project, role: Role) -> str:
    return services.projects.create_key(project.id, Scope.SECRET, role=role).key


# -- GET /users: pagination -------------------------------------------------------------------


async def test_users_are_listed_newest_first_and_page_both_ways(
    client: httpx.AsyncClient, project: Project
) -> None:
    await _users_one_by_one(client, project, [f"u{i}" for i in range(7)])

    first_ids, first = await _list(client, project.sk, limit=3)
    assert first_ids == ["u6", "u5", "u4"]
    assert first["limit"] == 3 and first["prevCursor"] is None and first["nextCursor"]
    second_ids, second = await _list(client, project.sk, limit=3, cursor=first["nextCursor"])
    assert second_ids == ["u3", "u2", "u1"]
    assert second["prevCursor"] and second["nextCursor"]
    third_ids, third = await _list(client, project.sk, limit=3, cursor=second["nextCursor"])
    assert third_ids == ["u0"]
    assert third["nextCursor"] is None and third["prevCursor"]

    # Back again: the same pages, in the same order, down to a first page without prevCursor.
    _, back_to_second = await _list(client, project.sk, limit=3, cursor=third["prevCursor"])
    assert back_to_second == second
    _, back_to_first = await _list(client, project.sk, limit=3, cursor=second["prevCursor"])
    assert back_to_first == first


async def test_profiles_created_together_page_by_id(
    client: httpx.AsyncClient, project: Project
) -> None:
    # One batch: one processing transaction, so the same created_at for all five.
    await _batch(client, project, [{"external_id": f"t{i}"} for i in range(5)])
    everyone, _ = await _list(client, project.sk, limit=100)
    assert sorted(everyone, key=str) == [f"t{i}" for i in range(5)]

    pages: list[dict[str, Any]] = []
    forward: list[str | None] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        ids, page = await _list(client, project.sk, **params)
        pages.append(page)
        forward += ids
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert forward == everyone
    assert len(pages) == 3

    backward: list[str | None] = []
    page = pages[-1]
    backward = [u["external_id"] for u in page["results"]]
    while page["prevCursor"]:
        ids, page = await _list(client, project.sk, limit=2, cursor=page["prevCursor"])
        backward = ids + backward
    assert backward == everyone
    assert page == pages[0]


async def test_each_listed_user_has_the_profile_shape(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    await client.post(
        "/api/client/identify",
        json={
            "external_id": "shape",
            "anonymous_id": "anon-shape",
            "email": "shape@example.com",
            "timezone": "UTC",
            "data": {"plan": "pro"},
        },
        headers=bearer(project.pk),
    )
    await client.post(
        "/api/client/devices",
        json={
            "external_id": "shape",
            "device_id": "dev-shape",
            "token": "tok",
            "os": "iOS",
            "model": "iPhone",
            "app_build": "1",
            "app_version": "1.0",
        },
        headers=bearer(project.pk),
    )
    await client.post(
        "/api/client/events",
        json=[{"name": "Viewed", "anonymous_id": "anon-only"}],
        headers=bearer(project.pk),
    )
    await drain(services)
    _, page = await _list(client, project.sk)
    assert page["limit"] == 25
    assert page["nextCursor"] is None and page["prevCursor"] is None
    listed = {u["external_id"]: u for u in page["results"]}
    assert set(listed) == {"shape", None}  # profiles known only anonymously are listed too
    single = (await client.get(f"{USERS}/shape", headers=bearer(project.sk))).json()
    assert listed["shape"] == single
    assert single["anonymous_ids"] == ["anon-shape"]
    assert [d["device_id"] for d in single["devices"]] == ["dev-shape"]
    assert listed[None]["anonymous_ids"] == ["anon-only"]
    assert listed[None]["anonymous_id"] == "anon-only"


async def test_a_user_shows_its_project_and_whether_it_has_a_push_device(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    """Spotzee's generated client types expect ``project_id`` and ``has_push_device``."""
    pk = bearer(project.pk)
    for external_id in ("pushable", "tokenless", "deviceless"):
        await client.post("/api/client/identify", json={"external_id": external_id}, headers=pk)
    device = {"os": "iOS", "model": "iPhone", "app_build": "1", "app_version": "1.0"}
    for body in (
        {**device, "external_id": "pushable", "device_id": "d-1", "token": "tok-1"},
        {**device, "external_id": "tokenless", "device_id": "d-2"},
    ):
        response = await client.post("/api/client/devices", json=body, headers=pk)
        assert response.status_code == 204, response.text
    await drain(services)
    _, page = await _list(client, project.sk)
    listed = {u["external_id"]: u for u in page["results"]}
    expected = {"pushable": True, "tokenless": False, "deviceless": False}
    for external_id, has_push in expected.items():
        single = (await client.get(f"{USERS}/{external_id}", headers=bearer(project.sk))).json()
        assert single["project_id"] == project.id
        assert single["has_push_device"] is has_push, single
        assert listed[external_id] == single
    schema = (await client.get("/openapi.json")).json()["components"]["schemas"]["User"]
    assert {"project_id", "has_push_device"} <= set(schema["properties"])


async def test_listed_users_show_refused_merges_like_a_single_read(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    pk = bearer(project.pk)
    await client.post(
        "/api/client/identify", json={"external_id": "r_a", "anonymous_id": "shared"}, headers=pk
    )
    await drain(services)
    await client.post(
        "/api/client/identify", json={"external_id": "r_b", "anonymous_id": "shared"}, headers=pk
    )
    await drain(services)
    _, page = await _list(client, project.sk)
    listed = {u["external_id"]: u for u in page["results"]}
    for external_id in ("r_a", "r_b"):
        single = (await client.get(f"{USERS}/{external_id}", headers=bearer(project.sk))).json()
        assert single["merge_rejections"], single
        assert listed[external_id] == single


async def test_list_parameters_are_checked(client: httpx.AsyncClient, project: Project) -> None:
    await _batch(client, project, [{"external_id": "p1"}])
    for params in ({"limit": 0}, {"limit": 101}, {"limit": "x"}):
        body = assert_problem(
            await client.get(USERS, params=params, headers=bearer(project.sk)),
            400,
            "parameter_invalid_format",
        )
        assert body["param"] == "limit"
    events_cursor = "WzE3NjcyMjU2MDIwMDAwMDAsImV2dF8wMU04QkdUTTNQMTNWUVMwQTY0RVFYUjg3SCJd"
    for cursor in ("zzz", "", "bm9wZQ", events_cursor):
        if not cursor:
            continue
        body = assert_problem(
            await client.get(USERS, params={"cursor": cursor}, headers=bearer(project.sk)),
            400,
            "parameter_invalid_format",
        )
        assert body["param"] == "cursor"
    # An events cursor is not a users cursor, and neither is the reverse.
    _, page = await _list(client, project.sk, limit=1)
    assert page["nextCursor"] is None
    await _batch(client, project, [{"external_id": "p2"}])
    _, page = await _list(client, project.sk, limit=1)
    body = assert_problem(
        await client.get(
            f"{USERS}/p1/events", params={"cursor": page["nextCursor"]}, headers=bearer(project.sk)
        ),
        400,
        "parameter_invalid_format",
    )
    assert body["param"] == "cursor"


async def test_an_empty_project_lists_nothing(client: httpx.AsyncClient, project: Project) -> None:
    ids, page = await _list(client, project.sk)
    assert ids == [] and page == {
        "results": [],
        "nextCursor": None,
        "prevCursor": None,
        "limit": 25,
    }


# -- GET /users?q= ------------------------------------------------------------------------------


@pytest.fixture
async def people(client: httpx.AsyncClient, project: Project) -> None:
    await _batch(
        client,
        project,
        [
            {
                "external_id": "alice-1",
                "anonymous_id": "anon-a1",
                "email": "Alice.Smith@Example.com",
                "phone": "+61491570006",
            },
        ],
    )
    await _batch(
        client,
        project,
        [
            {
                "external_id": "bob",
                "anonymous_id": "visitor-b",
                "email": "bob@example.org",
                "phone": "+14155550100",
            }
        ],
    )
    await _batch(client, project, [{"anonymous_id": "anon-zz"}])
    await _batch(client, project, [{"external_id": "50%_off"}])


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        # external_id: exact or prefix, case-sensitive
        ("alice-1", ["alice-1"]),
        ("bo", ["bob"]),
        ("ALICE-1", []),
        # anonymous ids: exact or prefix, case-sensitive
        ("visitor-b", ["bob"]),
        ("visitor", ["bob"]),
        ("anon-", [None, "alice-1"]),  # newest first
        ("anon-a1", ["alice-1"]),
        # email: prefix, any case
        ("alice.smith@example.com", ["alice-1"]),
        ("ALICE.SMITH", ["alice-1"]),
        ("Bob@Example.ORG", ["bob"]),
        # phone: prefix of the E.164 form; spaces, dashes, dots and brackets are ignored
        ("+61491570006", ["alice-1"]),
        ("+6149", ["alice-1"]),
        ("+1 (415) 555-", ["bob"]),
        # LIKE wildcards are literal
        ("50%", ["50%_off"]),
        ("%", []),
        ("_", []),
        ("50_", []),
        ("nobody", []),
        # blank means no filter
        ("  ", ["50%_off", None, "bob", "alice-1"]),
    ],
)
async def test_q_searches_ids_email_and_phone(
    client: httpx.AsyncClient, project: Project, people: None, q: str, expected: list[str | None]
) -> None:
    ids, _ = await _list(client, project.sk, q=q)
    assert ids == expected


async def test_search_results_page(
    client: httpx.AsyncClient, project: Project, people: None
) -> None:
    first, page = await _list(client, project.sk, q="anon-", limit=1)
    assert first == [None] and page["prevCursor"] is None
    second, page = await _list(client, project.sk, q="anon-", limit=1, cursor=page["nextCursor"])
    assert second == ["alice-1"] and page["nextCursor"] is None
    back, page = await _list(client, project.sk, q="anon-", limit=1, cursor=page["prevCursor"])
    assert back == [None] and page["prevCursor"] is None


# -- GET /users/{external_id}/events filters --------------------------------------------------


@pytest.fixture
async def timeline(client: httpx.AsyncClient, services: Services, project: Project) -> None:
    body = [
        {"name": "Signed up", "external_id": "tl", "created_at": "2026-01-01T00:00:00Z"},
        {"name": "Logged in", "external_id": "tl", "created_at": "2026-01-02T00:00:00Z"},
        {"name": "Purchased", "external_id": "tl", "created_at": "2026-01-03T00:00:00Z"},
        {"name": "Logged in", "external_id": "tl", "created_at": "2026-01-04T00:00:00Z"},
        {"name": "Purchased", "external_id": "tl", "created_at": "2026-01-05T00:00:00Z"},
        {"name": "Logged in", "external_id": "other", "created_at": "2026-01-03T00:00:00Z"},
    ]
    response = await client.post("/api/client/events", json=body, headers=bearer(project.pk))
    assert response.status_code == 204
    await drain(services)


async def _timeline(
    client: httpx.AsyncClient, project: Project, params: list[tuple[str, Any]]
) -> list[tuple[str, str]]:
    response = await client.get(f"{USERS}/tl/events", params=params, headers=bearer(project.sk))
    assert response.status_code == 200, response.text
    return [(e["name"], e["created_at"][:10]) for e in response.json()["results"]]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            [],
            [
                ("Purchased", "2026-01-05"),
                ("Logged in", "2026-01-04"),
                ("Purchased", "2026-01-03"),
                ("Logged in", "2026-01-02"),
                ("Signed up", "2026-01-01"),
            ],
        ),
        ([("name", "Logged in")], [("Logged in", "2026-01-04"), ("Logged in", "2026-01-02")]),
        (
            [("name", "Signed up"), ("name", "Purchased")],
            [("Purchased", "2026-01-05"), ("Purchased", "2026-01-03"), ("Signed up", "2026-01-01")],
        ),
        ([("event_name", "Signed up")], [("Signed up", "2026-01-01")]),
        (
            [("event_name[]", "Signed up"), ("name", "Logged in")],
            [("Logged in", "2026-01-04"), ("Logged in", "2026-01-02"), ("Signed up", "2026-01-01")],
        ),
        ([("name", "Nothing like it")], []),
        # from is inclusive, to exclusive
        (
            [("from", "2026-01-02T00:00:00Z"), ("to", "2026-01-04T00:00:00Z")],
            [("Purchased", "2026-01-03"), ("Logged in", "2026-01-02")],
        ),
        ([("from", "2026-01-05")], [("Purchased", "2026-01-05")]),
        ([("to", "2026-01-02")], [("Signed up", "2026-01-01")]),
        # an offset; and "+" sent unencoded (read as a space) is understood
        ([("from", "2026-01-05T10:00:00+10:00")], [("Purchased", "2026-01-05")]),
        ([("from", "2026-01-05T10:00:01 10:00")], []),
        (
            [("name", "Purchased"), ("from", "2026-01-04"), ("to", "2026-01-06")],
            [("Purchased", "2026-01-05")],
        ),
        ([("from", "2026-01-04"), ("to", "2026-01-04")], []),
    ],
)
async def test_timeline_filters(
    client: httpx.AsyncClient,
    project: Project,
    timeline: None,
    params: list[tuple[str, Any]],
    expected: list[tuple[str, str]],
) -> None:
    assert await _timeline(client, project, params) == expected


async def test_filtered_timeline_pages(
    client: httpx.AsyncClient, project: Project, timeline: None
) -> None:
    params: list[tuple[str, Any]] = [("name", "Logged in"), ("name", "Purchased"), ("limit", 3)]
    response = await client.get(f"{USERS}/tl/events", params=params, headers=bearer(project.sk))
    page = response.json()
    assert [e["created_at"][:10] for e in page["results"]] == [
        "2026-01-05",
        "2026-01-04",
        "2026-01-03",
    ]
    assert page["prevCursor"] is None
    response = await client.get(
        f"{USERS}/tl/events",
        params=[*params, ("cursor", page["nextCursor"])],
        headers=bearer(project.sk),
    )
    page = response.json()
    assert [(e["name"], e["created_at"][:10]) for e in page["results"]] == [
        ("Logged in", "2026-01-02")
    ]
    assert page["nextCursor"] is None and page["limit"] == 3


@pytest.mark.parametrize(
    ("params", "status", "code", "param"),
    [
        ([("from", "yesterday")], 400, "parameter_invalid_format", "from"),
        ([("to", "2026-13-01")], 400, "parameter_invalid_format", "to"),
        ([("from", "x" * 65)], 400, "parameter_invalid_format", "from"),
        ([("name", "")], 400, "parameter_invalid_empty", "name"),
        ([("event_name", "  ")], 400, "parameter_invalid_empty", "name"),
        ([("name", "n" * 256)], 400, "parameter_invalid_format", "name"),
        ([("name", f"n{i}") for i in range(101)], 400, "parameter_invalid_format", "name"),
    ],
)
async def test_timeline_filter_errors(
    client: httpx.AsyncClient,
    project: Project,
    timeline: None,
    params: list[tuple[str, Any]],
    status: int,
    code: str,
    param: str,
) -> None:
    response = await client.get(f"{USERS}/tl/events", params=params, headers=bearer(project.sk))
    assert assert_problem(response, status, code)["param"] == param


# -- who may do what ----------------------------------------------------------------------------


async def test_roles_and_keys(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    await _batch(client, project, [{"external_id": "guarded"}])
    support = _key(services, project, Role.SUPPORT)
    editor = _key(services, project, Role.EDITOR)
    publisher = _key(services, project, Role.PUBLISHER)

    ids, _ = await _list(client, support, q="guarded")
    assert ids == ["guarded"]
    for key in (support, editor, publisher):
        assert_problem(
            await client.delete(f"{USERS}/guarded", headers=bearer(key)), 403, "permission_denied"
        )
        assert_problem(
            await client.delete(USERS, params={"user_id": "guarded"}, headers=bearer(key)),
            403,
            "permission_denied",
        )
    for headers in (bearer(project.pk), {}, bearer("sk_not_a_key")):
        assert_problem(await client.get(USERS, headers=headers), 401, "authentication_required")
        assert_problem(
            await client.delete(f"{USERS}/guarded", headers=headers), 401, "authentication_required"
        )
        assert_problem(
            await client.delete(USERS, params={"user_id": "guarded"}, headers=headers),
            401,
            "authentication_required",
        )
    # The key is checked before the parameters.
    assert_problem(await client.delete(USERS, headers=bearer(support)), 403, "permission_denied")
    assert (await client.get(f"{USERS}/guarded", headers=bearer(project.sk))).status_code == 200


async def test_another_projects_key_sees_nothing(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    await _batch(
        client, project, [{"external_id": "mine", "anonymous_id": "anon-mine", "email": "m@e.com"}]
    )
    other = create_project(services)
    for q in (None, "mine", "anon-mine", "m@e.com"):
        params = {"q": q} if q else {}
        ids, page = await _list(client, other.sk, **params)
        assert ids == [] and page["nextCursor"] is None
    assert_problem(
        await client.delete(f"{USERS}/mine", headers=bearer(other.sk)), 404, "resource_missing"
    )
    response = await client.delete(USERS, params={"user_id": "mine"}, headers=bearer(other.sk))
    assert response.status_code == 200
    assert response.json() == {"results": [{"external_id": "mine", "deleted": False}], "deleted": 0}
    assert (await client.get(f"{USERS}/mine", headers=bearer(project.sk))).status_code == 200


# -- DELETE: what needs no worker ---------------------------------------------------------------


async def test_deleting_an_unknown_user_is_404_and_writes_nothing(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    body = assert_problem(
        await client.delete(f"{USERS}/nobody", headers=bearer(project.sk)),
        404,
        "resource_missing",
    )
    assert body["param"] == "external_id"
    response = await client.delete(
        USERS, params=[("user_id", "nobody"), ("user_id", "no-one")], headers=bearer(project.sk)
    )
    assert response.status_code == 200
    assert response.json() == {
        "results": [
            {"external_id": "nobody", "deleted": False},
            {"external_id": "no-one", "deleted": False},
        ],
        "deleted": 0,
    }
    assert services.committer.committed_items == 0


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ([], "parameter_missing"),
        ([("user_id", "")], "parameter_invalid_empty"),
        ([("user_id", "a"), ("user_id", "  ")], "parameter_invalid_empty"),
        ([("user_id", f"u{i}") for i in range(101)], "parameter_invalid_format"),
        ([("user_id", "x" * 256)], "parameter_invalid_format"),
    ],
)
async def test_bulk_delete_parameters(
    client: httpx.AsyncClient,
    services: Services,
    project: Project,
    params: list[tuple[str, str]],
    code: str,
) -> None:
    response = await client.delete(USERS, params=params, headers=bearer(project.sk))
    assert assert_problem(response, 400, code)["param"] == "user_id"
    assert services.committer.committed_items == 0


async def test_openapi_describes_the_users_endpoints(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert {"get", "delete", "patch"} <= set(paths[USERS])
    assert {"get", "delete"} <= set(paths[f"{USERS}/{{external_id}}"])
    for operation in (paths[USERS]["delete"], paths[f"{USERS}/{{external_id}}"]["delete"]):
        assert {"401", "403", "503"} <= set(operation["responses"])
        assert "422" not in operation["responses"]
    timeline = {p["name"] for p in paths[f"{USERS}/{{external_id}}/events"]["get"]["parameters"]}
    assert {"name", "event_name", "from", "to", "cursor", "limit"} <= timeline
    assert {p["name"] for p in paths[USERS]["get"]["parameters"]} >= {"q", "cursor", "limit"}


# -- DELETE: erasure (applied by the worker) ----------------------------------------------------


async def _seed_person(
    client: httpx.AsyncClient, project: Project, external_id: str, anonymous_id: str
) -> None:
    """Anonymous events merged into a known user, traits, a device."""
    pk = bearer(project.pk)
    await client.post(
        "/api/client/events",
        json=[{"name": "Browsed", "anonymous_id": anonymous_id, "data": {"sku": 1}}],
        headers=pk,
    )
    await client.post(
        "/api/client/identify",
        json={
            "external_id": external_id,
            "anonymous_id": anonymous_id,
            "email": f"{external_id}@example.com",
            "data": {"plan": "pro"},
        },
        headers=pk,
    )
    await client.post(
        "/api/client/events",
        json=[{"name": "Bought", "external_id": external_id, "data": {"total": 9}}],
        headers=pk,
    )
    await client.post(
        "/api/client/devices",
        json={
            "external_id": external_id,
            "device_id": f"dev-{external_id}",
            "token": f"push-{external_id}",
            "os": "Android",
            "model": "Pixel",
            "app_build": "7",
            "app_version": "2.0",
        },
        headers=pk,
    )


def _rows_of(services: Services, project: Project, profile_id: str) -> dict[str, int]:
    with services.db.reader.connect() as conn:
        return {
            table.name: conn.execute(
                sa.select(sa.func.count())
                .select_from(table)
                .where(
                    table.c.project_id == project.id,
                    (table.c.id if table is profiles else table.c.profile_id) == profile_id,
                )
            ).scalar_one()
            for table in (profiles, identities, events, devices)
        }


async def test_delete_erases_the_user_everywhere(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    await _seed_person(client, project, "gone", "anon-gone")
    await _seed_person(client, project, "kept", "anon-kept")
    await drain(services)
    before = (await client.get(f"{USERS}/gone", headers=bearer(project.sk))).json()
    assert before["anonymous_ids"] == ["anon-gone"] and before["devices"]
    assert _rows_of(services, project, before["id"]) == {
        "profiles": 1,
        "identities": 2,
        "events": 2,
        "devices": 1,
    }
    kept = (await client.get(f"{USERS}/kept", headers=bearer(project.sk))).json()

    response = await client.delete(f"{USERS}/gone", headers=bearer(project.sk))
    assert response.status_code == 204, response.text
    assert response.content == b""

    # Gone at once (the answer waited for the worker) and from everywhere.
    sk = bearer(project.sk)
    assert_problem(await client.get(f"{USERS}/gone", headers=sk), 404, "resource_missing")
    assert_problem(await client.get(f"{USERS}/gone/events", headers=sk), 404, "resource_missing")
    assert _rows_of(services, project, before["id"]) == {
        "profiles": 0,
        "identities": 0,
        "events": 0,
        "devices": 0,
    }
    assert services.profiles.profile_id_for(project.id, "anonymous", "anon-gone") is None
    for q in ("gone", "anon-gone"):
        assert (await _list(client, project.sk, q=q))[0] == []
    assert (await _list(client, project.sk))[0] == ["kept"]
    # The other user is untouched.
    assert (await client.get(f"{USERS}/kept", headers=sk)).json() == kept
    assert _rows_of(services, project, kept["id"])["events"] == 2
    # A second delete finds nobody.
    assert_problem(await client.delete(f"{USERS}/gone", headers=sk), 404, "resource_missing")

    # The same ids later make a fresh, empty profile.
    await client.post(
        "/api/client/events",
        json=[{"name": "Came back", "external_id": "gone", "anonymous_id": "anon-gone"}],
        headers=bearer(project.pk),
    )
    await drain(services)
    again = (await client.get(f"{USERS}/gone", headers=sk)).json()
    assert again["id"] != before["id"]
    assert again["email"] is None and again["data"] == {} and again["devices"] == []
    assert again["anonymous_ids"] == ["anon-gone"]
    timeline = (await client.get(f"{USERS}/gone/events", headers=sk)).json()["results"]
    assert [e["name"] for e in timeline] == ["Came back"]


async def test_delete_comes_after_everything_accepted_before_it(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    """Writes acknowledged but not yet applied are erased too, not applied after."""
    await _seed_person(client, project, "racer", "anon-racer")
    response = await client.delete(f"{USERS}/racer", headers=bearer(project.sk))
    assert response.status_code == 204, response.text
    await drain(services)
    assert_problem(
        await client.get(f"{USERS}/racer", headers=bearer(project.sk)), 404, "resource_missing"
    )
    assert services.profiles.profile_id_for(project.id, "anonymous", "anon-racer") is None
    with services.db.reader.connect() as conn:
        for table in (profiles, events, devices):
            assert (
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(table)
                    .where(table.c.project_id == project.id)
                ).scalar_one()
                == 0
            )


async def test_bulk_delete_answers_per_user_in_request_order(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    await _users_one_by_one(client, project, ["a", "b", "c"])
    response = await client.delete(
        USERS,
        params=[("user_id", "c"), ("user_id", "nobody"), ("user_id", "a"), ("user_id", "c")],
        headers=bearer(project.sk),
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "results": [
            {"external_id": "c", "deleted": True},
            {"external_id": "nobody", "deleted": False},
            {"external_id": "a", "deleted": True},
            {"external_id": "c", "deleted": True},
        ],
        "deleted": 2,
    }
    assert (await _list(client, project.sk))[0] == ["b"]
    for gone in ("a", "c"):
        assert_problem(
            await client.get(f"{USERS}/{gone}", headers=bearer(project.sk)),
            404,
            "resource_missing",
        )


async def test_delete_not_processed_in_time_is_503_and_still_happens(
    client: httpx.AsyncClient,
    services: Services,
    project: Project,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _batch(client, project, [{"external_id": "slow"}])
    real = services.wait_processed
    calls: list[list[tuple[int, int]]] = []

    async def erase_times_out(targets: list[tuple[int, int]], seconds: float) -> bool:
        calls.append(targets)
        if len(calls) == 1:  # catching up on earlier writes
            return await real(targets, seconds)
        return False  # the erasure itself

    monkeypatch.setattr(services, "wait_processed", erase_times_out)
    response = await client.delete(f"{USERS}/slow", headers=bearer(project.sk))
    assert_problem(response, 503, "service_unavailable")
    assert response.headers["retry-after"] == "2"
    assert len(calls) == 2 and calls[1]
    await drain(services)
    assert_problem(
        await client.get(f"{USERS}/slow", headers=bearer(project.sk)), 404, "resource_missing"
    )
