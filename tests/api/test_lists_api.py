"""The lists API: list definitions, static members by JSON and CSV, errors, idempotency."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.api.test_validation import assert_problem
from tests.conftest import Project, bearer, create_project, drain
from tidings.bootstrap import Services
from tidings.domain.auth import Role, Scope
from tidings.store.tables import list_changes, list_members, lists

LISTS = "/api/client/lists"
RULE = {
    "uuid": "0b0e4b40-4e0b-4a44-9a2e-6b6a3f1c3b7e",
    "type": "wrapper",
    "group": "user",
    "path": "$",
    "operator": "and",
    "children": [
        {
            "uuid": "5d6c1f8e-2b0a-4c53-a9a4-0f2f0a7f1d11",
            "type": "string",
            "group": "user",
            "path": "$.plan",
            "operator": "=",
            "value": "pro",
        }
    ],
}


async def _users(client: httpx.AsyncClient, project: Project, items: list[dict[str, Any]]) -> None:
    response = await client.post("/api/client/users/batch", json=items, headers=bearer(project.sk))
    assert response.status_code == 200, response.text
    assert response.json()["failed"] == 0, response.text


async def _create(client: httpx.AsyncClient, project: Project, **body: Any) -> dict[str, Any]:
    body = {"name": "VIPs", "type": "static", **body}
    response = await client.post(LISTS, json=body, headers=bearer(project.sk))
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _add(
    client: httpx.AsyncClient, project: Project, list_id: int, body: Any, **headers: str
) -> httpx.Response:
    url = f"{LISTS}/{list_id}/users"
    if isinstance(body, str):
        return await client.post(
            url,
            content=body.encode(),
            headers=bearer(project.sk, **{"Content-Type": "text/csv", **headers}),
        )
    return await client.post(url, json=body, headers=bearer(project.sk, **headers))


async def _members(
    client: httpx.AsyncClient, project: Project, list_id: int, **params: Any
) -> dict[str, Any]:
    response = await client.get(
        f"{LISTS}/{list_id}/users", params=params, headers=bearer(project.sk)
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def _count(services: Services, table: sa.Table, **where: Any) -> int:
    with services.db.reader.connect() as conn:
        query = sa.select(sa.func.count()).select_from(table)
        for name, value in where.items():
            query = query.where(table.c[name] == value)
        return int(conn.execute(query).scalar_one())


# -- definitions --------------------------------------------------------------------------------


async def test_a_static_list_is_created_ready_and_read_back(
    client: httpx.AsyncClient, project: Project
) -> None:
    created = await _create(client, project, tags=["vip", " q3 ", "vip"])
    assert set(created) == {
        "id", "name", "type", "state", "version", "users_count", "rule", "tags",
        "created_at", "updated_at",
    }  # fmt: skip
    assert isinstance(created["id"], int)
    assert created["type"] == "static" and created["state"] == "ready"
    assert created["version"] == 1 and created["users_count"] == 0 and created["rule"] is None
    assert created["tags"] == ["vip", "q3"]
    assert created["created_at"].endswith("Z") and created["created_at"] == created["updated_at"]
    read = await client.get(f"{LISTS}/{created['id']}", headers=bearer(project.sk))
    assert read.status_code == 200 and read.json() == created


async def test_a_dynamic_list_loads_and_a_new_rule_is_a_new_version(
    client: httpx.AsyncClient, project: Project
) -> None:
    created = await _create(client, project, type="dynamic", rule=RULE)
    assert created["state"] == "loading" and created["version"] == 1
    assert created["rule"]["children"][0]["value"] == "pro"
    url = f"{LISTS}/{created['id']}"

    renamed = await client.patch(url, json={"name": "Pro users"}, headers=bearer(project.sk))
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "Pro users" and renamed.json()["version"] == 1

    rule = {**RULE, "children": [{**RULE["children"][0], "value": "team"}]}  # type: ignore[dict-item]
    changed = await client.patch(url, json={"rule": rule}, headers=bearer(project.sk))
    assert changed.status_code == 200, changed.text
    assert changed.json()["version"] == 2 and changed.json()["state"] == "loading"
    assert changed.json()["rule"]["children"][0]["value"] == "team"

    same = await client.patch(url, json={"rule": rule}, headers=bearer(project.sk))
    assert same.json()["version"] == 2  # the same rule again is no new version


async def test_lists_are_listed_newest_first_and_page_both_ways(
    client: httpx.AsyncClient, project: Project, services: Services
) -> None:
    ids = [(await _create(client, project, name=f"L{i}"))["id"] for i in range(5)]
    other = create_project(services)
    await _create(client, other, name="theirs")

    async def page(**params: Any) -> dict[str, Any]:
        response = await client.get(LISTS, params=params, headers=bearer(project.sk))
        assert response.status_code == 200, response.text
        return dict(response.json())

    first = await page(limit=2)
    assert [r["id"] for r in first["results"]] == ids[:2:-1][:2]
    assert first["prevCursor"] is None and first["limit"] == 2
    second = await page(limit=2, cursor=first["nextCursor"])
    third = await page(limit=2, cursor=second["nextCursor"])
    assert [r["id"] for r in second["results"] + third["results"]] == [ids[2], ids[1], ids[0]]
    assert third["nextCursor"] is None
    assert await page(limit=2, cursor=second["prevCursor"]) == first
    bad = await client.get(LISTS, params={"cursor": "nonsense"}, headers=bearer(project.sk))
    assert assert_problem(bad, 400, "parameter_invalid_format")["param"] == "cursor"


async def test_a_deleted_list_is_gone_with_its_members(
    client: httpx.AsyncClient, project: Project, services: Services
) -> None:
    await _users(client, project, [{"external_id": "u1"}])
    created = await _create(client, project)
    assert (await _add(client, project, created["id"], {"external_ids": ["u1"]})).status_code == 200
    url = f"{LISTS}/{created['id']}"
    assert (await client.delete(url, headers=bearer(project.sk))).status_code == 204
    assert_problem(await client.get(url, headers=bearer(project.sk)), 404, "resource_missing")
    assert_problem(await client.delete(url, headers=bearer(project.sk)), 404, "resource_missing")
    listed = await client.get(LISTS, headers=bearer(project.sk))
    assert listed.json()["results"] == []
    assert _count(services, list_members, list_id=created["id"]) == 0
    # Deleting a list is not its members leaving it.
    assert _count(services, list_changes, change="left") == 0


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({}, 400, "parameter_missing", "name"),
        ({"name": "x"}, 400, "parameter_missing", "type"),
        ({"name": 5, "type": "static"}, 400, "parameter_invalid_format", "name"),
        ({"name": "  ", "type": "static"}, 400, "parameter_invalid_empty", "name"),
        ({"name": "x" * 256, "type": "static"}, 400, "parameter_invalid_format", "name"),
        ({"name": "x", "type": "static", "colour": "red"}, 400, "parameter_unknown", "colour"),
        ({"name": "x", "type": "static", "tags": "vip"}, 400, "parameter_invalid_format", "tags"),
        (
            {"name": "x", "type": "static", "tags": ["a", ""]},
            400,
            "parameter_invalid_empty",
            "tags[1]",
        ),
        (
            {"name": "x", "type": "dynamic", "rule": "plan = pro"},
            400,
            "parameter_invalid_format",
            "rule",
        ),
        ({"name": "x", "type": "smart"}, 422, "validation_failed", "type"),
        ({"name": "x", "type": 1}, 400, "parameter_invalid_format", "type"),
        ({"name": "x", "type": "static", "rule": RULE}, 422, "validation_failed", "rule"),
        ({"name": "x", "type": "dynamic"}, 422, "validation_failed", "rule"),
        ([{"name": "x", "type": "static"}], 400, "parameter_invalid_format", "body"),
    ],
)
async def test_a_bad_list_is_refused_and_nothing_is_written(
    client: httpx.AsyncClient,
    project: Project,
    services: Services,
    body: Any,
    status: int,
    code: str,
    param: str,
) -> None:
    response = await client.post(LISTS, json=body, headers=bearer(project.sk))
    problem = assert_problem(response, status, code)
    assert problem["param"] == param
    assert param in [e["param"] for e in problem["errors"]]
    assert _count(services, lists) == 0


async def test_a_rule_the_engine_refuses_is_refused_with_the_paths_at_fault(
    client: httpx.AsyncClient, project: Project
) -> None:
    bad = {**RULE, "children": [{**RULE["children"][0], "operator": "~"}]}  # type: ignore[dict-item]
    for method, url, body in (
        ("POST", LISTS, {"name": "x", "type": "dynamic", "rule": bad}),
        ("PATCH", f"{LISTS}/{(await _create(client, project, type='dynamic', rule=RULE))['id']}",
         {"rule": bad}),
    ):  # fmt: skip
        response = await client.request(method, url, json=body, headers=bearer(project.sk))
        problem = assert_problem(response, 422, "validation_failed")
        assert problem["param"] == "rule.children[0].operator"
        assert [e["param"] for e in problem["errors"]] == ["rule.children[0].operator"]


async def test_every_problem_of_a_list_body_is_listed(
    client: httpx.AsyncClient, project: Project
) -> None:
    response = await client.post(
        LISTS, json={"type": "smart", "tags": [1], "extra": True}, headers=bearer(project.sk)
    )
    problem = assert_problem(response, 400, "parameter_unknown")
    assert {(e["param"], e["code"]) for e in problem["errors"]} == {
        ("extra", "parameter_unknown"),
        ("name", "parameter_missing"),
        ("tags[0]", "parameter_invalid_format"),
        ("type", "parameter_invalid_format"),
    }


async def test_not_json_too_large_or_unparseable_bodies_are_refused(
    client: httpx.AsyncClient, project: Project
) -> None:
    text = await client.post(
        LISTS, content=b"name=x", headers=bearer(project.sk, **{"Content-Type": "text/plain"})
    )
    assert assert_problem(text, 415, "parameter_invalid_format")["param"] == "Content-Type"
    huge = await client.post(
        LISTS,
        content=b'{"name": "' + b"x" * (1024 * 1024) + b'"}',
        headers=bearer(project.sk, **{"Content-Type": "application/json"}),
    )
    assert_problem(huge, 413, "payload_too_large")
    broken = await client.post(
        LISTS, content=b"{", headers=bearer(project.sk, **{"Content-Type": "application/json"})
    )
    assert_problem(broken, 400, "parameter_invalid_format")
    empty = await client.post(
        LISTS, content=b"", headers=bearer(project.sk, **{"Content-Type": "application/json"})
    )
    assert_problem(empty, 400, "parameter_missing")


async def test_a_lists_type_is_fixed_and_static_lists_have_no_rule(
    client: httpx.AsyncClient, project: Project
) -> None:
    static = await _create(client, project)
    url = f"{LISTS}/{static['id']}"
    retyped = await client.patch(url, json={"type": "dynamic"}, headers=bearer(project.sk))
    assert assert_problem(retyped, 422, "validation_failed")["param"] == "type"
    ruled = await client.patch(url, json={"rule": RULE}, headers=bearer(project.sk))
    assert assert_problem(ruled, 422, "validation_failed")["param"] == "rule"
    same = await client.patch(url, json={"type": "static"}, headers=bearer(project.sk))
    assert same.status_code == 200 and same.json() == static


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("GET", "", None),
        ("PATCH", "", {"name": "mine now"}),
        ("DELETE", "", None),
        ("GET", "/users", None),
        ("POST", "/users", {"external_ids": ["u1"]}),
        ("DELETE", "/users", {"external_ids": ["u1"]}),
    ],
)
async def test_unknown_and_other_projects_lists_are_not_found(
    client: httpx.AsyncClient,
    project: Project,
    services: Services,
    method: str,
    suffix: str,
    body: Any,
) -> None:
    other = create_project(services)
    theirs = await _create(client, other, name="theirs")
    for list_id in (theirs["id"], 999_999, "abc", "-1", "1.5"):
        response = await client.request(
            method, f"{LISTS}/{list_id}{suffix}", json=body, headers=bearer(project.sk)
        )
        assert assert_problem(response, 404, "resource_missing")["param"] == "id"
    still = await client.get(f"{LISTS}/{theirs['id']}", headers=bearer(other.sk))
    assert still.json() == theirs


async def test_reads_need_a_secret_key_and_writes_the_editor_role(
    client: httpx.AsyncClient, project: Project, services: Services
) -> None:
    created = await _create(client, project)
    support = services.projects.create_key(project.id, Scope.SECRET, role=Role.SUPPORT).key
    editor = services.projects.create_key(project.id, Scope.SECRET, role=Role.EDITOR).key
    url = f"{LISTS}/{created['id']}"
    assert (await client.get(url, headers=bearer(support))).status_code == 200
    assert_problem(
        await client.get(url, headers=bearer(project.pk)), 401, "authentication_required"
    )
    denied = await client.patch(url, json={"name": "n"}, headers=bearer(support))
    assert_problem(denied, 403, "permission_denied")
    allowed = await client.patch(url, json={"name": "n"}, headers=bearer(editor))
    assert allowed.status_code == 200


# -- members by JSON ------------------------------------------------------------------------------


async def test_members_are_added_by_external_id_and_shown_as_users(
    client: httpx.AsyncClient, project: Project, services: Services
) -> None:
    await _users(
        client,
        project,
        [{"external_id": "u1", "email": "one@example.com"}, {"external_id": "u2"}],
    )
    created = await _create(client, project)
    response = await _add(
        client, project, created["id"], {"external_ids": ["u1", "u2", "nobody", "u1"]}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "added": 2,
        "already_member": 1,
        "not_found": 1,
        "invalid": 0,
        "not_found_rows": [2],
        "invalid_rows": [],
    }
    listed = await client.get(f"{LISTS}/{created['id']}", headers=bearer(project.sk))
    assert listed.json()["users_count"] == 2
    page = await _members(client, project, created["id"])
    assert sorted(u["external_id"] for u in page["results"]) == ["u1", "u2"]
    user = await client.get("/api/client/users/u1", headers=bearer(project.sk))
    assert next(u for u in page["results"] if u["external_id"] == "u1") == user.json()
    assert _count(services, list_changes, list_id=created["id"], change="entered") == 2

    again = await _add(client, project, created["id"], {"external_ids": ["u1"]})
    assert again.json()["added"] == 0 and again.json()["already_member"] == 1
    assert _count(services, list_changes, list_id=created["id"]) == 2


async def test_emails_match_every_profile_ignoring_case(
    client: httpx.AsyncClient, project: Project
) -> None:
    await _users(
        client,
        project,
        [
            {"external_id": "a", "email": "Sam@Example.com"},
            {"external_id": "b", "email": "sam@example.com"},
            {"anonymous_id": "anon-c", "email": "kim@example.com"},
        ],
    )
    created = await _create(client, project)
    response = await _add(
        client,
        project,
        created["id"],
        {"emails": ["SAM@example.com", "kim@EXAMPLE.com", "nobody@example.com"]},
    )
    assert response.status_code == 200, response.text
    assert response.json()["added"] == 2 and response.json()["not_found_rows"] == [2]
    page = await _members(client, project, created["id"])
    assert sorted(str(u["external_id"]) for u in page["results"]) == ["None", "a", "b"]


async def test_members_are_removed_and_leaving_is_recorded(
    client: httpx.AsyncClient, project: Project, services: Services
) -> None:
    await _users(client, project, [{"external_id": f"u{i}"} for i in range(3)])
    created = await _create(client, project)
    await _add(client, project, created["id"], {"external_ids": ["u0", "u1"]})
    response = await client.request(
        "DELETE",
        f"{LISTS}/{created['id']}/users",
        json={"external_ids": ["u0", "u2", "nobody"]},
        headers=bearer(project.sk),
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "removed": 1,
        "not_member": 1,
        "not_found": 1,
        "invalid": 0,
        "not_found_rows": [2],
        "invalid_rows": [],
    }
    page = await _members(client, project, created["id"])
    assert [u["external_id"] for u in page["results"]] == ["u1"]
    listed = await client.get(f"{LISTS}/{created['id']}", headers=bearer(project.sk))
    assert listed.json()["users_count"] == 1
    assert _count(services, list_changes, list_id=created["id"], change="left") == 1


async def test_a_user_written_a_moment_ago_is_found(
    client: httpx.AsyncClient, project: Project
) -> None:
    created = await _create(client, project)
    accepted = await client.patch(
        "/api/client/users", json=[{"external_id": "fresh"}], headers=bearer(project.sk)
    )
    assert accepted.status_code == 204
    response = await _add(client, project, created["id"], {"external_ids": ["fresh"]})
    assert response.json()["added"] == 1, response.text


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({}, 400, "parameter_missing", "external_ids"),
        ({"external_ids": []}, 400, "parameter_invalid_empty", "external_ids"),
        ({"external_ids": "u1"}, 400, "parameter_invalid_format", "external_ids"),
        ({"external_ids": ["u1", 7]}, 400, "parameter_invalid_format", "external_ids[1]"),
        ({"external_ids": ["u1", " "]}, 400, "parameter_invalid_empty", "external_ids[1]"),
        ({"external_ids": ["x" * 256]}, 400, "parameter_invalid_format", "external_ids[0]"),
        ({"external_ids": ["u\x001"]}, 400, "parameter_invalid_format", "external_ids[0]"),
        ({"external_ids": ["u1"], "emails": ["a@b.co"]}, 400, "parameter_invalid_format", "emails"),
        ({"external_ids": ["u1"], "users": []}, 400, "parameter_unknown", "users"),
        ({"emails": ["one@example.com", "not-an-email"]}, 422, "validation_failed", "emails[1]"),
        ({"external_ids": [f"u{i}" for i in range(1001)]}, 413, "payload_too_large", None),
        (["u1"], 400, "parameter_invalid_format", "body"),
    ],
)
async def test_bad_member_bodies_are_refused_and_nothing_is_written(
    client: httpx.AsyncClient,
    project: Project,
    services: Services,
    body: Any,
    status: int,
    code: str,
    param: str | None,
) -> None:
    await _users(client, project, [{"external_id": "u1", "email": "one@example.com"}])
    created = await _create(client, project)
    response = await _add(client, project, created["id"], body)
    assert assert_problem(response, status, code).get("param") == param
    assert _count(services, list_members) == 0 and _count(services, list_changes) == 0


async def test_a_dynamic_lists_members_follow_its_rule_only(
    client: httpx.AsyncClient, project: Project
) -> None:
    created = await _create(client, project, type="dynamic", rule=RULE)
    added = await _add(client, project, created["id"], {"external_ids": ["u1"]})
    assert assert_problem(added, 409, "state_conflict")["param"] == "id"
    removed = await client.request(
        "DELETE",
        f"{LISTS}/{created['id']}/users",
        content=b"external_id\nu1\n",
        headers=bearer(project.sk, **{"Content-Type": "text/csv"}),
    )
    assert_problem(removed, 409, "state_conflict")


async def test_members_page_both_ways(client: httpx.AsyncClient, project: Project) -> None:
    await _users(client, project, [{"external_id": f"m{i}"} for i in range(5)])
    created = await _create(client, project)
    for i in range(5):  # one request each: each its own added_at
        await _add(client, project, created["id"], {"external_ids": [f"m{i}"]})
    first = await _members(client, project, created["id"], limit=2)
    assert [u["external_id"] for u in first["results"]] == ["m4", "m3"]
    assert first["prevCursor"] is None
    second = await _members(client, project, created["id"], limit=2, cursor=first["nextCursor"])
    third = await _members(client, project, created["id"], limit=2, cursor=second["nextCursor"])
    assert [u["external_id"] for u in second["results"] + third["results"]] == ["m2", "m1", "m0"]
    assert third["nextCursor"] is None
    back = await _members(client, project, created["id"], limit=2, cursor=second["prevCursor"])
    assert back == first


# -- members by CSV -------------------------------------------------------------------------------


async def test_a_csv_adds_members_and_reports_rows(
    client: httpx.AsyncClient, project: Project
) -> None:
    await _users(client, project, [{"external_id": f"c{i}"} for i in range(3)])
    created = await _create(client, project)
    csv = (
        "\ufeffName,External_ID\r\n"  # a spreadsheet's export: BOM, CRLF, other columns
        "Ann,c0\r\n"
        "Bob, c1 \r\n"
        "\r\n"
        "Cat,nobody\r\n"
        "Dan,\r\n"
        f"Eve,{'x' * 256}\r\n"
        "Fay\r\n"
        '"Gus, Jr.",c2\r\n'
        "Ann again,c0\r\n"
        "Hal,c\x001\r\n"
    )
    response = await _add(client, project, created["id"], csv)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["added"] == 3 and report["already_member"] == 1
    assert report["not_found"] == 1 and report["not_found_rows"] == [5]
    assert report["invalid"] == 4
    assert [(r["row"], r["code"]) for r in report["invalid_rows"]] == [
        (6, "parameter_invalid_empty"),
        (7, "parameter_invalid_format"),
        (8, "parameter_missing"),
        (11, "parameter_invalid_format"),
    ]
    page = await _members(client, project, created["id"])
    assert sorted(u["external_id"] for u in page["results"]) == ["c0", "c1", "c2"]


async def test_a_csv_of_emails(client: httpx.AsyncClient, project: Project) -> None:
    await _users(client, project, [{"external_id": "e1", "email": "e1@example.com"}])
    created = await _create(client, project)
    response = await _add(client, project, created["id"], "email\nE1@example.com\nnot-an-email\n")
    assert response.status_code == 200, response.text
    assert response.json()["added"] == 1
    assert response.json()["invalid_rows"][0]["row"] == 3


@pytest.mark.parametrize(
    ("csv", "code", "param"),
    [
        (b"", "parameter_missing", "body"),
        (b"\n\n", "parameter_missing", "body"),
        (b"name,phone\nAnn,+61491570006\n", "parameter_missing", "row 1"),
        (b'external_id\nu1\n"u2\nu3\n', "parameter_invalid_format", "row 3"),
        (b"external_id\nu1\nu\xff2\n", "parameter_invalid_format", "row 3"),
    ],
)
async def test_a_malformed_csv_is_refused_whole(
    client: httpx.AsyncClient,
    project: Project,
    services: Services,
    csv: bytes,
    code: str,
    param: str,
) -> None:
    await _users(client, project, [{"external_id": "u1"}])
    created = await _create(client, project)
    response = await client.post(
        f"{LISTS}/{created['id']}/users",
        content=csv,
        headers=bearer(project.sk, **{"Content-Type": "text/csv; charset=utf-8"}),
    )
    assert assert_problem(response, 400, code)["param"] == param
    assert _count(services, list_members) == 0 and _count(services, list_changes) == 0


async def test_members_by_another_content_type_are_refused(
    client: httpx.AsyncClient, project: Project
) -> None:
    created = await _create(client, project)
    response = await client.post(
        f"{LISTS}/{created['id']}/users",
        content=b"external_id\nu1\n",
        headers=bearer(project.sk, **{"Content-Type": "text/plain"}),
    )
    assert_problem(response, 415, "parameter_invalid_format")


# -- Idempotency-Key ------------------------------------------------------------------------------


async def test_a_retried_create_makes_one_list(
    client: httpx.AsyncClient, project: Project, services: Services
) -> None:
    headers = bearer(project.sk, **{"Idempotency-Key": "create-vips"})
    body = {"name": "VIPs", "type": "static"}
    first = await client.post(LISTS, json=body, headers=headers)
    again = await client.post(LISTS, json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert _count(services, lists) == 1
    other = await client.post(LISTS, json={**body, "name": "Other"}, headers=headers)
    assert_problem(other, 409, "idempotency_key_mismatch")


async def test_a_retried_member_import_replays_its_report(
    client: httpx.AsyncClient, project: Project
) -> None:
    await _users(client, project, [{"external_id": "u1"}])
    created = await _create(client, project)
    first = await _add(
        client, project, created["id"], "external_id\nu1\n", **{"Idempotency-Key": "imp-1"}
    )
    again = await _add(
        client, project, created["id"], "external_id\nu1\n", **{"Idempotency-Key": "imp-1"}
    )
    assert first.json()["added"] == 1
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"


async def test_a_merge_keeps_one_membership_and_an_erasure_leaves_the_list(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    """Memberships follow the identity graph: an anonymous member merged into a known
    member is one member; an erased member is no member at all."""
    await _users(
        client,
        project,
        [
            {"anonymous_id": "anon-1", "email": "anon@example.com"},
            {"external_id": "known", "email": "known@example.com"},
            {"external_id": "other"},
        ],
    )
    created = await _create(client, project)
    added = await _add(
        client, project, created["id"], {"emails": ["anon@example.com", "known@example.com"]}
    )
    assert added.status_code == 200, added.text
    await _add(client, project, created["id"], {"external_ids": ["other"]})
    assert (await _member_count(client, project, created["id"])) == 3

    alias = await client.post(
        "/api/client/alias",
        json={"anonymous_id": "anon-1", "external_id": "known"},
        headers=bearer(project.pk),
    )
    assert alias.status_code == 204
    deleted = await client.delete("/api/client/users/other", headers=bearer(project.sk))
    assert deleted.status_code in (202, 204), deleted.text
    await drain(services)

    members = await _members(client, project, created["id"])
    assert [m["external_id"] for m in members["results"]] == ["known"]
    assert await _member_count(client, project, created["id"]) == 1
    assert _count(services, list_members, list_id=created["id"]) == 1


async def _member_count(client: httpx.AsyncClient, project: Project, list_id: int) -> int:
    response = await client.get(f"{LISTS}/{list_id}", headers=bearer(project.sk))
    assert response.status_code == 200, response.text
    return int(response.json()["users_count"])


async def test_a_loading_dynamic_list_shows_how_far_its_back_fill_has_got(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    import asyncio
    import time

    await _users(
        client,
        project,
        [{"external_id": f"p{n}", "data": {"plan": "pro" if n % 2 else "free"}} for n in range(5)],
    )
    assert services.consumer is not None and services.segments is not None
    services.consumer.timers = None  # the test steps the back-fill itself
    backfill = services.segments.backfill
    backfill.chunk = 2
    created = await _create(client, project, type="dynamic", rule=RULE)
    assert created["state"] == "loading" and created["progress"] == {"done": 0, "total": None}
    url = f"{LISTS}/{created['id']}"
    now = time.time_ns() // 1000
    seen = []
    while await asyncio.to_thread(backfill.step, now):
        seen.append((await client.get(url, headers=bearer(project.sk))).json().get("progress"))
    assert seen == [
        {"done": 0, "total": 5},
        {"done": 2, "total": 5},
        {"done": 4, "total": 5},
        None,
    ]
    ready = (await client.get(url, headers=bearer(project.sk))).json()
    assert ready["state"] == "ready" and ready["users_count"] == 2 and "progress" not in ready
    listed = (await client.get(LISTS, headers=bearer(project.sk))).json()["results"]
    assert listed[0] == ready
