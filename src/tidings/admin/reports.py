"""The reports page: a project's events over the last 30 UTC days, by day, as an SVG
bar chart (pygal) and a table, from the rollups (``reporting.queries.aggregate`` grouped
by event name and day: never a count over the events table).

The chart is its own response, shown with ``<img>``: an SVG image runs no script, and
that one response's CSP allows the chart's inline style and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import pygal
from starlette.responses import Response
from starlette.routing import Route

from tidings.admin.report_charts import (
    CHART_POLICY,
    DAY,
    DAYS,
    STYLE,
    chart_routes,
    drawn,
    pick,
    svg_response,
    window,
)
from tidings.admin.web import Admin, Page, route
from tidings.reporting import queries
from tidings.reporting.filters import EventFilter

__all__ = ["CHART_POLICY", "DAY", "DAYS", "reports_routes"]

TOP_NAMES = 20


@dataclass(frozen=True, slots=True)
class Report:
    days: list[tuple[str, int]]  # every day of the window, oldest first, with its count
    names: list[tuple[str, int]]  # the busiest event names, with their counts
    total: int
    truncated: bool


def report(page: Page) -> Report:
    start, end = window(page.admin.clock())
    f = EventFilter(project_id=page.pid, start=start, end=end)
    with page.admin.services.db.reader.connect() as conn:
        found = queries.aggregate(conn, f, ("event_name", "day"), limit=10_000)
    # Rows name their day as YYYY-MM-DD (UTC), which sorts by date.
    per_day = dict.fromkeys((queries.day_text(day) for day in range(start, end, DAY)), 0)
    per_name: dict[str, int] = {}
    for row in found.results:
        per_day[row["day"]] = per_day.get(row["day"], 0) + row["count"]
        per_name[row["event_name"]] = per_name.get(row["event_name"], 0) + row["count"]
    names = sorted(per_name.items(), key=lambda item: (-item[1], item[0]))[:TOP_NAMES]
    days = sorted(per_day.items())
    return Report(days, names, sum(per_name.values()), found.truncated)


def chart_svg(days: list[tuple[str, int]]) -> str:
    return _chart_svg(tuple(days))


@drawn
def _chart_svg(days: tuple[tuple[str, int], ...]) -> str:
    chart = pygal.Bar(
        js=[],  # no tooltips script (and an <img> would not run it)
        width=860,
        height=320,
        show_legend=False,
        x_label_rotation=60,
        show_minor_x_labels=False,
        style=STYLE,
    )
    chart.x_labels = [day[5:] for day, _ in days]  # MM-DD
    chart.x_labels_major = [day[5:] for day, _ in days[::7]]
    chart.add("Events", [count for _, count in days])
    return str(chart.render(is_unicode=True))


def reports(page: Page) -> Response:
    found = report(page)
    return page.render(
        "reports.html",
        nav="reports",
        report=found,
        days=DAYS,
        peak=max((count for _, count in found.days), default=0),
        **pick(page),
    )


def chart(page: Page) -> Response:
    return svg_response(chart_svg(report(page).days))


def reports_routes(admin: Admin) -> list[Route]:
    return [
        route("/p/{pid}/reports", reports, admin),
        route("/p/{pid}/reports/events.svg", chart, admin),
        *chart_routes(admin),
    ]
