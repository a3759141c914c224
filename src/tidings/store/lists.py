"""Lists (segments): their definitions, their members, and the facts of entering and leaving.

Every membership change happens in one transaction that first locks the list's row
(``SELECT … FOR UPDATE`` on PostgreSQL; SQLite has one writer at a time), so the members,
``users_count`` and the ``list_changes`` facts always agree, whoever else writes the list.

Recomputing a dynamic list (the back-fill) is meant to diff: upsert every member it finds
with the list's new ``version``, then remove the members still below it; ``list_changes``
records only who entered and who left.

Cursors are URL-safe base64 JSON: lists ``["n"|"p", id]``, members
``["n"|"p", added_at, profile_id]``; ``n`` continues with older rows, ``p`` with newer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tidings.domain.errors import Conflict, NotFound
from tidings.domain.membership import IdKind, MemberRow, Tally
from tidings.store import cursors
from tidings.store.bulk import BulkInsert
from tidings.store.database import Writer
from tidings.store.tables import (
    idempotency_keys,
    identities,
    list_changes,
    list_members,
    lists,
    profiles,
)
from tidings.store.users import UserQueries

__all__ = ["UNSET", "ListPage", "ListRow", "ListStore", "MemberPage", "MembershipChange"]

_CHUNK = 1000  # values per IN (…): far below SQLite's and PostgreSQL's parameter limits
T = TypeVar("T")
Then = Callable[[Connection, T], None] | None


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()  # "leave this field alone" in ``update``


@dataclass(frozen=True, slots=True)
class ListRow:
    id: int
    project_id: int
    name: str
    type: Literal["static", "dynamic"]
    rule: dict[str, Any] | None
    state: Literal["draft", "loading", "ready"]
    version: int
    users_count: int
    tags: list[str]
    created_at: int
    updated_at: int
    # The back-fill of a dynamic list's rule (segments/backfill.py): the version it is
    # computing, and how many of the project's profiles it has done out of how many.
    backfill_version: int | None = None
    backfill_done: int | None = None
    backfill_total: int | None = None

    @property
    def progress(self) -> tuple[int, int | None] | None:
        """(done, total) while a dynamic list is loading; total is None until the
        back-fill of the current version has started. None once ready."""
        if self.type != "dynamic" or self.state != "loading":
            return None
        if self.backfill_version != self.version or self.backfill_total is None:
            return (0, None)
        done = self.backfill_done or 0
        return (done, max(done, self.backfill_total))


@dataclass(frozen=True, slots=True)
class MembershipChange:
    """A profile entering (``add``) or leaving a list at ``at``, as of list ``version``."""

    project_id: int
    list_id: int
    version: int
    profile_id: str
    add: bool
    at: int


@dataclass(frozen=True, slots=True)
class ListPage:
    results: list[ListRow]
    next_cursor: str | None
    prev_cursor: str | None
    limit: int


@dataclass(frozen=True, slots=True)
class MemberPage:
    results: list[dict[str, Any]]  # profiles, in the shape of ProfileStore.get_profile
    next_cursor: str | None
    prev_cursor: str | None
    limit: int


def _row(row: Any) -> ListRow:
    return ListRow(
        id=row.id,
        project_id=row.project_id,
        name=row.name,
        type=row.type,
        rule=row.rule,
        state=row.state,
        version=row.version,
        users_count=row.users_count,
        tags=list(row.tags or []),
        created_at=row.created_at,
        updated_at=row.updated_at,
        backfill_version=row.backfill_version,
        backfill_done=row.backfill_done,
        backfill_total=row.backfill_total,
    )


def _chunks(values: Sequence[T], size: int = _CHUNK) -> Iterable[Sequence[T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _alive(project_id: int, list_id: int) -> Any:
    return sa.and_(
        lists.c.id == list_id, lists.c.project_id == project_id, lists.c.deleted_at.is_(None)
    )


class ListStore:
    def __init__(self, writer: Writer, reader: Engine) -> None:
        self.writer = writer
        self.reader = reader

    # -- definitions ------------------------------------------------------------------------

    def create(
        self,
        project_id: int,
        *,
        name: str,
        type: Literal["static", "dynamic"],
        rule: dict[str, Any] | None,
        tags: list[str],
        now: int,
        then: Then[ListRow] = None,
    ) -> ListRow:
        """A new list: static lists are ``ready`` (and empty), dynamic ones ``loading`` until
        their back-fill is done. ``then`` runs in the same transaction."""
        values: dict[str, Any] = {
            "project_id": project_id,
            "name": name,
            "type": type,
            "rule": rule,
            "state": "ready" if type == "static" else "loading",
            "version": 1,
            "users_count": 0,
            "tags": tags,
            "created_at": now,
            "updated_at": now,
        }
        with self.writer.begin() as conn:
            inserted = conn.execute(sa.insert(lists).values(values)).inserted_primary_key
            assert inserted is not None
            created = ListRow(id=int(inserted[0]), **values)
            if then is not None:
                then(conn, created)
        return created

    def get(self, project_id: int, list_id: int) -> ListRow | None:
        with self.reader.connect() as conn:
            row = conn.execute(sa.select(lists).where(_alive(project_id, list_id))).first()
        return _row(row) if row is not None else None

    def page(self, project_id: int, *, limit: int, cursor: str | None = None) -> ListPage:
        """The project's lists, newest first."""
        position = cursors.decode(cursor, tuple[Literal["n", "p"], int]) if cursor else None
        scope = [lists.c.project_id == project_id, lists.c.deleted_at.is_(None)]
        query = sa.select(lists).where(*scope)
        backwards = position is not None and position[0] == "p"
        if position is None:
            query = query.order_by(lists.c.id.desc())
        elif backwards:
            query = query.where(lists.c.id > position[1]).order_by(lists.c.id.asc())
        else:
            query = query.where(lists.c.id < position[1]).order_by(lists.c.id.desc())
        with self.reader.connect() as conn:
            rows = list(conn.execute(query.limit(limit + 1)).all())
            more = len(rows) > limit
            rows = rows[:limit]
            if backwards:
                rows.reverse()
            top = rows[0].id if rows else (position[1] if position else None)
            bottom = rows[-1].id if rows else (position[1] if position else None)

            def exists(condition: Any) -> bool:
                found = conn.execute(sa.select(lists.c.id).where(*scope, condition).limit(1))
                return found.first() is not None

            if backwards:
                has_prev = more
                has_next = bottom is not None and exists(lists.c.id < bottom)
            else:
                has_next = more
                has_prev = position is not None and top is not None and exists(lists.c.id > top)
        return ListPage(
            results=[_row(r) for r in rows],
            next_cursor=cursors.encode("n", bottom) if has_next and bottom is not None else None,
            prev_cursor=cursors.encode("p", top) if has_prev and top is not None else None,
            limit=limit,
        )

    def update(
        self,
        project_id: int,
        list_id: int,
        *,
        now: int,
        name: str = UNSET,
        rule: dict[str, Any] | None = UNSET,
        tags: list[str] = UNSET,
        then: Then[ListRow] = None,
    ) -> ListRow:
        """Change what is given. A different rule is a new ``version`` of the list, to be
        back-filled: the list is ``loading`` until then."""
        with self.writer.begin() as conn:
            current = self._lock(conn, project_id, list_id)
            values: dict[str, Any] = {}
            if name is not UNSET and name != current.name:
                values["name"] = name
            if tags is not UNSET and tags != current.tags:
                values["tags"] = tags
            if rule is not UNSET and rule != current.rule:
                values.update(rule=rule, version=current.version + 1, state="loading")
            if values:
                values["updated_at"] = now
                conn.execute(sa.update(lists).where(lists.c.id == list_id).values(values))
                current = _row(conn.execute(sa.select(lists).where(lists.c.id == list_id)).one())
            if then is not None:
                then(conn, current)
        return current

    def delete(self, project_id: int, list_id: int, *, now: int) -> bool:
        """Hide the list for good and drop its members. Deleting a list is not its members
        leaving it: no ``left`` facts are recorded."""
        with self.writer.begin() as conn:
            deleted = conn.execute(
                sa.update(lists).where(_alive(project_id, list_id)).values(deleted_at=now)
            ).rowcount
            if deleted:
                conn.execute(sa.delete(list_members).where(list_members.c.list_id == list_id))
        return bool(deleted)

    @staticmethod
    def _lock(conn: Connection, project_id: int, list_id: int) -> ListRow:
        row = conn.execute(
            sa.select(lists).where(_alive(project_id, list_id)).with_for_update()
        ).first()
        if row is None:
            raise NotFound(f"No list with id {list_id}.", param="id")
        return _row(row)

    # -- static members ---------------------------------------------------------------------

    def resolve(self, project_id: int, kind: IdKind, values: Iterable[str]) -> dict[str, list[str]]:
        """Profile ids by identifier: an ``external_id`` names one profile; an ``email``
        (matched ignoring case, keyed here in lower case) every profile that has it."""
        wanted = list(dict.fromkeys(v if kind == "external_id" else v.lower() for v in values))
        found: dict[str, list[str]] = {}
        with self.reader.connect() as conn:
            for chunk in _chunks(wanted):
                if kind == "external_id":
                    query = sa.select(identities.c.value, identities.c.profile_id).where(
                        identities.c.project_id == project_id,
                        identities.c.kind == "external",
                        identities.c.value.in_(chunk),
                    )
                    for value, profile_id in conn.execute(query):
                        found.setdefault(value, []).append(profile_id)
                    continue
                # Sorted here, oldest profile first: an ORDER BY would lead SQLite to walk
                # the project's profiles in creation order rather than search the index.
                lowered = sa.func.lower(profiles.c.email)
                query = sa.select(lowered, profiles.c.id, profiles.c.created_at).where(
                    profiles.c.project_id == project_id, lowered.in_(chunk)
                )
                rows = sorted(conn.execute(query), key=lambda r: (r[2], r[1]))
                for value, profile_id, _ in rows:
                    found.setdefault(value, []).append(profile_id)
        return found

    def add_members(
        self,
        project_id: int,
        list_id: int,
        kind: IdKind,
        rows: Sequence[MemberRow],
        *,
        now: int,
        then: Then[Tally] = None,
    ) -> Tally:
        """Add the users these rows name to a static list, in one transaction. Each row is
        counted once: added (it brought in at least one profile), already a member (also
        when an earlier row added the same user), not found, or invalid."""
        return self._change(project_id, list_id, kind, rows, now=now, add=True, then=then)

    def remove_members(
        self,
        project_id: int,
        list_id: int,
        kind: IdKind,
        rows: Sequence[MemberRow],
        *,
        now: int,
        then: Then[Tally] = None,
    ) -> Tally:
        """Remove the users these rows name from a static list; ``changed`` counts rows that
        removed someone, ``unchanged`` rows whose users were not members."""
        return self._change(project_id, list_id, kind, rows, now=now, add=False, then=then)

    def _change(
        self,
        project_id: int,
        list_id: int,
        kind: IdKind,
        rows: Sequence[MemberRow],
        *,
        now: int,
        add: bool,
        then: Then[Tally],
    ) -> Tally:
        tally = Tally()
        # Resolved on the reader, before the write lock: an email lookup may scan profiles.
        found = self.resolve(project_id, kind, (r.value for r in rows if r.value is not None))
        with self.writer.begin() as conn:
            # Profiles merged or erased since the lookup are gone; FOR SHARE keeps the rest
            # until this transaction ends (a merge re-points members after deleting). Locks
            # are taken as the pipeline takes them: profiles in id order, then lists.
            candidates = sorted({p for ids in found.values() for p in ids})
            alive = self._existing(conn, project_id, candidates)
            target = self._lock(conn, project_id, list_id)
            if target.type != "static":
                raise Conflict(
                    f"List {list_id} is dynamic: its members follow its rule.", param="id"
                )
            members = self._members_among(conn, list_id, [p for p in candidates if p in alive])
            changed: list[str] = []
            for row in rows:
                if row.value is None:
                    assert row.error is not None
                    tally.bad(row)
                    continue
                key = row.value if kind == "external_id" else row.value.lower()
                ids = [p for p in found.get(key, ()) if p in alive]
                if not ids:
                    tally.missing(row.row)
                    continue
                if add:
                    fresh = [p for p in ids if p not in members]
                else:
                    fresh = [p for p in ids if p in members]
                if fresh:
                    tally.changed += 1
                    changed.extend(fresh)
                    if add:
                        members.update(fresh)
                    else:
                        members.difference_update(fresh)
                else:
                    tally.unchanged += 1
            if changed:
                self._apply(conn, target, changed, now=now, add=add)
            if then is not None:
                then(conn, tally)
        return tally

    def _apply(
        self, conn: Connection, target: ListRow, profile_ids: list[str], *, now: int, add: bool
    ) -> None:
        self.apply_changes(
            conn,
            project_id=target.project_id,
            list_id=target.id,
            version=target.version,
            profile_ids=profile_ids,
            now=now,
            add=add,
        )

    @staticmethod
    def apply_changes(
        conn: Connection,
        *,
        project_id: int,
        list_id: int,
        version: int,
        profile_ids: Sequence[str],
        now: int,
        add: bool,
        count: bool = True,
    ) -> None:
        """These profiles enter (``add``) or leave the list at ``now``: members, one
        ``list_changes`` fact each, and ``users_count`` (unless ``count``: the caller
        updates it). The caller has checked that each one really changes, and holds the
        locks (see the module docstring); the segments worker uses it for dynamic lists."""
        ListStore.record_changes(
            conn,
            [MembershipChange(project_id, list_id, version, p, add, now) for p in profile_ids],
            count=count,
        )

    @staticmethod
    def record_changes(
        conn: Connection, changes: Sequence[MembershipChange], *, count: bool = True
    ) -> None:
        """``apply_changes`` for many lists at once, each change at its own instant (in
        the order given: a profile may leave and enter again): the members and facts of
        every list in a few statements, then ``users_count`` list by list in id order (the
        order in which every writer takes list rows)."""
        if not changes:
            return
        members, facts = _writers(conn)
        first: dict[tuple[int, str], MembershipChange] = {}
        last: dict[tuple[int, str], MembershipChange] = {}
        for c in changes:
            first.setdefault((c.list_id, c.profile_id), c)
            last[(c.list_id, c.profile_id)] = c
        entering: list[tuple[int, str, int, int]] = []
        leaving: dict[int, list[str]] = {}
        delta: dict[int, int] = {}
        for key, final in last.items():
            was_member = not first[key].add
            if final.add and not was_member:
                entering.append((final.list_id, final.profile_id, final.version, final.at))
                delta[final.list_id] = delta.get(final.list_id, 0) + 1
            elif was_member and not final.add:
                leaving.setdefault(final.list_id, []).append(final.profile_id)
                delta[final.list_id] = delta.get(final.list_id, 0) - 1
        members(conn, entering)
        for list_id, ids in sorted(leaving.items()):
            for chunk in _chunks(ids):
                conn.execute(
                    sa.delete(list_members).where(
                        list_members.c.list_id == list_id, list_members.c.profile_id.in_(chunk)
                    )
                )
        facts(
            conn,
            [
                (
                    c.project_id,
                    c.list_id,
                    c.profile_id,
                    "entered" if c.add else "left",
                    c.version,
                    c.at,
                )
                for c in changes
            ],
        )
        if not count:
            return
        for list_id, change in sorted(delta.items()):
            if change:
                conn.execute(
                    sa.update(lists)
                    .where(lists.c.id == list_id)
                    .values(users_count=lists.c.users_count + change)
                )

    @staticmethod
    def _existing(conn: Connection, project_id: int, profile_ids: list[str]) -> set[str]:
        """Which of these (sorted) profiles exist, share-locked in id order."""
        alive: set[str] = set()
        for chunk in _chunks(profile_ids):
            alive.update(
                conn.execute(
                    sa.select(profiles.c.id)
                    .where(profiles.c.project_id == project_id, profiles.c.id.in_(chunk))
                    .order_by(profiles.c.id)
                    .with_for_update(read=True)
                ).scalars()
            )
        return alive

    @staticmethod
    def _members_among(conn: Connection, list_id: int, profile_ids: list[str]) -> set[str]:
        members: set[str] = set()
        for chunk in _chunks(profile_ids):
            members.update(
                conn.execute(
                    sa.select(list_members.c.profile_id).where(
                        list_members.c.list_id == list_id,
                        list_members.c.profile_id.in_(chunk),
                    )
                ).scalars()
            )
        return members

    def members(
        self, project_id: int, list_id: int, *, limit: int, cursor: str | None = None
    ) -> MemberPage:
        """The list's members, most recently added first, as ``GET /users`` shows them."""
        shape = tuple[Literal["n", "p"], int, str]
        position = cursors.decode(cursor, shape) if cursor else None
        added, pid = list_members.c.added_at, list_members.c.profile_id
        scope = [list_members.c.list_id == list_id]
        query = (
            sa.select(profiles, added)
            .join_from(list_members, profiles, profiles.c.id == pid)
            .where(*scope, profiles.c.project_id == project_id)
        )
        backwards = position is not None and position[0] == "p"
        if position is None:
            query = query.order_by(added.desc(), pid.desc())
        elif backwards:
            query = query.where(_after(added, pid, position[1], position[2]))
            query = query.order_by(added.asc(), pid.asc())
        else:
            query = query.where(_before(added, pid, position[1], position[2]))
            query = query.order_by(added.desc(), pid.desc())
        with self.reader.connect() as conn:
            if (
                conn.execute(sa.select(lists.c.id).where(_alive(project_id, list_id))).first()
                is None
            ):
                raise NotFound(f"No list with id {list_id}.", param="id")
            rows = list(conn.execute(query.limit(limit + 1)).all())
            more = len(rows) > limit
            rows = rows[:limit]
            if backwards:
                rows.reverse()
            edge = (position[1], position[2]) if position is not None else None
            top = (rows[0].added_at, rows[0].id) if rows else edge
            bottom = (rows[-1].added_at, rows[-1].id) if rows else edge

            def exists(condition: Any) -> bool:
                found = conn.execute(sa.select(pid).where(*scope, condition).limit(1))
                return found.first() is not None

            if backwards:
                has_prev = more
                has_next = bottom is not None and exists(_before(added, pid, *bottom))
            else:
                has_next = more
                has_prev = (
                    position is not None and top is not None and exists(_after(added, pid, *top))
                )
            results = UserQueries._present(conn, project_id, rows)
        return MemberPage(
            results=results,
            next_cursor=cursors.encode("n", *bottom) if has_next and bottom else None,
            prev_cursor=cursors.encode("p", *top) if has_prev and top else None,
            limit=limit,
        )

    # -- profiles merged or erased (call inside the pipeline's transaction) -----------------

    @staticmethod
    def _lock_lists_of(conn: Connection, profile_id: str) -> list[int]:
        list_ids = sorted(
            conn.execute(
                sa.select(list_members.c.list_id).where(list_members.c.profile_id == profile_id)
            ).scalars()
        )
        for list_id in list_ids:  # in id order, so two of these never deadlock
            conn.execute(sa.select(lists.c.id).where(lists.c.id == list_id).with_for_update())
        return list_ids

    @classmethod
    def repoint_profile(
        cls, conn: Connection, project_id: int, absorbed: str, survivor: str
    ) -> None:
        """``absorbed`` was merged into ``survivor``: its memberships and facts are the
        survivor's now (one membership where both were members). Call it once the absorbed
        profile's row is locked (``ProfileStore.lock_profiles``) or deleted: membership
        writers share-lock the profiles they add, so none can add it meanwhile."""
        for list_id in cls._lock_lists_of(conn, absorbed):
            both = conn.execute(
                sa.select(list_members.c.profile_id).where(
                    list_members.c.list_id == list_id, list_members.c.profile_id == survivor
                )
            ).first()
            where = sa.and_(
                list_members.c.list_id == list_id, list_members.c.profile_id == absorbed
            )
            if both is None:
                conn.execute(sa.update(list_members).where(where).values(profile_id=survivor))
            else:
                conn.execute(sa.delete(list_members).where(where))
                conn.execute(
                    sa.update(lists)
                    .where(lists.c.id == list_id)
                    .values(users_count=lists.c.users_count - 1)
                )
        conn.execute(
            sa.update(list_changes)
            .where(list_changes.c.project_id == project_id, list_changes.c.profile_id == absorbed)
            .values(profile_id=survivor)
        )

    @classmethod
    def forget_profile(cls, conn: Connection, project_id: int, profile_id: str) -> None:
        """The profile is erased: out of every list, and its facts with it. Call it once the
        profile's row is locked or deleted, as for ``repoint_profile``."""
        for list_id in cls._lock_lists_of(conn, profile_id):
            conn.execute(
                sa.delete(list_members).where(
                    list_members.c.list_id == list_id, list_members.c.profile_id == profile_id
                )
            )
            conn.execute(
                sa.update(lists)
                .where(lists.c.id == list_id)
                .values(users_count=lists.c.users_count - 1)
            )
        conn.execute(
            sa.delete(list_changes).where(
                list_changes.c.project_id == project_id, list_changes.c.profile_id == profile_id
            )
        )

    # -- Idempotency-Key answers, stored with the change they answer ------------------------

    @staticmethod
    def remember_answer(
        conn: Connection,
        project_id: int,
        key: str,
        request_hash: str,
        status: int,
        body: bytes,
        now: int,
    ) -> None:
        """Raises ``sqlalchemy.exc.IntegrityError`` if the key was stored meanwhile: the
        caller's transaction then rolls back, and the stored answer is the one to give."""
        conn.execute(
            sa.insert(idempotency_keys).values(
                project_id=project_id,
                key=key,
                request_hash=request_hash,
                status=status,
                body=body,
                created_at=now,
            )
        )


