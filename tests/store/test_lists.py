"""The list store on both databases: members, counts and facts stay in step, also under
concurrent writers, merges and erasures."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import Project
from tests.plans import plans_of
from tidings.bootstrap import Services
from tidings.domain.errors import Conflict, NotFound
from tidings.domain.membership import MemberRow
from tidings.store.lists import ListStore
from tidings.store.tables import identities, list_changes, list_members, lists, profiles


def _now() -> int:
    return time.time_ns() // 1000


def _profile(
    services: Services, project_id: int, external_id: str | None, email: str | None = None
) -> str:
    profile_id = f"prf_{project_id}_{external_id or email}"
    with services.db.writer.begin() as conn:
        conn.execute(
            sa.insert(profiles).values(
                id=profile_id,
                project_id=project_id,
                external_id=external_id,
                email=email,
                data={},
                created_at=_now(),
                updated_at=_now(),
            )
        )
        if external_id is not None:
            conn.execute(
                sa.insert(identities).values(
                    project_id=project_id,
                    kind="external",
                    value=external_id,
                    profile_id=profile_id,
                    created_at=_now(),
                )
            )
    return profile_id


def _rows(*values: str) -> list[MemberRow]:
    return [MemberRow(i, v) for i, v in enumerate(values)]


def _store(services: Services) -> ListStore:
    return ListStore(services.db.writer, services.db.reader)


def _static(store: ListStore, project_id: int, name: str = "L") -> int:
    return store.create(project_id, name=name, type="static", rule=None, tags=[], now=_now()).id


def _state(services: Services, list_id: int) -> tuple[int, list[str], list[tuple[str, str]]]:
    """users_count, the members, and the facts (profile, change) in order."""
    with services.db.reader.connect() as conn:
        count = conn.execute(sa.select(lists.c.users_count).where(lists.c.id == list_id)).scalar()
        members = sorted(
            conn.execute(
                sa.select(list_members.c.profile_id).where(list_members.c.list_id == list_id)
            ).scalars()
        )
        facts = [
            (r.profile_id, r.change)
            for r in conn.execute(
                sa.select(list_changes)
                .where(list_changes.c.list_id == list_id)
                .order_by(list_changes.c.id)
            )
        ]
    return int(count or 0), members, facts


def test_adding_and_removing_keep_count_members_and_facts_in_step(
    services: Services, project: Project
) -> None:
    store = _store(services)
    a, b = _profile(services, project.id, "a"), _profile(services, project.id, "b")
    list_id = _static(store, project.id)

    added = store.add_members(
        project.id, list_id, "external_id", _rows("a", "b", "x", "a"), now=_now()
    )
    assert (added.changed, added.unchanged, added.not_found, added.not_found_rows) == (2, 1, 1, [2])
    removed = store.remove_members(project.id, list_id, "external_id", _rows("a", "a"), now=_now())
    assert (removed.changed, removed.unchanged) == (1, 1)
    assert _state(services, list_id) == (1, [b], [(a, "entered"), (b, "entered"), (a, "left")])


def test_an_email_names_every_profile_that_has_it(services: Services, project: Project) -> None:
    store = _store(services)
    one = _profile(services, project.id, "one", "Sam@example.com")
    two = _profile(services, project.id, "two", "sam@example.com")
    list_id = _static(store, project.id)
    tally = store.add_members(project.id, list_id, "email", _rows("SAM@example.com"), now=_now())
    assert tally.changed == 1
    assert _state(services, list_id)[:2] == (2, sorted([one, two]))


def test_emails_are_looked_up_through_an_index_not_a_scan_of_the_project(
    services: Services, project: Project
) -> None:
    """Each chunk of emails is an index search on lower(email), not a read of every profile
    of the project (the plan of the query the store runs, as the database gives it)."""
    store = _store(services)
    _profile(services, project.id, "one", "Sam@example.com")
    found: list[dict[str, list[str]]] = []
    plans = plans_of(
        services.db.reader,
        lambda: found.append(store.resolve(project.id, "email", ["SAM@example.com"])),
        "lower(profiles.email)",
    )
    assert list(found[0]) == ["sam@example.com"]
    assert len(plans) == 1 and "ix_profiles_project_lower_email" in plans[0], plans


def test_only_live_static_lists_of_the_project_take_members(
    services: Services, project: Project
) -> None:
    store = _store(services)
    _profile(services, project.id, "a")
    dynamic = store.create(
        project.id, name="D", type="dynamic", rule={"type": "wrapper"}, tags=[], now=_now()
    )
    with pytest.raises(Conflict):
        store.add_members(project.id, dynamic.id, "external_id", _rows("a"), now=_now())
    list_id = _static(store, project.id)
    with pytest.raises(NotFound):
        store.add_members(project.id + 1, list_id, "external_id", _rows("a"), now=_now())
    with pytest.raises(NotFound):
        store.members(project.id + 1, list_id, limit=10)
    assert store.delete(project.id, list_id, now=_now())
    with pytest.raises(NotFound):
        store.add_members(project.id, list_id, "external_id", _rows("a"), now=_now())
    assert store.get(project.id, list_id) is None


def test_concurrent_imports_into_one_list_count_each_member_once(
    services: Services, project: Project
) -> None:
    store = _store(services)
    ids = [f"u{i}" for i in range(60)]
    for external_id in ids:
        _profile(services, project.id, external_id)
    list_id = _static(store, project.id)
    errors: list[BaseException] = []

    def add(offset: int) -> None:
        try:  # overlapping thirds, in different orders
            chosen = ids[offset : offset + 40] if offset < 40 else ids[:20] + ids[40:]
            store.add_members(project.id, list_id, "external_id", _rows(*chosen), now=_now())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(o,)) for o in (0, 10, 20, 40) * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    count, members, facts = _state(services, list_id)
    assert count == len(members) == len(facts) == 60


def test_a_merge_moves_memberships_and_facts_to_the_survivor(
    services: Services, project: Project
) -> None:
    store = _store(services)
    absorbed = _profile(services, project.id, None, "anon@example.com")
    survivor = _profile(services, project.id, "known")
    only_absorbed, both = _static(store, project.id, "A"), _static(store, project.id, "B")
    store.add_members(project.id, only_absorbed, "email", _rows("anon@example.com"), now=_now())
    store.add_members(project.id, both, "email", _rows("anon@example.com"), now=_now())
    store.add_members(project.id, both, "external_id", _rows("known"), now=_now())

    with services.db.writer.begin() as conn:
        conn.execute(sa.delete(profiles).where(profiles.c.id == absorbed))
        ListStore.repoint_profile(conn, project.id, absorbed, survivor)

    assert _state(services, only_absorbed) == (1, [survivor], [(survivor, "entered")])
    count, members, facts = _state(services, both)
    assert (count, members) == (1, [survivor])
    assert facts == [(survivor, "entered"), (survivor, "entered")]  # history, re-pointed


def test_an_erased_profile_leaves_no_membership_or_fact(
    services: Services, project: Project
) -> None:
    store = _store(services)
    gone, kept = _profile(services, project.id, "gone"), _profile(services, project.id, "kept")
    list_id = _static(store, project.id)
    store.add_members(project.id, list_id, "external_id", _rows("gone", "kept"), now=_now())
    with services.db.writer.begin() as conn:
        ListStore.forget_profile(conn, project.id, gone)
    assert _state(services, list_id) == (1, [kept], [(kept, "entered")])


def test_members_of_profiles_gone_meanwhile_are_not_shown(
    services: Services, project: Project
) -> None:
    store = _store(services)
    _profile(services, project.id, "a")
    b = _profile(services, project.id, "b")
    list_id = _static(store, project.id)
    store.add_members(project.id, list_id, "external_id", _rows("a", "b"), now=_now())
    with services.db.writer.begin() as conn:
        conn.execute(sa.delete(profiles).where(profiles.c.id == b))
    page = store.members(project.id, list_id, limit=10)
    assert [p["external_id"] for p in page.results] == ["a"]


def test_a_rule_change_is_a_new_version_and_other_changes_are_not(
    services: Services, project: Project
) -> None:
    store = _store(services)
    rule: dict[str, Any] = {"type": "wrapper", "operator": "and", "children": []}
    created = store.create(project.id, name="D", type="dynamic", rule=rule, tags=[], now=1)
    renamed = store.update(project.id, created.id, now=2, name="E", tags=["x"])
    assert (renamed.version, renamed.state, renamed.updated_at) == (1, "loading", 2)
    same = store.update(project.id, created.id, now=3, rule=dict(rule))
    assert (same.version, same.updated_at) == (1, 2)
    changed = store.update(project.id, created.id, now=4, rule={**rule, "operator": "or"})
    assert (changed.version, changed.state, changed.name, changed.tags) == (
        2,
        "loading",
        "E",
        ["x"],
    )
