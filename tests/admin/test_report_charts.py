"""The reports page's list growth and journey step conversion: figures, charts, empty states."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import sqlalchemy as sa

from tests.admin.conftest import Clock, make_account, sign_in
from tests.admin.test_escaping import PAYLOADS, assert_inert
from tests.admin.test_journey_pages import _graph, _journey
from tests.conftest import Project
from tidings.admin.report_charts import DAY, DAYS
from tidings.bootstrap import Services
from tidings.domain.auth import Role
from tidings.journeys.store import JourneyStore
from tidings.reporting.queries import day_text
from tidings.store.lists import ListStore
from tidings.store.tables import list_changes, lists
from tidings.store.tables_journeys import journey_entrances, journey_step_stats


def _list(services: Services, project: Project, name: str) -> int:
    store = ListStore(services.db.writer, services.db.reader)
    return store.create(project.id, name=name, type="static", rule=None, tags=[], now=1).id


def _changes(
    services: Services, project: Project, list_id: int, moves: list[tuple[int, str]]
) -> None:
    with services.db.writer.begin() as conn:
        conn.execute(
            sa.insert(list_changes),
            [
                {
                    "project_id": project.id,
                    "list_id": list_id,
                    "profile_id": f"p{n}",
                    "change": change,
                    "list_version": 1,
                    "created_at": at,
                }
                for n, (at, change) in enumerate(moves)
            ],
        )


async def test_empty_states_say_what_to_do(owner: httpx.AsyncClient, project: Project) -> None:
    page = await owner.get(f"/admin/p/{project.id}/reports")
    assert page.status_code == 200
    assert "This project has no lists yet." in page.text
    assert f'href="/admin/p/{project.id}/lists/new">Create a list<' in page.text
    assert "This project has no journeys yet." in page.text
    assert "/reports/lists/" not in page.text and "/reports/journeys/" not in page.text


async def test_list_growth_shows_members_per_day_for_the_chosen_list(
    owner: httpx.AsyncClient, services: Services, project: Project, clock: Clock
) -> None:
    today = clock.now - clock.now % DAY
    quiet = _list(services, project, PAYLOADS[1])
    busy = _list(services, project, "Buyers")
    _changes(
        services,
        project,
        busy,
        [
            (today - 40 * DAY, "entered"),
            (today - 2 * DAY, "entered"),
            (today - 2 * DAY, "entered"),
            (today - DAY + 5, "left"),
            (today + 10, "entered"),
        ],
    )
    with services.db.writer.begin() as conn:  # the list's own counter, as the store keeps it
        conn.execute(sa.update(lists).where(lists.c.id == busy).values(users_count=3))
    page = await owner.get(f"/admin/p/{project.id}/reports")  # the newest list first
    assert page.status_code == 200
    assert "“Buyers” has 3 members: 3 entered and 1 left in the last 30 days." in page.text
    assert f'src="/admin/p/{project.id}/reports/lists/{busy}.svg"' in page.text
    assert (
        f'<tr><td>{day_text(today - 2 * DAY)}</td><td class="num">3</td>'
        '<td class="num">2</td><td class="num">0</td></tr>'
    ) in page.text
    assert len(re.findall(r'<tr><td>\d{4}-\d\d-\d\d</td><td class="num">', page.text)) == 2 * DAYS
    chart = await owner.get(f"/admin/p/{project.id}/reports/lists/{busy}.svg")
    assert chart.status_code == 200 and chart.headers["content-type"].startswith("image/svg+xml")
    assert chart.headers["content-security-policy"].startswith("default-src 'none'")
    values = re.findall(r'<desc class="value">([^<]*)</desc>', chart.text)
    assert values[:DAYS][-3:] == ["3", "2", "3"]  # members at the end of each day
    other = await owner.get(f"/admin/p/{project.id}/reports?list={quiet}")
    assert "had no members in the last 30 days" in other.text
    assert f"/reports/lists/{quiet}.svg" not in other.text
    assert_inert(other.text)


async def test_journey_step_conversion_and_goal(
    owner: httpx.AsyncClient, services: Services, project: Project
) -> None:
    journey_id = _journey(
        services, project, _graph(PAYLOADS[0]), settings={"goal": {"event_name": "Bought"}}
    )
    store = services.journey_store
    assert isinstance(store, JourneyStore)
    page = await owner.get(f"/admin/p/{project.id}/reports")
    assert "Nobody has entered “Welcome” yet" in page.text
    steps = store.steps(journey_id)
    ids = {uuid: step.id for uuid, step in steps.items()}
    by_type = {step.type: step.id for step in steps.values()}
    with services.db.writer.begin() as conn:
        conn.execute(
            sa.insert(journey_step_stats),
            [
                {
                    "journey_id": journey_id,
                    "step_id": by_type["entrance"],
                    "shard": 0,
                    "entered": 10,
                    "completed": 10,
                    "failed": 0,
                },
                {
                    "journey_id": journey_id,
                    "step_id": by_type["gate"],
                    "shard": 0,
                    "entered": 10,
                    "completed": 8,
                    "failed": 1,
                },
                {
                    "journey_id": journey_id,
                    "step_id": by_type["gate"],
                    "shard": 1,
                    "entered": 0,
                    "completed": 0,
                    "failed": 1,
                },
            ],
        )
        conn.execute(
            sa.insert(journey_entrances),
            [
                {
                    "project_id": project.id,
                    "journey_id": journey_id,
                    "entrance_step_id": by_type["entrance"],
                    "profile_id": f"p{n}",
                    "entrance_key": "",
                    "occurrence": "1",
                    "step_id": None,
                    "state": "done",
                    "holdout": False,
                    "created_at": 1,
                    "updated_at": 1,
                    "goal_at": 5 if n < 3 else None,
                }
                for n in range(4)
            ],
        )
    assert ids
    page = await owner.get(f"/admin/p/{project.id}/reports?journey={journey_id}")
    assert page.status_code == 200
    assert "3 of 4 entrances reached the goal (75.0%)." in page.text
    assert f'src="/admin/p/{project.id}/reports/journeys/{journey_id}.svg"' in page.text
    assert (
        '<td class="num">10</td><td class="num">8</td><td class="num">2</td><td class="num">80.0%</td>'
        in page.text
    )
    assert_inert(page.text)
    chart = await owner.get(f"/admin/p/{project.id}/reports/journeys/{journey_id}.svg")
    assert chart.status_code == 200 and "<svg" in chart.text
    assert PAYLOADS[0] not in chart.text and "&lt;script&gt;" in chart.text
    assert "Completed" in chart.text and "Entered" in chart.text


async def test_charts_of_other_projects_or_unknown_ids_are_not_found(
    owner: httpx.AsyncClient, services: Services, project: Project
) -> None:
    for path in ("lists/99999.svg", "lists/x.svg", "journeys/99999.svg", "journeys/1e3.svg"):
        answer = await owner.get(f"/admin/p/{project.id}/reports/{path}")
        assert answer.status_code == 404, path


async def test_a_support_account_sees_the_charts_and_a_stranger_does_not(
    services: Services,
    project: Project,
    clock: Clock,
    new_client: Callable[[], httpx.AsyncClient],
) -> None:
    list_id = _list(services, project, "Seen")
    make_account(services, "sue@example.com", roles={project.id: Role.SUPPORT})
    make_account(services, "stranger@example.com", roles={})
    sue, stranger = new_client(), new_client()
    assert (await sign_in(sue, "sue@example.com")).status_code == 303
    assert (await sign_in(stranger, "stranger@example.com")).status_code == 303
    path = f"/admin/p/{project.id}/reports/lists/{list_id}.svg"
    assert (await sue.get(path)).status_code == 200
    assert (await stranger.get(path)).status_code == 404


def test_counting_back_from_the_list_counter_gives_the_same_history(
    services: Services, project: Project
) -> None:
    from tidings.reporting.history import list_history

    list_id = _list(services, project, "Counted")
    start = 1_800_000_000_000_000 - 1_800_000_000_000_000 % DAY
    moves = [(start - 9 * DAY, "entered"), (start - 3 * DAY, "entered"), (start + 5, "entered")]
    moves += [(start + DAY + 1, "left"), (start + 2 * DAY, "entered"), (start + 4 * DAY, "left")]
    _changes(services, project, list_id, moves)
    end = start + 5 * DAY
    with services.db.reader.connect() as conn:
        forward = list_history(conn, project.id, list_id, start, end)
        back = list_history(conn, project.id, list_id, start, end, size_at_end=forward[-1]["size"])
    assert [d["size"] for d in forward] == [3, 2, 3, 3, 2]
    assert back == forward


async def test_a_chart_is_drawn_once_for_the_same_figures_and_anew_when_they_move(
    owner: httpx.AsyncClient, services: Services, project: Project, clock: Clock
) -> None:
    today = clock.now - clock.now % DAY
    list_id = _list(services, project, "Drawn")
    path = f"/admin/p/{project.id}/reports/lists/{list_id}.svg"

    def counter(members: int) -> None:
        with services.db.writer.begin() as conn:
            conn.execute(sa.update(lists).where(lists.c.id == list_id).values(users_count=members))

    _changes(services, project, list_id, [(today - DAY, "entered")])
    counter(1)
    first = await owner.get(path)
    # pygal names each drawing with a fresh random id: the same text is the same drawing.
    assert (await owner.get(path)).text == first.text
    _changes(services, project, list_id, [(today + 10, "entered")])
    counter(2)
    moved = await owner.get(path)
    assert moved.text != first.text
    values = re.findall(r'<desc class="value">([^<]*)</desc>', moved.text)
    assert values[:DAYS][-2:] == ["1", "2"]
    assert (await owner.get(path)).text == moved.text


def test_list_growth_reads_its_window_from_the_index_alone(
    services: Services, project: Project
) -> None:
    """The per-day counts of ``list_history`` need no visit to the facts' rows: the plan
    of the query it runs is an index-only scan of ``ix_list_changes_list_time``."""
    from tidings.reporting.history import list_history

    list_id = _list(services, project, "Indexed")
    start = 1_800_000_000_000_000 - 1_800_000_000_000_000 % DAY
    _changes(services, project, list_id, [(start + n * 1000, "entered") for n in range(50)])
    seen: list[tuple[str, object]] = []

    def capture(conn: object, cursor: object, sql: str, params: object, *_: object) -> None:
        if "list_changes" in sql and not sql.startswith("EXPLAIN"):
            seen.append((sql, params))

    engine = services.db.reader
    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        with engine.connect() as conn:
            list_history(conn, project.id, list_id, start, start + DAY, size_at_end=50)
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    [(sql, params)] = seen
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params).all()  # type: ignore[arg-type]
            plan = " ".join(str(r[-1]) for r in rows)
            assert "USING COVERING INDEX ix_list_changes_list_time" in plan, plan
        else:  # a tiny table: forbid the sequential scan the planner would rather do
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            conn.exec_driver_sql("SET LOCAL enable_bitmapscan = off")
            rows = conn.exec_driver_sql("EXPLAIN " + sql, params).all()  # type: ignore[arg-type]
            plan = " ".join(str(r[0]) for r in rows)
            assert "Index Only Scan using ix_list_changes_list_time" in plan, plan


async def test_the_project_switcher_keeps_the_reports_section(
    owner: httpx.AsyncClient, project: Project
) -> None:
    moved = await owner.get(f"/admin/switch?project={project.id}&section=reports")
    assert moved.status_code == 303
    assert moved.headers["location"] == f"/admin/p/{project.id}/reports"
