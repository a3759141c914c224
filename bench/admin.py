"""Admin UI benchmark: p95 page latency with many profiles and events.

    .venv/bin/python bench/admin.py [--profiles N] [--events N] [--requests N]
                                    [--database-url URL [--reuse]] [--keep PATH]
                                    [--json PATH]

A fresh SQLite database (or the PostgreSQL database ``--database-url`` names, which must
be empty) gets N profiles (external ids ``cus_<n>``, emails, a few traits, created one
millisecond apart) with their external identities, and ``--events`` events over the last
60 days (five names, small properties, spread over the profiles; in the order of their
times, as they arrive in life, which PostgreSQL's BRIN index on time relies on), written
straight into the tables with ``INSERT … SELECT`` over a generated series, with their
daily rollups (``INSERT … SELECT … GROUP BY``, as migration 0016 fills them). Then a static
list of 10,000 members and a dynamic list, a journey, an email campaign with a template,
an SMTP provider, an owner account, and a real ``tidings api`` server over it (no worker:
nothing changes while it is measured). One signed-in client asks for each page (every
page of the admin UI a GET shows, the charts and forms included, but the sign-in page and
the redirects) ``--requests`` times in rounds (every page once per round, in a shuffled
order, so noise from the shared machine hits all alike) over loopback, and the script
prints each page's p50, p95 and max with the ratio of p95 to the target.

Target (printed with its ratio; a miss never fails the script): every page's p95 under
100 ms with 1,000,000 profiles and 10,000,000 events. The live count of the rule editor
(``lists/preview``) is not a page view; it is measured too, against the same figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from tidings.admin.passwords import Passwords
from tidings.store import migrate, tables
from tidings.store.admin import AdminStore
from tidings.store.database import Database, open_database
from tidings.store.projects import ProjectStore

TARGET_P95_MS = 100.0
SECOND = 1_000_000
DAY = 86_400 * SECOND
EMAIL, PASSWORD = "bench@example.com", "bench password 123"
RULE = {
    "type": "wrapper",
    "group": "parent",
    "operator": "and",
    "children": [
        {"type": "string", "group": "user", "path": "data.plan", "operator": "=", "value": "pro"}
    ],
}


def _series(sqlite: bool) -> tuple[str, str]:
    if sqlite:
        return (
            "WITH RECURSIVE s(i) AS (SELECT :lo UNION ALL SELECT i + 1 FROM s WHERE i < :hi - 1) ",
            "s",
        )
    return "", "generate_series(CAST(:lo AS bigint), :hi - 1) AS s(i)"


def seed(db: Database, project_id: int, profiles: int, events: int, now: int) -> float:
    started = time.perf_counter()
    sqlite = db.is_sqlite
    series, source = _series(sqlite)
    pid = "printf('prf_%026d', {x})" if sqlite else "'prf_' || lpad(({x})::text, 26, '0')"
    eid = pid.replace("prf_", "evt_")
    cast = "" if sqlite else "::jsonb"
    plan = "CASE i % 4 WHEN 0 THEN 'pro' WHEN 1 THEN 'team' ELSE 'free' END"
    data = (
        f"json_object('plan', {plan}, 'orders', i % 13)"
        if sqlite
        else f"jsonb_build_object('plan', {plan}, 'orders', i % 13)"
    )
    names = (
        "CASE i % 5 WHEN 0 THEN 'Order placed' WHEN 1 THEN 'App opened' "
        "WHEN 2 THEN 'Product viewed' WHEN 3 THEN 'Cart updated' ELSE 'Searched' END"
    )
    start = now - 400 * DAY
    step = 60 * DAY // max(events, 1)  # events are written in the order they happened
    statements = [
        (
            profiles,
            f"{series}INSERT INTO profiles (id, project_id, external_id, email, data, "
            f"created_at, updated_at) SELECT {pid.format(x='i')}, {project_id}, 'cus_' || i, "
            f"'user' || i || '@example.com', {data}, :start + i * 1000, :start + i * 1000 "
            f"FROM {source}",
        ),
        (
            profiles,
            f"{series}INSERT INTO identities (project_id, kind, value, profile_id, created_at) "
            f"SELECT {project_id}, 'external', 'cus_' || i, {pid.format(x='i')}, :start "
            f"FROM {source}",
        ),
        (
            events,
            f"{series}INSERT INTO events (id, project_id, profile_id, message_id, name, "
            "external_id, data, created_at, received_at) SELECT "
            f"{eid.format(x='i')}, {project_id}, "
            f"{pid.format(x=f'(i * 7919) % {profiles}')}, 'seed-' || i, {names}, "
            f'\'cus_\' || ((i * 7919) % {profiles}), \'{{"screen": "home", "n": 1}}\'{cast}, '
            f":now - {60 * DAY} + i * :step, :now FROM {source}",
        ),
    ]
    # The events' secondary indexes are built after the rows are in (a sort, rather than
    # ten million inserts at random places in each index).
    indexes = sorted(tables.events.indexes, key=lambda i: str(i.name)) if sqlite else []
    if sqlite:
        with db.writer.begin() as conn:
            for index in indexes:
                conn.exec_driver_sql(f"DROP INDEX {index.name}")
    for total, sql in statements:
        for lo in range(0, total, 500_000):
            hi = min(total, lo + 500_000)
            with db.writer.begin() as conn:
                values = {"lo": lo, "hi": hi, "start": start, "now": now, "step": step}
                conn.execute(sa.text(sql), values)
            if sqlite:  # the server's checkpointer is not running: keep the WAL short
                with db.reader.connect() as conn:
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            print(f"  {sql.split('INSERT INTO ')[1].split()[0]}: {hi:,}", flush=True)
    if sqlite:
        with db.writer.begin() as conn:
            for index in indexes:
                index.create(conn)
                print(f"  index {index.name}", flush=True)
    rollups(db)
    if sqlite:
        with db.writer.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    else:
        engine = sa.create_engine(db.writer.url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
        engine.dispose()
    return time.perf_counter() - started


def rollups(db: Database) -> None:
    """The events' daily rollups, as the worker (or migration 0016) would have written
    them: what the reports page's events per day read."""
    day = f"created_at - ((created_at % {DAY}) + {DAY}) % {DAY}"
    with db.writer.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO event_rollups (project_id, day, name, count, users, first_seen_at, "
                f"last_seen_at) SELECT project_id, {day}, name, count(*), "
                "count(DISTINCT profile_id), min(created_at), max(created_at) FROM events "
                f"GROUP BY project_id, {day}, name"
            )
        )
    print("  event_rollups", flush=True)


