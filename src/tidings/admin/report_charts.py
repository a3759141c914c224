"""The reports page's list growth and journey step conversion, each as figures for the
page's table and as an SVG chart (pygal) of its own response, as ``reports.chart``.

- List growth: a list's size at the end of each of the last 30 UTC days, with the
  members who entered and left, from its enter/leave facts
  (``reporting.history.list_history``, the implementation of ``GET /lists/{id}/history``),
  counted back from the list's member counter.
- Journey step conversion: per step (in the graph's layers, from the entrances down)
  how many entered and completed it, from the journey's per-step counters
  (``JourneyStore.stats``), and how many entrances reached the journey's goal
  (``JourneyStore.goals``).

Each chart's figures are read on every request, but the SVG is drawn once per distinct
figures (``drawn``: pygal takes tens of milliseconds for one chart, the query a few): a
chart asked for again while nothing moved is the same text, never a stale one.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

import pygal
from pygal.style import Style
from starlette.responses import Response
from starlette.routing import Route

from tidings.admin.journey_layout import layout
from tidings.admin.web import Admin, Page, Refusal, route
from tidings.journeys.store import JourneyRow, JourneyStore
from tidings.reporting.history import list_history
from tidings.store.lists import ListRow

__all__ = [
    "CHART_POLICY",
    "DAY",
    "DAYS",
    "STYLE",
    "Conversion",
    "chart_routes",
    "drawn",
    "pick",
    "svg_response",
    "window",
]

DAYS = 30
DRAWN = 64  # charts kept by each drawing function, by their figures (~45 KB each)
DAY = 86_400_000_000
CHOICES = 100  # lists and journeys offered in the reports page's pickers
CHART_POLICY = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'"
STYLE = Style(
    background="white",
    plot_background="white",
    foreground="#2d3748",
    foreground_strong="#1a202c",
    foreground_subtle="#a0aec0",
    colors=("#3b6fd8", "#38a169", "#dd6b20"),
    font_family="system-ui, sans-serif",
)


@dataclass(frozen=True, slots=True)
class Conversion:
    steps: list[dict[str, Any]]  # {title, type, entered, completed, failed, rate}
    entrances: int
    reached: int
    goal: bool  # the journey has a goal set

    @property
    def goal_rate(self) -> float | None:
        return self.reached / self.entrances if self.entrances else None


K = TypeVar("K", bound=Hashable)


def drawn(draw: Callable[[K], str]) -> Callable[[K], str]:
    """``draw`` (a pure function of its figures, given as one hashable value) remembering
    its last ``DRAWN`` charts."""
    return lru_cache(maxsize=DRAWN)(draw)


def svg_response(svg: str) -> Response:
    """A chart as its own response: an SVG image runs no script, and this response's
    policy allows the chart's inline style and nothing else."""
    return Response(
        svg, media_type="image/svg+xml", headers={"content-security-policy": CHART_POLICY}
    )


def choices(page: Page) -> tuple[list[ListRow], list[JourneyRow]]:
    """The newest lists and journeys of the project, for the pickers."""
    found = page.admin.lists.page(page.pid, limit=CHOICES).results
    store = page.admin.services.journey_store
    journeys = store.page(page.pid, limit=CHOICES, cursor=None)[0] if store else []
    return list(found), journeys


def _chosen(raw: str, rows: list[Any]) -> Any:
    """The row whose id the query names, else the first (newest)."""
    for row in rows:
        if str(row.id) == raw:
            return row
    return rows[0] if rows else None


def pick(page: Page) -> dict[str, Any]:
    """The reports page's context for both sections."""
    lists, journeys = choices(page)
    chosen_list: ListRow | None = _chosen(page.query("list"), lists)
    chosen_journey: JourneyRow | None = _chosen(page.query("journey"), journeys)
    history = growth(page, chosen_list) if chosen_list else []
    return {
        "lists": lists,
        "journeys": journeys,
        "chosen_list": chosen_list,
        "chosen_journey": chosen_journey,
        "history": history,
        "history_moved": any(d["entered"] or d["left"] or d["size"] for d in history),
        "conversion": conversion(page, chosen_journey) if chosen_journey else None,
    }


# -- list growth -------------------------------------------------------------------------


def window(now: int) -> tuple[int, int]:
    """The last ``DAYS`` whole UTC days, today included (rollups are per whole day)."""
    end = now - now % DAY + DAY
    return end - DAYS * DAY, end