_WRITERS: dict[tuple[str, str], tuple[Callable[..., None], BulkInsert]] = {}
_PG_MEMBERS = (
    "INSERT INTO list_members (list_id, profile_id, version, added_at) "
    "SELECT * FROM unnest(%s::integer[], %s::varchar[], %s::integer[], %s::bigint[]) "
    "ON CONFLICT DO NOTHING"
)


def _pg_members(conn: Connection, rows: Sequence[tuple[int, str, int, int]]) -> None:
    """One statement of four array parameters whatever the number of rows: psycopg
    parses a query's text for placeholders, which for a multi-row ``VALUES`` of hundreds
    of rows cost more than running it."""
    if rows:
        conn.exec_driver_sql(_PG_MEMBERS, tuple(list(column) for column in zip(*rows, strict=True)))


def _writers(conn: Connection) -> tuple[Callable[..., None], BulkInsert]:
    """Bulk inserts of members (multi-row, or arrays on PostgreSQL) and facts (COPY on
    PostgreSQL): a back-fill writes thousands at a time, and one statement per row cost
    ~45 µs a row."""
    key = (conn.dialect.name, conn.dialect.paramstyle)
    found = _WRITERS.get(key)
    if found is None:
        members: Callable[..., None] = (
            _pg_members
            if key[0] == "postgresql"
            else BulkInsert(
                *key,
                "list_members",
                ("list_id", "profile_id", "version", "added_at"),
                suffix="ON CONFLICT DO NOTHING",
            )
        )
        facts = BulkInsert(
            *key,
            "list_changes",
            ("project_id", "list_id", "profile_id", "change", "list_version", "created_at"),
        )
        found = _WRITERS[key] = (members, facts)
    return found


def _before(time_col: Any, id_col: Any, moment: int, row_id: str) -> Any:
    """Rows older than the position; the plain ``<=`` bounds the index range."""
    return sa.and_(time_col <= moment, sa.or_(time_col < moment, id_col < row_id))


def _after(time_col: Any, id_col: Any, moment: int, row_id: str) -> Any:
    return sa.and_(time_col >= moment, sa.or_(time_col > moment, id_col > row_id))