def lists(db: Database, project_id: int, now: int) -> tuple[int, int]:
    """A static list of 10,000 members and a dynamic list (its members written as a
    back-fill would: every fourth profile of the first 40,000), with their enter facts."""
    with db.writer.begin() as conn:
        ids = []
        for name, kind, rule, count in (
            ("Imported", "static", None, 10_000),
            ("Pro plan", "dynamic", RULE, 10_000),
        ):
            list_id = conn.execute(
                sa.text(
                    "INSERT INTO lists (project_id, name, type, rule, state, version, "
                    "users_count, tags, created_at, updated_at) VALUES (:p, :n, :t, :r, 'ready', "
                    "1, :c, '[]', :now, :now) RETURNING id"
                ),
                {
                    "p": project_id,
                    "n": name,
                    "t": kind,
                    "r": json.dumps(rule) if rule else None,
                    "c": count,
                    "now": now,
                },
            ).scalar_one()
            step = 1 if kind == "static" else 4
            conn.execute(
                sa.text(
                    "INSERT INTO list_members (list_id, profile_id, version, added_at) "
                    "VALUES (:l, :p, 1, :a)"
                ),
                [{"l": list_id, "p": f"prf_{n * step:026d}", "a": now - n} for n in range(count)],
            )
            # Their enter facts, over the last 20 days: the reports' list growth reads them.
            conn.execute(
                sa.text(
                    "INSERT INTO list_changes (project_id, list_id, profile_id, change, "
                    "list_version, created_at) VALUES (:pr, :l, :p, 'entered', 1, :a)"
                ),
                [
                    {
                        "pr": project_id,
                        "l": list_id,
                        "p": f"prf_{n * step:026d}",
                        "a": now - (n % 20) * 86_400_000_000 - n,
                    }
                    for n in range(count)
                ],
            )
            ids.append(int(list_id))
    return ids[0], ids[1]


