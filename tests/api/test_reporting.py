"""The reporting API: GET /events, /events/aggregations, the exports and list history."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import httpx
import pytest

from tests.api.test_validation import assert_problem
from tests.conftest import Project, bearer, drain
from tidings.bootstrap import Services

R = "/api/client"
RANGE = {"from": "2026-01-01T00:00:00Z", "to": "2026-01-04T00:00:00Z"}


async def track(
    client: httpx.AsyncClient, project: Project, services: Services, items: list[dict[str, Any]]
) -> None:
    for start in range(0, len(items), 100):
        response = await client.post(
            f"{R}/events", json=items[start : start + 100], headers=bearer(project.pk)
        )
        assert response.status_code == 204, response.text
    await drain(services)


async def read(
    client: httpx.AsyncClient, project: Project, path: str, params: dict[str, Any]
) -> dict[str, Any]:
    """GET ``path`` with the secret key: the JSON body of a 200."""
    response = await client.get(f"{R}{path}", params=params, headers=bearer(project.sk))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ev(name: str, user: str, when: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "external_id": user, "created_at": when, **extra}


async def pages(
    client: httpx.AsyncClient, project: Project, params: dict[str, Any]
) -> tuple[list[dict[str, Any]], int]:
    seen: list[dict[str, Any]] = []
    cursor = None
    count = 0
    while True:
        query = dict(params)
        if cursor:
            query["cursor"] = cursor
        response = await client.get(f"{R}/events", params=query, headers=bearer(project.sk))
        assert response.status_code == 200, response.text
        body = response.json()
        seen += body["results"]
        count += 1
        cursor = body["nextCursor"]
        if cursor is None:
            return seen, count


async def test_events_in_a_range_with_filters_and_paging(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    await track(
        client,
        project,
        services,
        [
            ev("Before", "a", "2025-12-31T23:59:59.999Z"),
            ev("Opened", "a", "2026-01-01T00:00:00Z", data={"campaign_id": 7}),
            ev("Opened", "b", "2026-01-02T10:00:00+10:00", data={"campaign_id": 8}),
            ev("Clicked", "a", "2026-01-03T12:00:00Z", data={"campaign_id": "7"}),
            ev("AtTheEnd", "a", "2026-01-04T00:00:00Z"),
        ],
    )
    rows, _ = await pages(client, project, {**RANGE, "direction": "asc", "limit": 2})
    assert [r["name"] for r in rows] == ["Opened", "Opened", "Clicked"]  # to is exclusive
    first = rows[0]
    assert first["id"].startswith("evt_") and first["created_at"] == "2026-01-01T00:00:00.000Z"
    assert first["user"] == {"external_id": "a", "anonymous_id": None}
    assert first["campaign_id"] == 7 and "data" not in first
    assert rows[2]["campaign_id"] is None  # a string is not a campaign id
    desc, _ = await pages(client, project, {**RANGE, "limit": 100})
    assert [r["id"] for r in desc] == [r["id"] for r in reversed(rows)]
    only, _ = await pages(
        client, project, {**RANGE, "event_name[]": "Opened", "external_id[]": "b"}
    )
    assert [(r["name"], r["user"]["external_id"]) for r in only] == [("Opened", "b")]
    by_campaign, _ = await pages(
        client, project, {**RANGE, "campaign_id[]": ["7", "9"], "include_payload": "true"}
    )
    assert [(r["name"], r["data"]) for r in by_campaign] == [("Opened", {"campaign_id": 7})]
    nobody, _ = await pages(client, project, {**RANGE, "external_id[]": "nobody"})
    assert nobody == []


@pytest.mark.parametrize("direction", ["asc", "desc"])
async def test_prev_cursor_goes_back_exactly(
    client: httpx.AsyncClient, services: Services, project: Project, direction: str
) -> None:
    await track(
        client,
        project,
        services,
        [ev(f"E{i}", "u", f"2026-01-01T00:00:{i // 2:02d}Z") for i in range(9)],  # ties
    )
    params = {**RANGE, "limit": 4, "direction": direction}
    first = await read(client, project, "/events", params)
    assert first["prevCursor"] is None
    second = await read(client, project, "/events", {**params, "cursor": first["nextCursor"]})
    back = await read(client, project, "/events", {**params, "cursor": second["prevCursor"]})
    assert [r["id"] for r in back["results"]] == [r["id"] for r in first["results"]]
    assert back["prevCursor"] is None and back["nextCursor"] is not None


async def test_paging_never_skips_or_repeats_while_events_arrive(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    # Ties on created_at, and new events before, at and after the cursor's position.
    await track(
        client,
        project,
        services,
        [ev("Seed", f"u{i % 3}", f"2026-01-02T00:00:{i // 3:02d}Z") for i in range(30)],
    )
    for direction in ("asc", "desc"):
        with services.db.reader.connect() as conn:
            import sqlalchemy as sa

            from tidings.store.tables import events

            before = set(conn.execute(sa.select(events.c.id)).scalars())
        seen: list[str] = []
        cursor = None
        step = 0
        while True:
            params: dict[str, Any] = {**RANGE, "limit": 4, "direction": direction}
            if cursor:
                params["cursor"] = cursor
            body = await read(client, project, "/events", params)
            seen += [r["id"] for r in body["results"]]
            cursor = body["nextCursor"]
            if cursor is None:
                break
            step += 1
            await track(
                client,
                project,
                services,
                [
                    ev("Late", "x", "2026-01-02T00:00:00Z"),  # behind (asc) or ahead (desc)
                    ev("Late", "x", f"2026-01-02T00:00:{min(step, 9):02d}Z"),  # a tie
                    ev("Late", "x", "2026-01-03T00:00:00Z"),
                ],
            )
        assert len(seen) == len(set(seen)), direction  # nothing twice
        assert before <= set(seen), direction  # nothing that was there is missed


async def test_aggregations_group_by_and_totals(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    await track(
        client,
        project,
        services,
        [
            ev("Opened", "a", "2026-01-01T01:00:00Z", data={"campaign_id": 7}),
            ev("Opened", "a", "2026-01-01T02:00:00Z", data={"campaign_id": 7}),
            ev("Opened", "b", "2026-01-01T23:59:59+00:00"),
            ev("Opened", "b", "2026-01-02T08:00:00+10:00"),  # still Jan 1st in UTC
            ev("Clicked", "b", "2026-01-02T00:00:00Z", data={"campaign_id": 7}),
        ],
    )
    total = await read(client, project, "/events/aggregations", RANGE)
    assert total["results"] == [
        {
            "count": 5,
            "unique_user_count": 2,
            "first_seen_at": "2026-01-01T01:00:00.000Z",
            "last_seen_at": "2026-01-02T00:00:00.000Z",
        }
    ]
    grouped = await read(
        client, project, "/events/aggregations", {**RANGE, "group_by[]": ["event_name", "day"]}
    )
    assert grouped["source"] == "rollups"
    assert [
        (r["event_name"], r["day"], r["count"], r["unique_user_count"]) for r in grouped["results"]
    ] == [
        ("Clicked", "2026-01-02", 1, 1),
        ("Opened", "2026-01-01", 4, 2),
    ]
    by_campaign = await read(
        client, project, "/events/aggregations", {**RANGE, "group_by": "campaign"}
    )
    assert by_campaign["source"] == "events"
    assert [(r["campaign_id"], r["count"]) for r in by_campaign["results"]] == [(None, 2), (7, 3)]
    by_user = await read(
        client,
        project,
        "/events/aggregations",
        {**RANGE, "group_by[]": "user", "event_name[]": "Opened"},
    )
    assert by_user["source"] == "events"  # a user-day says who, not how many times
    by_day = await read(client, project, "/events/aggregations", {**RANGE, "group_by": "day"})
    assert by_day["source"] == "user_days"
    assert [
        (r["day"], r["count"], r["unique_user_count"], r["first_seen_at"])
        for r in by_day["results"]
    ] == [
        ("2026-01-01", 4, 2, "2026-01-01T01:00:00.000Z"),
        ("2026-01-02", 1, 1, "2026-01-02T00:00:00.000Z"),
    ]
    assert [(r["user"]["external_id"], r["count"]) for r in by_user["results"]] == [
        ("a", 2),
        ("b", 2),
    ] or sorted((r["user"]["external_id"], r["count"]) for r in by_user["results"]) == [
        ("a", 2),
        ("b", 2),
    ]
    partial_day = await read(
        client,
        project,
        "/events/aggregations",
        {"from": "2026-01-01T01:30:00Z", "to": "2026-01-03T00:00:00Z"},
    )
    assert partial_day["source"] == "events" and partial_day["results"][0]["count"] == 4
    empty = await read(
        client,
        project,
        "/events/aggregations",
        {"from": "2027-01-01T00:00:00Z", "to": "2027-01-02T00:00:00Z"},
    )
    assert empty["results"] == [
        {"count": 0, "unique_user_count": 0, "first_seen_at": None, "last_seen_at": None}
    ]


def bad(path: str, params: dict[str, Any], code: str, param: str, status: int = 400) -> Any:
    """One bad request of the table below; ``params`` on top of RANGE (None drops one)."""
    merged = {k: v for k, v in {**RANGE, **params}.items() if v is not None}
    return pytest.param(path, merged, status, code, param, id=f"{path}-{param}-{code}")


E, AGG, EXPORT = "/events", "/events/aggregations", "/events/export"
FORMAT, MISSING = "parameter_invalid_format", "parameter_missing"


@pytest.mark.parametrize(
    ("path", "params", "status", "code", "param"),
    [
        bad(E, {"from": None}, MISSING, "from"),
        bad(E, {"to": None}, MISSING, "to"),
        bad(E, {"from": "yesterday"}, FORMAT, "from"),
        bad(E, {"from": "2026-01-01"}, FORMAT, "from"),
        bad(E, {"from": "2026-01-01T00:00:00"}, FORMAT, "from"),
        bad(E, {"from": "2026-02-01T00:00:00Z"}, "validation_failed", "from", 422),
        bad(E, {"limit": "101"}, FORMAT, "limit"),
        bad(E, {"direction": "up"}, FORMAT, "direction"),
        bad(E, {"cursor": "bm9wZQ"}, FORMAT, "cursor"),
        bad(E, {"cursor": "!!"}, FORMAT, "cursor"),
        bad(E, {"campaign_id[]": "x"}, FORMAT, "campaign_id"),
        bad(E, {"event_name[]": " "}, "parameter_invalid_empty", "event_name"),
        bad(AGG, {"from": None}, MISSING, "from"),
        bad(AGG, {"group_by[]": "week"}, FORMAT, "group_by"),
        bad(
            AGG,
            {"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
            "validation_failed",
            "to",
            422,
        ),
        bad(EXPORT, {"to": None}, MISSING, "to"),
        bad(EXPORT, {"format": "xml"}, FORMAT, "format"),
    ],
)
async def test_bad_filters_answer_in_the_envelope(
    client: httpx.AsyncClient,
    project: Project,
    path: str,
    params: dict[str, Any],
    status: int,
    code: str,
    param: str,
) -> None:
    response = await client.get(f"{R}{path}", params=params, headers=bearer(project.sk))
    body = assert_problem(response, status, code)
    assert body["param"] == param
    ok = await client.get(f"{R}/events", params=RANGE, headers=bearer(project.sk))
    assert ok.status_code == 200  # reads still work after


async def test_a_cursor_is_only_good_for_its_own_filter(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    await track(
        client,
        project,
        services,
        [ev("E", "u", f"2026-01-01T00:00:0{i}Z") for i in range(3)],
    )
    body = await read(client, project, "/events", {**RANGE, "limit": 1})
    other = await client.get(
        f"{R}/events",
        params={**RANGE, "limit": 1, "event_name[]": "F", "cursor": body["nextCursor"]},
        headers=bearer(project.sk),
    )
    assert_problem(other, 400, "parameter_invalid_format")
    flipped = await client.get(
        f"{R}/events",
        params={**RANGE, "direction": "asc", "cursor": body["nextCursor"]},
        headers=bearer(project.sk),
    )
    assert_problem(flipped, 400, "parameter_invalid_format")


async def test_reads_need_a_secret_key(client: httpx.AsyncClient, project: Project) -> None:
    for path in ("/events", "/events/aggregations", "/events/export", "/users/export"):
        response = await client.get(f"{R}{path}", params=RANGE, headers=bearer(project.pk))
        assert_problem(response, 401, "authentication_required")


async def test_exports_stream_every_row_as_ndjson_and_csv(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    items = [
        ev(
            "E",
            f"u{i % 7}",
            f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z",
            data={"i": i, "s": 'a,"b"\n'},
        )
        for i in range(450)
    ]
    await track(client, project, services, items)
    response = await client.get(f"{R}/events/export", params=RANGE, headers=bearer(project.sk))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert [line["data"]["i"] for line in lines] == list(range(450))
    bare = await client.get(
        f"{R}/events/export",
        params={**RANGE, "include_payload": "false"},
        headers=bearer(project.sk),
    )
    assert "data" not in json.loads(bare.text.splitlines()[0])
    assert set(lines[0]) == {
        "id",
        "name",
        "created_at",
        "external_id",
        "anonymous_id",
        "campaign_id",
        "data",
    }
    response = await client.get(
        f"{R}/events/export", params={**RANGE, "format": "csv"}, headers=bearer(project.sk)
    )
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 450 and json.loads(rows[3]["data"]) == {"i": 3, "s": 'a,"b"\n'}
    users = await client.get(
        f"{R}/users/export", params={"format": "csv"}, headers=bearer(project.sk)
    )
    assert users.status_code == 200
    exported = list(csv.DictReader(io.StringIO(users.text)))
    assert sorted(r["external_id"] for r in exported) == [f"u{i}" for i in range(7)]
    ndjson = await client.get(f"{R}/users/export", headers=bearer(project.sk))
    assert len(ndjson.text.splitlines()) == 7
    created = await client.post(
        f"{R}/lists", json={"name": "L", "type": "static"}, headers=bearer(project.sk)
    )
    list_id = created.json()["id"]
    added = await client.post(
        f"{R}/lists/{list_id}/users",
        json={"external_ids": ["u2", "u5"]},
        headers=bearer(project.sk),
    )
    assert added.status_code == 200, added.text
    members = await client.get(
        f"{R}/users/export", params={"list_id": list_id}, headers=bearer(project.sk)
    )
    exported_ids = sorted(json.loads(line)["external_id"] for line in members.text.splitlines())
    assert exported_ids == ["u2", "u5"]
    huge = await client.get(
        f"{R}/users/export", params={"list_id": 2147483648}, headers=bearer(project.sk)
    )
    assert_problem(huge, 400, "parameter_invalid_format")
    missing = await client.get(
        f"{R}/users/export", params={"list_id": 999}, headers=bearer(project.sk)
    )
    assert_problem(missing, 404, "resource_missing")


async def test_events_export_streams_in_pages(services: Services, project: Project) -> None:
    """The export reads page after page (keyset), never the whole filter at once."""
    from tidings.reporting import queries
    from tidings.reporting.filters import EventFilter

    with services.db.writer.begin() as conn:
        import sqlalchemy as sa

        from tidings.store.tables import events

        conn.execute(
            sa.insert(events),
            [
                {
                    "id": f"evt_{i:026d}",
                    "project_id": project.id,
                    "profile_id": "prf_x",
                    "message_id": f"m{i}",
                    "name": "E",
                    "external_id": None,
                    "anonymous_id": "x",
                    "data": {},
                    "created_at": 1_767_225_600_000_000 + i // 3,  # ties
                    "received_at": 0,
                    "context": None,
                }
                for i in range(25)
            ],
        )
    f = EventFilter.build(project.id, RANGE["from"], RANGE["to"])
    got = [r["id"] for r in queries.iter_events(services.db.reader, f, page_size=4)]
    assert got == [f"evt_{i:026d}" for i in range(25)]


async def test_list_history_is_the_size_per_day(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    import sqlalchemy as sa

    from tidings.store.tables import list_changes, lists

    day = 86_400_000_000
    jan1 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
    with services.db.writer.begin() as conn:
        list_id = conn.execute(
            sa.insert(lists)
            .values(
                project_id=project.id,
                name="L",
                type="static",
                state="ready",
                version=1,
                users_count=1,
                tags=[],
                created_at=jan1,
                updated_at=jan1,
            )
            .returning(lists.c.id)
        ).scalar_one()
        changes = [
            ("p1", "entered", jan1 - day),
            ("p2", "entered", jan1 + 5),
            ("p3", "entered", jan1 + day + 5),
            ("p2", "left", jan1 + day + 6),
            ("p1", "left", jan1 + 3 * day),  # after the range
        ]
        conn.execute(
            sa.insert(list_changes),
            [
                {
                    "project_id": project.id,
                    "list_id": list_id,
                    "profile_id": p,
                    "change": c,
                    "list_version": 1,
                    "created_at": t,
                }
                for p, c, t in changes
            ],
        )
    response = await client.get(
        f"{R}/lists/{list_id}/history",
        params={"from": RANGE["from"], "to": "2026-01-03T00:00:00Z"},
        headers=bearer(project.sk),
    )
    assert response.status_code == 200, response.text
    assert response.json()["results"] == [
        {"day": "2026-01-01", "size": 2, "entered": 1, "left": 0},
        {"day": "2026-01-02", "size": 2, "entered": 1, "left": 1},
    ]
    missing = await client.get(
        f"{R}/lists/{list_id + 1}/history", params=RANGE, headers=bearer(project.sk)
    )
    assert_problem(missing, 404, "resource_missing")
    bad = await client.get(
        f"{R}/lists/{list_id}/history", params={"from": RANGE["from"]}, headers=bearer(project.sk)
    )
    assert_problem(bad, 400, "parameter_missing")


async def test_aggregations_follow_merges_erasures_and_retries(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    """Through the running pipeline: a retried message id counts once, an alias folds the
    anonymous user into the known one, an erased user's events stop counting."""
    await track(
        client,
        project,
        services,
        [
            {"name": "Viewed", "anonymous_id": "anon", "created_at": "2026-01-01T01:00:00Z"},
            ev("Viewed", "known", "2026-01-01T02:00:00Z", message_id="m1"),
            ev("Viewed", "gone", "2026-01-01T03:00:00Z"),
        ],
    )
    await track(
        client, project, services, [ev("Viewed", "known", "2026-01-01T02:00:00Z", message_id="m1")]
    )
    params = {**RANGE, "group_by[]": ["event_name", "day"]}

    async def counts() -> tuple[int, int, str]:
        body = await read(client, project, "/events/aggregations", params)
        (row,) = body["results"]
        return row["count"], row["unique_user_count"], row["first_seen_at"]

    assert await counts() == (3, 3, "2026-01-01T01:00:00.000Z")
    alias = await client.post(
        f"{R}/alias",
        json={"anonymous_id": "anon", "external_id": "known"},
        headers=bearer(project.pk),
    )
    assert alias.status_code == 204
    await drain(services)
    assert await counts() == (3, 2, "2026-01-01T01:00:00.000Z")
    erased = await client.delete(f"{R}/users/known", headers=bearer(project.sk))
    assert erased.status_code == 204
    assert await counts() == (1, 1, "2026-01-01T03:00:00.000Z")
    by_user = await read(client, project, "/events/aggregations", {**RANGE, "group_by": "user"})
    assert [r["user"]["external_id"] for r in by_user["results"]] == ["gone"]


