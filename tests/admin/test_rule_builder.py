"""The list editor's rule builder, server side: what it is given (the schema's paths with
their types, the operators per type), escaped; a rule as it writes one is saved as is."""

from __future__ import annotations

import html
import json
import re

import httpx

from tests.admin.conftest import csrf_of
from tests.admin.test_escaping import PAYLOADS, assert_inert
from tests.conftest import Project, bearer, drain
from tidings.bootstrap import Services
from tidings.domain.rules.model import OPERATORS


def _builder(page: str) -> dict[str, object]:
    found = re.search(r'data-builder="([^"]*)"', page)
    assert found, page
    return dict(json.loads(html.unescape(found.group(1))))


async def test_the_builder_gets_the_schema_paths_with_types_escaped(
    owner: httpx.AsyncClient, client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    await client.post(
        "/api/client/identify",
        json={
            "external_id": "u1",
            "data": {
                "plan": "pro",
                "visits": 3,
                "vip": True,
                "tags": ["a"],
                "address": {"city": "Leeds"},
                PAYLOADS[1]: PAYLOADS[2],
            },
        },
        headers=bearer(project.pk),
    )
    await drain(services)
    page = await owner.get(f"/admin/p/{project.id}/lists/new")
    assert page.status_code == 200
    assert '<script src="/admin/static/rule_builder.js" defer>' in page.text
    assert_inert(page.text)
    config = _builder(page.text)
    paths = {p["path"]: p["type"] for p in config["paths"]}  # type: ignore[attr-defined]
    assert paths["email"] == "string" and paths["created_at"] == "date"
    assert paths["data.plan"] == "string" and paths["data.visits"] == "number"
    assert paths["data.vip"] == "boolean" and paths["data.tags"] == "array"
    assert paths["data.address.city"] == "string"
    assert "data.address" not in paths  # an object is not compared as a whole
    assert paths[f"data.{PAYLOADS[1]}"] == "string"  # escaped in the page, intact in the data
    assert config["operators"] == {k: list(v) for k, v in OPERATORS.items()}


async def test_a_rule_as_the_builder_writes_it_is_saved(
    owner: httpx.AsyncClient, project: Project
) -> None:
    rule = {
        "type": "wrapper",
        "group": "parent",
        "operator": "or",
        "children": [
            {
                "type": "string",
                "group": "user",
                "path": "data.plan",
                "operator": "=",
                "value": "pro",
            },
            {
                "type": "wrapper",
                "group": "parent",
                "operator": "none",
                "children": [
                    {
                        "type": "number",
                        "group": "user",
                        "path": "data.visits",
                        "operator": ">",
                        "value": 3,
                    },
                    {
                        "type": "array",
                        "group": "user",
                        "path": "data.tags",
                        "operator": "any",
                        "value": ["a", "b"],
                    },
                    {
                        "type": "date",
                        "group": "user",
                        "path": "created_at",
                        "operator": "<",
                        "value": "30 days ago",
                    },
                    {"type": "boolean", "group": "user", "path": "data.vip", "operator": "is set"},
                ],
            },
        ],
    }
    form = await owner.get(f"/admin/p/{project.id}/lists/new")
    saved = await owner.post(
        f"/admin/p/{project.id}/lists/new",
        data={
            "csrf": csrf_of(form.text),
            "name": "Built",
            "type": "dynamic",
            "rule": json.dumps(rule),
            "tags": "",
        },
    )
    assert saved.status_code == 303, saved.text
    list_id = int(saved.headers["location"].rsplit("/", 1)[-1])
    edit = await owner.get(f"/admin/p/{project.id}/lists/{list_id}/edit")  # the saved rule
    assert edit.status_code == 200
    shown = re.search(r'<textarea data-rule-json id="f-rule"[^>]*>([^<]*)</textarea>', edit.text)
    assert shown and json.loads(html.unescape(shown.group(1))) == rule