def growth(page: Page, row: ListRow) -> list[dict[str, Any]]:
    """The list's members per day: counted back from its own member counter, so only the
    window's enter/leave facts are read (a page view never sums a list's whole past)."""
    now = page.admin.clock()
    start, end = window(now)
    with page.admin.services.db.reader.connect() as conn:
        return list_history(
            conn, page.pid, row.id, start, min(end, now + 1), size_at_end=row.users_count
        )


def growth_svg(history: list[dict[str, Any]]) -> str:
    return _growth_svg(tuple((d["day"], d["size"], d["entered"], d["left"]) for d in history))


@drawn
def _growth_svg(days: tuple[tuple[str, int, int, int], ...]) -> str:
    chart = pygal.Line(
        js=[],
        width=860,
        height=320,
        x_label_rotation=60,
        show_minor_x_labels=False,
        legend_at_bottom=True,
        legend_at_bottom_columns=3,
        dots_size=2,
        style=STYLE,
    )
    chart.x_labels = [day[5:] for day, *_ in days]
    chart.x_labels_major = [day[5:] for day, *_ in days[::7]]
    chart.add("Members", [size for _, size, _, _ in days], fill=True)
    chart.add("Entered", [entered for _, _, entered, _ in days])
    chart.add("Left", [left for *_, left in days])
    return str(chart.render(is_unicode=True))


def _list_chart(page: Page) -> Response:
    raw = page.param("list_id")
    found = page.admin.lists.get(page.pid, int(raw)) if raw.isdigit() and len(raw) < 18 else None
    if found is None:
        raise Refusal(404, "No such list", "This project has no such list.")
    return svg_response(growth_svg(growth(page, found)))


# -- journey step conversion ---------------------------------------------------------------


def conversion(page: Page, journey: JourneyRow) -> Conversion:
    store = _store(page)
    steps = store.steps(journey.id)
    stats = store.stats(journey.id)
    boxes = sorted(layout(steps, stats).boxes, key=lambda b: (b.y, b.x))
    rows = []
    for box in boxes:
        counts = stats.get(box.uuid, {})
        entered, completed = counts.get("entered", 0), counts.get("completed", 0)
        rows.append(
            {
                "title": box.title or box.type,
                "type": box.type,
                "entered": entered,
                "completed": completed,
                "failed": counts.get("failed", 0),
                "rate": completed / entered if entered else None,
            }
        )
    goals = store.goals(journey.id)
    goal = journey.settings.get("goal") if isinstance(journey.settings, dict) else None
    return Conversion(rows, int(goals["entrances"]), int(goals["reached"]), bool(goal))


def conversion_svg(found: Conversion) -> str:
    return _conversion_svg(tuple((s["title"], s["entered"], s["completed"]) for s in found.steps))


@drawn
def _conversion_svg(steps: tuple[tuple[str, int, int], ...]) -> str:
    chart = pygal.HorizontalBar(
        js=[],
        width=860,
        height=max(200, 80 + 44 * len(steps)),
        legend_at_bottom=True,
        legend_at_bottom_columns=2,
        style=STYLE,
    )
    # Top step first: pygal draws a horizontal bar chart's first label at the bottom.
    ordered = list(reversed(steps))
    chart.x_labels = [f"{n}. {title}" for n, (title, _, _) in reversed(list(enumerate(steps, 1)))]
    chart.add("Entered", [entered for _, entered, _ in ordered])
    chart.add("Completed", [completed for _, _, completed in ordered])
    return str(chart.render(is_unicode=True))


def _store(page: Page) -> JourneyStore:
    store = page.admin.services.journey_store
    if store is None:
        raise Refusal(404, "No journeys", "Journeys are not enabled on this server.")
    return store


def _journey_chart(page: Page) -> Response:
    raw = page.param("journey_id")
    store = _store(page)
    found = store.get(page.pid, int(raw)) if raw.isdigit() and len(raw) <= 12 else None
    if found is None:
        raise Refusal(404, "No such journey", "This project has no such journey.")
    return svg_response(conversion_svg(conversion(page, found)))


def chart_routes(admin: Admin) -> list[Route]:
    return [
        route("/p/{pid}/reports/lists/{list_id}.svg", _list_chart, admin),
        route("/p/{pid}/reports/journeys/{journey_id}.svg", _journey_chart, admin),
    ]