Engaged = dict[str, int]  # ids of the journey, campaign, template, provider, subscription type


def engagement(db: Database, project_id: int, now: int) -> Engaged:
    """A journey (the admin's example graph), an email campaign with one template and an
    SMTP provider: what the journey editor, the simulation, the campaign form, the
    template editor and the provider form show."""
    from tidings.admin.journey_edit import EXAMPLE_GRAPH
    from tidings.domain.journeys import parse_steps
    from tidings.journeys.store import JourneyStore
    from tidings.messaging.campaigns import CampaignStore
    from tidings.messaging.subscriptions import SubscriptionStore

    journeys = JourneyStore(db.writer, db.reader)
    journey = journeys.create(
        project_id, name="Onboarding", description=None, tags=[], settings={}, now=now
    )
    journeys.put_steps(project_id, journey.id, parse_steps(EXAMPLE_GRAPH), now=now)
    with db.writer.begin() as conn:
        SubscriptionStore.ensure_defaults(conn, project_id, now)
    with db.reader.connect() as conn:
        sub = conn.execute(
            sa.text(
                "SELECT id FROM subscription_types WHERE project_id = :p AND "
                "default_channel = 'email'"
            ),
            {"p": project_id},
        ).scalar_one()
    campaigns = CampaignStore(db.writer, db.reader)
    campaign = campaigns.create_campaign(
        project_id,
        {"type": "trigger", "name": "Welcome", "channel": "email", "subscription_id": sub},
    )
    template = campaigns.create_template(
        project_id,
        campaign["id"],
        "en",
        {
            "from": {"name": "Shop", "address": "shop@example.com"},
            "subject": "Hi {{ user.first_name | default: 'there' }}",
            "html": "<p>Hello {{ user.first_name | default: 'friend' }}</p>",
        },
    )
    del template
    return engaged_ids(db, project_id)


def engaged_ids(db: Database, project_id: int) -> Engaged:
    """The ids the pages show, read back (a kept database seeded by an older version of
    this script gets its provider here)."""
    from tidings.messaging.campaigns import CampaignStore

    one = "SELECT min(id) FROM {} WHERE project_id = :p"
    with db.reader.connect() as conn:
        found = {
            name: conn.execute(sa.text(one.format(table)), {"p": project_id}).scalar()
            for name, table in (
                ("journey", "journeys"),
                ("campaign", "campaigns"),
                ("provider", "providers"),
                ("subscription", "subscription_types"),
            )
        }
        found["template"] = conn.execute(
            sa.text("SELECT min(id) FROM templates WHERE campaign_id = :c"),
            {"c": found["campaign"]},
        ).scalar()
    if found["provider"] is None:
        relay = {"host": "127.0.0.1", "port": 2525, "username": "relay", "password": "secret"}
        found["provider"] = CampaignStore(db.writer, db.reader).create_provider(
            project_id,
            {
                "type": "smtp",
                "name": "Mail relay",
                "channel": "email",
                "is_default": True,
                "rate_limit": 50,
                "rate_interval": "minute",
                "data": relay,
            },
        )["id"]
    assert all(v is not None for v in found.values()), found
    return {name: int(value) for name, value in found.items()}