async def test_csv_exports_defuse_spreadsheet_formulas(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    hostile = ['=HYPERLINK("x")', "+1 555", "-2+3", "@SUM(A1)", "\tTAB", "\rCR"]
    await track(
        client,
        project,
        services,
        [ev(value, value, f"2026-01-01T00:00:0{i}Z") for i, value in enumerate(hostile)]
        + [ev("plain", "a-b", "2026-01-01T00:00:09Z")],
    )
    events = await client.get(
        f"{R}/events/export", params={**RANGE, "format": "csv"}, headers=bearer(project.sk)
    )
    rows = list(csv.DictReader(io.StringIO(events.text)))
    assert [(r["name"], r["external_id"]) for r in rows] == [
        *(("'" + value, "'" + value) for value in hostile),
        ("plain", "a-b"),  # only the first character counts
    ]
    users = await client.get(
        f"{R}/users/export", params={"format": "csv"}, headers=bearer(project.sk)
    )
    exported = sorted(r["external_id"] for r in csv.DictReader(io.StringIO(users.text)))
    assert exported == sorted(["'" + value for value in hostile] + ["a-b"])
    # NDJSON is data, not a spreadsheet: the values as they are.
    ndjson = await client.get(f"{R}/events/export", params=RANGE, headers=bearer(project.sk))
    assert [json.loads(line)["name"] for line in ndjson.text.splitlines()] == [*hostile, "plain"]
