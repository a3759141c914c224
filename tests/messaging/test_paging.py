"""Messaging's lists page both ways: following ``nextCursor`` forwards, then
``prevCursor`` backwards, gives back the same pages (newest first), and a forged cursor
is a 400."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.test_validation import assert_problem
from tests.conftest import Project, bearer
from tests.messaging.helpers import API, post


async def _pages(
    client: httpx.AsyncClient, project: Project, path: str, limit: int
) -> list[dict[str, Any]]:
    pages, cursor = [], None
    while True:
        query = f"?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        response = await client.get(API + path + query, headers=bearer(project.sk))
        assert response.status_code == 200, response.text
        pages.append(response.json())
        cursor = pages[-1]["nextCursor"]
        if cursor is None:
            return pages


async def _walk_back(
    client: httpx.AsyncClient, project: Project, path: str, limit: int, last: dict[str, Any]
) -> list[list[int]]:
    back, page = [], last
    while page["prevCursor"] is not None:
        response = await client.get(
            API + path + f"?limit={limit}&cursor={page['prevCursor']}", headers=bearer(project.sk)
        )
        assert response.status_code == 200, response.text
        page = response.json()
        back.append([r["id"] for r in page["results"]])
    return back


async def test_paging_forwards_then_backwards_gives_the_same_pages(
    client: httpx.AsyncClient, project: Project
) -> None:
    for n in range(7):
        await post(
            client,
            project,
            "/providers",
            {"type": "logger", "name": f"p{n}", "group": "email"},
        )
        campaign = await post(
            client,
            project,
            "/campaigns",
            {"type": "trigger", "name": f"c{n}", "channel": "email"},
        )
        await post(
            client,
            project,
            "/templates",
            {
                "campaign_id": campaign["id"],
                "locale": "en",
                "data": {"from": {"address": "a@example.com"}, "subject": "s", "text": "t"},
            },
        )
    for path in ("/providers", "/campaigns", "/templates"):
        pages = await _pages(client, project, path, 3)
        forward = [[r["id"] for r in p["results"]] for p in pages]
        everything = [i for ids in forward for i in ids]
        assert everything == sorted(everything, reverse=True), path
        assert len(everything) >= 7 and [len(ids) for ids in forward][:2] == [3, 3], path
        assert pages[0]["prevCursor"] is None, path
        assert pages[-1]["nextCursor"] is None, path
        back = await _walk_back(client, project, path, 3, pages[-1])
        assert back == forward[:-1][::-1], path
        # Forwards again from a page reached backwards: the next page is the next page.
        response = await client.get(
            API + path + f"?limit=3&cursor={pages[1]['prevCursor']}", headers=bearer(project.sk)
        )
        first_again = response.json()
        assert [r["id"] for r in first_again["results"]] == forward[0], path
        assert first_again["prevCursor"] is None, path
        assert first_again["nextCursor"] == pages[0]["nextCursor"], path


async def test_a_forged_cursor_is_a_400(client: httpx.AsyncClient, project: Project) -> None:
    for cursor in ("WyJ4IiwxXQ", "not*base64", "WzFd"):  # ["x",1]; junk; the old [1]
        response = await client.get(API + f"/campaigns?cursor={cursor}", headers=bearer(project.sk))
        assert assert_problem(response, 400, "parameter_invalid_format")["param"] == "cursor"