def engaged_rows(db: Database, project_id: int, rows: int, engaged: Engaged, now: int) -> None:
    """``rows`` entrances of the journey (a tenth waiting at its second step, a third
    having reached the goal) and ``rows`` sends of the campaign (one in 50 failed): what
    the reports' goal count, the journey page's waiting counts and the campaign page's
    sends by state count. Added once (a kept database that has them is left alone)."""
    sqlite = db.is_sqlite
    series, source = _series(sqlite)
    pid = "printf('prf_%026d', i)" if sqlite else "'prf_' || lpad(i::text, 26, '0')"
    journey, campaign = engaged["journey"], engaged["campaign"]
    with db.reader.connect() as conn:
        if conn.execute(
            sa.text("SELECT 1 FROM journey_entrances WHERE journey_id = :j LIMIT 1"), {"j": journey}
        ).first():
            return
        steps = (
            conn.execute(
                sa.text("SELECT id FROM journey_steps WHERE journey_id = :j ORDER BY id"),
                {"j": journey},
            )
            .scalars()
            .all()
        )
    statements = (
        f"{series}INSERT INTO journey_entrances (project_id, journey_id, entrance_step_id, "
        "profile_id, entrance_key, occurrence, step_id, state, holdout, created_at, "
        f"updated_at, goal_at) SELECT {project_id}, {journey}, {steps[0]}, {pid}, '', '1', "
        f"CASE WHEN i % 10 = 0 THEN {steps[1]} ELSE NULL END, "
        "CASE WHEN i % 10 = 0 THEN 'waiting' ELSE 'done' END, FALSE, :now - i, :now - i, "
        f"CASE WHEN i % 3 = 0 THEN :now ELSE NULL END FROM {source}",
        f"{series}INSERT INTO sends (project_id, campaign_id, subscription_id, profile_id, "
        "reference, state, due_at, attempts, created_at, updated_at) SELECT "
        f"{project_id}, {campaign}, {engaged['subscription']}, {pid}, 'r' || i, "
        "CASE WHEN i % 50 = 0 THEN 'failed' ELSE 'sent' END, :now - i, 1, :now - i, :now - i "
        f"FROM {source}",
    )
    for sql in statements:
        for lo in range(0, rows, 500_000):
            with db.writer.begin() as conn:
                conn.execute(sa.text(sql), {"lo": lo, "hi": min(rows, lo + 500_000), "now": now})
        print(f"  {sql.split('INSERT INTO ')[1].split()[0]}: {rows:,}", flush=True)
    if sqlite:
        with db.writer.begin() as conn:
            conn.exec_driver_sql("ANALYZE journey_entrances")
            conn.exec_driver_sql("ANALYZE sends")
    else:  # as after the seeding: the visibility map lets index-only scans skip the rows
        engine = sa.create_engine(db.writer.url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql("VACUUM ANALYZE journey_entrances")
            conn.exec_driver_sql("VACUUM ANALYZE sends")
        engine.dispose()


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _sign_in(client: httpx.Client) -> str:
    form = client.get("/admin/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token
    done = client.post(
        "/admin/login", data={"csrf": token.group(1), "email": EMAIL, "password": PASSWORD}
    )
    assert done.status_code == 303, done.text
    page = client.get("/admin/p/1/lists/new")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    return csrf.group(1)


def measure(
    url: str,
    project_id: int,
    profiles: int,
    list_ids: tuple[int, int],
    requests: int,
    engaged: Engaged,
) -> dict[str, Any]:
    rng = random.Random(11)
    client = httpx.Client(base_url=url, timeout=60, follow_redirects=False)
    csrf = _sign_in(client)
    base = f"/admin/p/{project_id}"
    first = client.get(f"{base}/users")
    older = re.search(r'href="([^"]+)" rel="next"', first.text)
    assert older, "the users page has a next page"
    profile_page = client.get(f"{base}/users/prf_{profiles // 2:026d}")
    timeline_next = re.search(r'href="([^"]+)" rel="next"', profile_page.text)

    journey, campaign, template = engaged["journey"], engaged["campaign"], engaged["template"]

    def some_profile() -> str:
        return f"{base}/users/prf_{rng.randrange(profiles):026d}"

    pages: dict[str, Any] = {
        "users": lambda: client.get(f"{base}/users"),
        "users, page 2": lambda: client.get(older.group(1).replace("&amp;", "&")),
        "users, search by external id": lambda: client.get(
            f"{base}/users", params={"q": f"cus_{rng.randrange(profiles)}"}
        ),
        "users, search by email": lambda: client.get(
            f"{base}/users", params={"q": f"user{rng.randrange(profiles)}@"}
        ),
        "profile (random user)": lambda: client.get(some_profile()),
        "live events": lambda: client.get(f"{base}/events"),
        "live events feed (poll)": lambda: client.get(f"{base}/events/feed"),
        "lists": lambda: client.get(f"{base}/lists"),
        "new list form": lambda: client.get(f"{base}/lists/new"),
        "static list (10,000 members)": lambda: client.get(f"{base}/lists/{list_ids[0]}"),
        "dynamic list": lambda: client.get(f"{base}/lists/{list_ids[1]}"),
        "list editor": lambda: client.get(f"{base}/lists/{list_ids[1]}/edit"),
        "data schema": lambda: client.get(f"{base}/schema"),
        "API keys": lambda: client.get(f"{base}/keys"),
        "settings": lambda: client.get(f"{base}/settings"),
        "reports (events, list growth)": lambda: client.get(
            f"{base}/reports", params={"list": str(list_ids[0])}
        ),
        "list growth chart": lambda: client.get(f"{base}/reports/lists/{list_ids[0]}.svg"),
        "events chart": lambda: client.get(f"{base}/reports/events.svg"),
        "journey conversion chart": lambda: client.get(f"{base}/reports/journeys/{journey}.svg"),
        "team": lambda: client.get(f"{base}/team"),
        "account": lambda: client.get("/admin/account"),
        "journeys": lambda: client.get(f"{base}/journeys"),
        "new journey form": lambda: client.get(f"{base}/journeys/new"),
        "journey": lambda: client.get(f"{base}/journeys/{journey}"),
        "journey editor": lambda: client.get(f"{base}/journeys/{journey}/edit"),
        "journey simulation form": lambda: client.get(f"{base}/journeys/{journey}/simulate"),
        "journey simulation (a dry run, not a page view)": lambda: client.post(
            f"{base}/journeys/{journey}/simulate",
            data={
                "csrf": csrf,
                "external_id": f"cus_{rng.randrange(profiles)}",
                "events": '[{"name": "Signed Up"}]',
                "traits": "",
            },
        ),
        "campaigns": lambda: client.get(f"{base}/campaigns"),
        "new campaign form": lambda: client.get(f"{base}/campaigns/new"),
        "campaign": lambda: client.get(f"{base}/campaigns/{campaign}"),
        "campaign form": lambda: client.get(f"{base}/campaigns/{campaign}/edit"),
        "template": lambda: client.get(f"{base}/campaigns/{campaign}/templates/{template}"),
        "template preview frame": lambda: client.get(
            f"{base}/campaigns/{campaign}/templates/{template}/preview"
        ),
        "new template form": lambda: client.get(f"{base}/campaigns/{campaign}/templates/new"),
        "template editor": lambda: client.get(
            f"{base}/campaigns/{campaign}/templates/{template}/edit"
        ),
        "template live preview (not a page view)": lambda: client.post(
            f"{base}/campaigns/{campaign}/templates/{template}/preview",
            data={
                "csrf": csrf,
                "from.address": "shop@example.com",
                "subject": "Hi",
                "format": "html",
                "body": "<p>Hello {{ user.first_name | default: 'friend' }}</p>",
            },
        ),
        "providers": lambda: client.get(f"{base}/providers"),
        "new provider form": lambda: client.get(f"{base}/providers/new"),
        "provider form": lambda: client.get(f"{base}/providers/{engaged['provider']}"),
        "subscription types": lambda: client.get(f"{base}/subscriptions"),
        "subscription type form": lambda: client.get(
            f"{base}/subscriptions/{engaged['subscription']}"
        ),
        "rule editor's live count (not a page view)": lambda: client.post(
            f"{base}/lists/preview",
            json={"rule": json.dumps(RULE)},
            headers={"X-CSRF-Token": csrf},
        ),
    }
    if timeline_next:
        pages["profile, older events"] = lambda: client.get(
            timeline_next.group(1).replace("&amp;", "&")
        )
    for ask in pages.values():  # warm up: connections, template compilation, caches
        assert ask().status_code == 200
    timings: dict[str, list[float]] = {name: [] for name in pages}
    names = list(pages)
    for _ in range(requests):
        rng.shuffle(names)
        for name in names:
            started = time.perf_counter()
            response = pages[name]()
            timings[name].append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, (name, response.status_code, response.text[:300])
    client.close()
    results = {}
    for name, values in timings.items():
        values.sort()
        p95 = values[min(len(values) - 1, round(0.95 * len(values)) - 1)]
        results[name] = {
            "p50_ms": round(statistics.median(values), 1),
            "p95_ms": round(p95, 1),
            "max_ms": round(values[-1], 1),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--requests", type=int, default=100, help="requests per page")
    parser.add_argument("--database-url", help="an empty PostgreSQL database (default: SQLite)")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--keep",
        type=Path,
        help="a SQLite file to seed once and reuse on later runs of the same sizes",
    )
    parser.add_argument(
        "--engaged-rows",
        type=int,
        default=0,
        help="entrances of the journey and sends of the campaign to add (default none)",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="the --database-url database was seeded by an earlier run: measure only",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tidings-bench-admin-") as tmp:
        path = args.keep or Path(tmp) / "tidings.db"
        url = args.database_url or f"sqlite:///{path}"
        seeded = args.reuse or (args.keep is not None and args.keep.exists())
        db = open_database(url, sqlite_synchronous="NORMAL")
        seconds = 0.0
        project_id, list_ids = 1, (1, 2)
        if not seeded:
            migrate.upgrade(db.writer)
            now = time.time_ns() // 1000
            project_id = (
                ProjectStore(db.writer, db.reader)
                .create_project("Bench", locale="en", timezone="UTC")
                .id
            )
            passwords = Passwords()
            AdminStore(db.writer, db.reader).create_account(
                EMAIL, passwords.hash(PASSWORD), owner=True, now=now
            )
            print(f"seeding {args.profiles:,} profiles and {args.events:,} events…", flush=True)
            seconds = seed(db, project_id, args.profiles, args.events, now)
            list_ids = lists(db, project_id, now)
            engagement(db, project_id, now)
            print(f"seeded in {seconds:.0f} s", flush=True)
        engaged = engaged_ids(db, project_id)
        if args.engaged_rows:
            engaged_rows(db, project_id, args.engaged_rows, engaged, time.time_ns() // 1000)
        db.dispose()
        port = _port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
        env.update(TIDINGS_DATABASE_URL=url, TIDINGS_DEMO_PROJECT="false")
        server = subprocess.Popen(
            [sys.executable, "-m", "tidings", "api", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(600):
                try:
                    if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            results = measure(base, project_id, args.profiles, list_ids, args.requests, engaged)
        finally:
            server.terminate()
            server.wait(20)
    backend = "postgresql" if args.database_url else "sqlite"
    print(
        f"\n{backend}, {args.profiles:,} profiles, {args.events:,} events, "
        f"{args.requests} requests per page; {platform.platform()}, {os.cpu_count()} cores"
    )
    print(f"{'page':<46} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}  p95 / target")
    for name, r in results.items():
        ratio = r["p95_ms"] / TARGET_P95_MS
        print(f"{name:<46} {r['p50_ms']:>8} {r['p95_ms']:>8} {r['max_ms']:>8}  {ratio:.2f}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "backend": backend,
                    "profiles": args.profiles,
                    "events": args.events,
                    "requests": args.requests,
                    "seed_seconds": seconds,
                    "pages": results,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
