"""Users: the search, a profile with its timeline, and the live stream of the project's
events. Lists of rows are keyset-paged (cursors), never counted."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from tidings.admin.render import when
from tidings.admin.web import Admin, Page, Refusal, json_response, route
from tidings.domain.errors import InvalidRequest
from tidings.store.admin_views import StreamEvent

__all__ = ["STREAM_WINDOW", "people_routes"]

PAGE_SIZE = 25
TIMELINE_SIZE = 25
STREAM_SIZE = 50
# The live stream shows events whose time is within this window (an index range read);
# older events sent late are in their user's timeline.
STREAM_WINDOW = 24 * 3600 * 1_000_000
STREAM_STEPS = (5 * 60 * 1_000_000, 3600 * 1_000_000, STREAM_WINDOW)


def users(page: Page) -> Response:
    q = page.query("q").strip()[:255]
    cursor = page.query("cursor") or None
    try:
        found = page.admin.users.list_profiles(
            page.pid, limit=PAGE_SIZE, cursor=cursor, q=q or None
        )
    except InvalidRequest:
        return page.redirect(page.url("/users", q=q))
    return page.render(
        "users.html",
        nav="users",
        q=q,
        rows=found.results,
        next_url=page.url("/users", q=q, cursor=found.next_cursor) if found.next_cursor else None,
        prev_url=page.url("/users", q=q, cursor=found.prev_cursor) if found.prev_cursor else None,
        first=cursor is None,
    )


def profile(page: Page) -> Response:
    profile_id = page.param("profile_id")[:64]
    found = page.admin.services.profiles.get_profile(page.pid, profile_id)
    if found is None:
        raise Refusal(
            404,
            "No such user",
            "This project has no such user (it may have been merged or erased).",
        )
    cursor = page.query("cursor") or None
    try:
        timeline = page.admin.users.list_events(
            page.pid, profile_id, limit=TIMELINE_SIZE, cursor=cursor
        )
    except InvalidRequest:
        return page.redirect(page.url(f"/users/{profile_id}"))
    memberships = page.admin.views.lists_of(page.pid, profile_id)
    return page.render(
        "profile.html",
        nav="users",
        user=found,
        events=timeline.results,
        memberships=memberships,
        older_url=page.url(f"/users/{profile_id}", cursor=timeline.next_cursor)
        if timeline.next_cursor
        else None,
        newest_url=page.url(f"/users/{profile_id}") if cursor else None,
    )


def _after(raw: str) -> tuple[int, str] | None:
    moment, _, event_id = raw.partition(":")
    if not moment.isdigit() or not event_id or len(event_id) > 64:
        return None
    return int(moment), event_id


def _present(page: Page, event: StreamEvent, timezone: str) -> dict[str, Any]:
    return {
        "id": event.id,
        "name": event.name,
        "who": event.external_id or event.anonymous_id or event.profile_id,
        "profile_url": page.url(f"/users/{event.profile_id}"),
        "time": when(event.created_at, timezone),
        "cursor": f"{event.created_at}:{event.id}",
        "data": event.data,
    }


def _recent(page: Page, after: tuple[int, str] | None = None) -> list[StreamEvent]:
    """The newest events: first of the last few minutes, widening to the whole window
    only when those are too few, so that a busy project's page reads a short range."""
    now = page.admin.clock()
    for window in STREAM_STEPS:
        rows = page.admin.views.recent_events(
            page.pid, since=now - window, after=after, limit=STREAM_SIZE
        )
        if len(rows) >= STREAM_SIZE:
            break
    return rows


def stream(page: Page) -> Response:
    rows = _recent(page)
    timezone = page.context()["timezone"]
    return page.render(
        "events.html",
        nav="events",
        rows=[_present(page, e, timezone) for e in rows],
        window_hours=STREAM_WINDOW // 3_600_000_000,
    )


def feed(page: Page) -> Response:
    """The stream's new events since the newest one shown (for static/admin.js)."""
    rows = _recent(page, _after(page.query("after")))
    timezone = page.context()["timezone"]
    return json_response({"events": [_present(page, e, timezone) for e in rows]})


def people_routes(admin: Admin) -> list[Route]:
    return [
        route("/p/{pid}/users", users, admin),
        route("/p/{pid}/users/{profile_id}", profile, admin),
        route("/p/{pid}/events", stream, admin),
        route("/p/{pid}/events/feed", feed, admin, json=True),
    ]
