"""Lists: create and edit with the rule checked in place, the live count, CSV import."""

from __future__ import annotations

import json

import httpx

from tests.admin.conftest import csrf_of
from tests.conftest import Project, bearer, drain
from tidings.bootstrap import Services
from tidings.store.lists import ListStore

RULE = {
    "type": "wrapper",
    "group": "parent",
    "operator": "and",
    "children": [
        {"type": "string", "group": "user", "path": "data.plan", "operator": "=", "value": "pro"}
    ],
}


async def _people(client: httpx.AsyncClient, services: Services, project: Project) -> None:
    for n, plan in enumerate(["pro", "pro", "free"]):
        response = await client.post(
            "/api/client/identify",
            json={"external_id": f"p{n}", "email": f"p{n}@example.com", "data": {"plan": plan}},
            headers=bearer(project.pk),
        )
        assert response.status_code in (200, 202, 204)
    await drain(services)


async def _new(owner: httpx.AsyncClient, project: Project, **fields: str) -> httpx.Response:
    form = await owner.get(f"/admin/p/{project.id}/lists/new")
    data = {"csrf": csrf_of(form.text), "name": "", "type": "dynamic", "rule": "", "tags": ""}
    return await owner.post(f"/admin/p/{project.id}/lists/new", data={**data, **fields})


async def test_the_lists_page_says_what_to_do_when_there_are_none(
    owner: httpx.AsyncClient, project: Project
) -> None:
    page = await owner.get(f"/admin/p/{project.id}/lists")
    assert "No lists yet." in page.text and "Create a list" in page.text


async def test_a_dynamic_list_is_created_from_its_rule_and_computed(
    owner: httpx.AsyncClient, client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    await _people(client, services, project)
    made = await _new(owner, project, name="Pro users", rule=json.dumps(RULE), tags="paying, vip")
    assert made.status_code == 303
    list_id = int(made.headers["location"].rsplit("/", 1)[1])
    stored = ListStore(services.db.writer, services.db.reader).get(project.id, list_id)
    assert stored is not None and stored.rule is not None and stored.tags == ["paying", "vip"]
    assert services.segments is not None
    while services.segments.backfill.step(2_000_000_000_000_000):
        pass  # the worker's back-fill, now rather than on its rounds
    page = await owner.get(made.headers["location"])
    assert "<h1>Pro users</h1>" in page.text and "2 users" in page.text
    assert page.text.count(">p") >= 2 and ">p2<" not in page.text
    index = await owner.get(f"/admin/p/{project.id}/lists")
    assert ">Pro users</a>" in index.text


async def test_bad_json_and_bad_rules_are_shown_where_they_are(
    owner: httpx.AsyncClient, services: Services, project: Project
) -> None:
    broken = await _new(owner, project, name="X", rule='{"type": "wrapper",\n  "group": }')
    assert broken.status_code == 400
    assert "Not valid JSON at line 2, column 12" in broken.text
    wrong = dict(RULE, children=[dict(RULE["children"][0], operator="==")])  # type: ignore[arg-type]
    invalid = await _new(owner, project, name="X", rule=json.dumps(wrong))
    assert invalid.status_code == 400
    assert "<code>rule.children[0].operator</code>" in invalid.text
    assert "The list was not saved" in invalid.text
    unnamed = await _new(owner, project, name=" ", rule=json.dumps(RULE))
    assert unnamed.status_code == 400 and "A list needs a name." in unnamed.text
    lists = ListStore(services.db.writer, services.db.reader).page(project.id, limit=10)
    assert lists.results == []  # nothing half-written


async def test_the_live_count_checks_the_rule_and_counts_matching_users(
    owner: httpx.AsyncClient, client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    await _people(client, services, project)
    form = await owner.get(f"/admin/p/{project.id}/lists/new")
    url = f"/admin/p/{project.id}/lists/preview"
    headers = {"X-CSRF-Token": csrf_of(form.text)}
    counted = await owner.post(url, json={"rule": json.dumps(RULE)}, headers=headers)
    assert counted.json() == {"errors": [], "count": {"matched": 2, "scanned": 3, "exact": True}}
    bad = await owner.post(url, json={"rule": '{"type": "nothing"}'}, headers=headers)
    assert bad.json()["errors"] and "count" not in bad.json()
    refused = await owner.post(url, json={"rule": json.dumps(RULE)})  # no CSRF token
    assert refused.status_code == 403 and refused.json()["error"] == "Form refused"


async def test_a_list_is_renamed_its_rule_changed_and_deleted(
    owner: httpx.AsyncClient, services: Services, project: Project
) -> None:
    made = await _new(owner, project, name="Before", rule=json.dumps(RULE))
    url = made.headers["location"]
    form = await owner.get(f"{url}/edit")
    assert "Delete this list" in form.text
    token = csrf_of(form.text)
    changed = dict(RULE, children=[dict(RULE["children"][0], value="team")])  # type: ignore[arg-type]
    saved = await owner.post(
        f"{url}/edit",
        data={"csrf": token, "name": "After", "rule": json.dumps(changed), "tags": ""},
    )
    assert saved.status_code == 303 and saved.headers["location"] == f"{url}?done=saved"
    store = ListStore(services.db.writer, services.db.reader)
    list_id = int(url.rsplit("/", 1)[1])
    row = store.get(project.id, list_id)
    assert row is not None and row.name == "After" and row.version == 2
    gone = await owner.post(f"{url}/delete", data={"csrf": token})
    assert gone.status_code == 303
    assert store.get(project.id, list_id) is None
    assert (await owner.get(url)).status_code == 404


async def test_a_csv_import_adds_known_users_and_reports_the_rest(
    owner: httpx.AsyncClient, client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    await _people(client, services, project)
    made = await _new(owner, project, name="Imported", type="static")
    url = made.headers["location"]
    page = await owner.get(url)
    assert "Import users from CSV" in page.text and "No members yet." in page.text
    token = csrf_of(page.text)
    form = await owner.post(
        f"{url}/import", data={"csrf": token, "csv": "email\np0@example.com\nnobody@example.com\n"}
    )
    assert "1 added, 0 already members, 1 not found, 0 invalid." in form.text
    assert "Rows with unknown users: 3" in form.text
    # The page's script sends a file in chunks; rows are numbered as in the file.
    chunk = await owner.post(
        f"{url}/import?offset=2000",
        content=b"external_id\np1\nghost\n",
        headers={"Content-Type": "text/csv", "X-CSRF-Token": token},
    )
    assert chunk.json()["added"] == 1 and chunk.json()["not_found_rows"] == [2003]
    broken = await owner.post(
        f"{url}/import",
        content=b"name\nx\n",
        headers={"Content-Type": "text/csv", "X-CSRF-Token": token},
    )
    assert broken.status_code == 400 and "no external_id or email column" in broken.json()["error"]
    unsigned = await owner.post(
        f"{url}/import", content=b"external_id\np2\n", headers={"Content-Type": "text/csv"}
    )
    assert unsigned.status_code == 403
    members = await owner.get(url)
    assert "2 users" in members.text and ">p0</a>" in members.text and ">p2</a>" not in members.text
