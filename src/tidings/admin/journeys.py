"""Journey pages: the list, and one journey with its step graph drawn as SVG (laid out
by ``journey_layout.layout``), its per-step counts, and publish/pause buttons."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from tidings.admin.journey_checks import by_step
from tidings.admin.journey_layout import BOX_H, BOX_W, layout
from tidings.admin.web import Admin, Page, Refusal, route
from tidings.domain.auth import Role
from tidings.domain.errors import Conflict, ValidationFailed
from tidings.domain.journeys import publish_errors
from tidings.journeys.store import JourneyRow, JourneyStore

__all__ = ["journey_row", "journey_store", "journeys_routes"]

PAGE_SIZE = 50
_NOTES = {
    "live": "The journey is live.",
    "off": "The journey is paused.",
    "archived": "The journey is archived (and stopped).",
    "unarchived": "The journey is no longer archived.",
}


def journey_store(page: Page) -> JourneyStore:
    store = page.admin.services.journey_store
    if store is None:
        raise Refusal(404, "No journeys", "Journeys are not enabled on this server.")
    return store


def journey_row(page: Page, store: JourneyStore) -> JourneyRow:
    raw = page.param("journey_id")
    # Ids are 32-bit: a larger one names no journey (and PostgreSQL would refuse it).
    ok = raw.isdigit() and len(raw) <= 12 and int(raw) < 2**31
    row = store.get(page.pid, int(raw)) if ok else None
    if row is None:
        raise Refusal(404, "No such journey", "This project has no such journey.")
    return row


def journeys(page: Page) -> Response:
    store = journey_store(page)
    cursor = page.query("cursor") or None
    rows, next_cursor, prev_cursor = store.page(page.pid, limit=PAGE_SIZE, cursor=cursor)
    return page.render(
        "journeys.html",
        nav="journeys",
        rows=rows,
        next_url=page.url("/journeys", cursor=next_cursor) if next_cursor else None,
        prev_url=page.url("/journeys", cursor=prev_cursor) if prev_cursor else None,
        may_edit=page.may(Role.EDITOR),
    )


def journey(page: Page, *, error: str | None = None) -> Response:
    store = journey_store(page)
    row = journey_row(page, store)
    steps = store.steps(row.id)
    stats = store.stats(row.id)
    return page.render(
        "journey.html",
        status=409 if error else 200,
        nav="journeys",
        journey=row,
        graph=layout(steps, stats),
        box_w=BOX_W,
        box_h=BOX_H,
        error=error,
        note=_NOTES.get(page.query("done")),
        may_publish=page.may(Role.PUBLISHER),
        may_edit=page.may(Role.EDITOR),
        graph_errors=by_step(publish_errors(steps), steps).messages() if steps else {},
        visited=set(),
    )


def _set_status(page: Page, status: str) -> Response:
    store = journey_store(page)
    row = journey_row(page, store)
    try:
        store.update(page.pid, row.id, now=page.admin.clock(), values={}, status=status)
    except (Conflict, ValidationFailed) as exc:
        return journey(page, error=exc.message)
    worker = page.admin.services.journey_worker
    if worker is not None:
        worker.wake.set()  # resumed: its overdue timers fire now (as the API does)
    return page.redirect(page.url(f"/journeys/{row.id}", done=status))


def publish(page: Page) -> Response:
    return _set_status(page, "live")


def pause(page: Page) -> Response:
    return _set_status(page, "off")


def journeys_routes(admin: Admin) -> list[Route]:
    return [
        route("/p/{pid}/journeys", journeys, admin),
        route("/p/{pid}/journeys/{journey_id}", journey, admin),
        route(
            "/p/{pid}/journeys/{journey_id}/publish",
            publish,
            admin,
            role=Role.PUBLISHER,
            methods=["POST"],
        ),
        route(
            "/p/{pid}/journeys/{journey_id}/pause",
            pause,
            admin,
            role=Role.PUBLISHER,
            methods=["POST"],
        ),
    ]
