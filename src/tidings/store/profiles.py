"""Profiles, identities, events and devices: the pipeline's writes and the API's reads."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from tidings.domain import limits
from tidings.store import rollups
from tidings.store.bulk import BulkInsert
from tidings.store.database import Writer
from tidings.store.rollups import ErasedDay
from tidings.store.tables import (
    devices,
    event_message_ids,
    events,
    identities,
    log_positions,
    merge_rejections,
    profiles,
)

__all__ = ["ProfileRow", "ProfileStore"]

_CHUNK = 300
logger = logging.getLogger(__name__)

_encode_json = msgspec.json.Encoder().encode


def _json(value: Any) -> str:
    return _encode_json(value).decode()


class _BulkInsertReturning(BulkInsert):
    """A ``BulkInsert`` whose suffix ends with ``RETURNING …``: the rows it returns."""

    def returning(self, conn: Connection, rows: Sequence[Sequence[Any]]) -> list[Any]:
        found: list[Any] = []
        for start in range(0, len(rows), self._chunk):
            chunk = rows[start : start + self._chunk]
            params = tuple(value for row in chunk for value in row)
            found.extend(conn.exec_driver_sql(self._statement(len(chunk)), params).all())
        return found


@dataclass(slots=True)
class ProfileRow:
    id: str
    project_id: int
    external_id: str | None
    email: str | None
    phone: str | None
    timezone: str | None
    locale: str | None
    data: dict[str, Any]
    created_at: int
    updated_at: int
    is_new: bool = False
    dirty: bool = False

    def as_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "project_id": self.project_id,
            "external_id": self.external_id,
            "email": self.email,
            "phone": self.phone,
            "timezone": self.timezone,
            "locale": self.locale,
            "data": self.data,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


class ProfileStore:
    def __init__(self, writer: Writer, reader: Engine) -> None:
        self.writer = writer
        self.reader = reader
        insert = postgresql.insert if writer.dialect.name == "postgresql" else sqlite.insert
        # The per-event inserts are multi-row statements at driver level (store/bulk.py):
        # they run inside the consumer's write transaction, which the committer waits for.
        dialect, style = writer.dialect.name, writer.dialect.paramstyle
        self._insert_events = BulkInsert(
            dialect,
            style,
            "events",
            (
                "id",
                "project_id",
                "profile_id",
                "message_id",
                "name",
                "external_id",
                "anonymous_id",
                "data",
                "created_at",
                "received_at",
                "context",
            ),
            json_columns=("data", "context"),
        )
        # De-duplication by (project, message id): events itself has no unique constraint
        # on it (PostgreSQL's partitioned table cannot). ``_claim_message_ids`` tells which
        # ids were new, for concurrent workers; one worker needs no answer.
        message_id_columns = ("project_id", "message_id", "created_at")
        self._insert_message_ids = BulkInsert(
            dialect, style, "event_message_ids", message_id_columns, suffix="ON CONFLICT DO NOTHING"
        )
        self._claim_message_ids = _BulkInsertReturning(
            dialect,
            style,
            "event_message_ids",
            message_id_columns,
            suffix="ON CONFLICT DO NOTHING RETURNING message_id",
        )
        self._insert_identities = BulkInsert(
            dialect,
            style,
            "identities",
            ("project_id", "kind", "value", "profile_id", "created_at"),
            suffix="ON CONFLICT DO NOTHING",
        )
        self._insert_profiles = BulkInsert(
            dialect,
            style,
            "profiles",
            (
                "id",
                "project_id",
                "external_id",
                "email",
                "phone",
                "timezone",
                "locale",
                "data",
                "created_at",
                "updated_at",
            ),
            json_columns=("data",),
        )
        device_insert = insert(devices)
        self._upsert_device = device_insert.on_conflict_do_update(
            index_elements=["project_id", "device_id"],
            set_={
                name: device_insert.excluded[name]
                for name in (
                    "profile_id",
                    "token",
                    "os",
                    "os_version",
                    "model",
                    "app_build",
                    "app_version",
                    "sdk_version",
                    "updated_at",
                )
            },
        )
        position_insert = insert(log_positions)
        self._upsert_position = position_insert.on_conflict_do_update(
            index_elements=["partition"], set_={"seq": position_insert.excluded.seq}
        )

    # -- pipeline writes (inside the consumer's transaction) ------------------------------

    @staticmethod
    def lookup_identities(
        conn: Connection, keys: Iterable[tuple[int, str, str]]
    ) -> dict[tuple[int, str, str], str]:
        # Grouped by (project, kind) so that the lookup is an index search: SQLite plans a
        # row-value IN over the whole key as a table scan (measured: 50 ms vs 1 ms for 300
        # keys in 200,000 identities).
        found: dict[tuple[int, str, str], str] = {}
        groups: dict[tuple[int, str], list[str]] = {}
        for project_id, kind, value in keys:
            groups.setdefault((project_id, kind), []).append(value)
        for (project_id, kind), values in groups.items():
            for start in range(0, len(values), _CHUNK):
                rows = conn.execute(
                    sa.select(identities.c.value, identities.c.profile_id).where(
                        identities.c.project_id == project_id,
                        identities.c.kind == kind,
                        identities.c.value.in_(values[start : start + _CHUNK]),
                    )
                )
                for value, profile_id in rows:
                    found[(project_id, kind, value)] = profile_id
        return found

    @staticmethod
    def existing_message_ids(conn: Connection, project_id: int, ids: Iterable[str]) -> set[str]:
        """Those of ``ids`` already stored for the project (within the retention window)."""
        found: set[str] = set()
        id_list = list(ids)
        for start in range(0, len(id_list), _CHUNK):
            found.update(
                conn.execute(
                    sa.select(event_message_ids.c.message_id).where(
                        event_message_ids.c.project_id == project_id,
                        event_message_ids.c.message_id.in_(id_list[start : start + _CHUNK]),
                    )
                ).scalars()
            )
        return found

    def record_message_ids(
        self, conn: Connection, rows: list[dict[str, Any]], *, count: bool = False
    ) -> int:
        """Store the message ids of events about to be inserted (unique within ``rows``).

        Returns how many were new when ``count`` (read with ``RETURNING``: fewer than
        ``len(rows)`` means another writer stored one of them since the batch was read),
        else ``len(rows)``. Inserted in key order, so that two concurrent writers of
        overlapping ids wait for each other instead of deadlocking.
        """
        if not rows:
            return 0
        values = sorted((r["project_id"], r["message_id"], r["created_at"]) for r in rows)
        if count:
            return len(self._claim_message_ids.returning(conn, values))
        self._insert_message_ids(conn, values)
        return len(rows)

    @staticmethod
    def load_profiles(conn: Connection, ids: Iterable[str]) -> dict[str, ProfileRow]:
        loaded: dict[str, ProfileRow] = {}
        id_list = list(ids)
        for start in range(0, len(id_list), _CHUNK):
            chunk = id_list[start : start + _CHUNK]
            for row in conn.execute(sa.select(profiles).where(profiles.c.id.in_(chunk))):
                loaded[row.id] = ProfileRow(
                    id=row.id,
                    project_id=row.project_id,
                    external_id=row.external_id,
                    email=row.email,
                    phone=row.phone,
                    timezone=row.timezone,
                    locale=row.locale,
                    data=dict(row.data or {}),
                    created_at=row.created_at,
                    updated_at=row.updated_at,
                )
        return loaded

    def save_profiles(self, conn: Connection, rows: Sequence[ProfileRow]) -> None:
        new = [p.as_row() for p in rows if p.is_new]
        changed = [
            {
                "b_id": p.id,
                "external_id": p.external_id,
                "email": p.email,
                "phone": p.phone,
                "timezone": p.timezone,
                "locale": p.locale,
                "data": p.data,
                "updated_at": p.updated_at,
            }
            for p in rows
            if p.dirty and not p.is_new
        ]
        if new:
            self._insert_profiles(
                conn,
                [
                    (
                        p["id"],
                        p["project_id"],
                        p["external_id"],
                        p["email"],
                        p["phone"],
                        p["timezone"],
                        p["locale"],
                        _json(p["data"]),
                        p["created_at"],
                        p["updated_at"],
                    )
                    for p in new
                ],
            )
        if changed:
            conn.execute(
                sa.update(profiles)
                .where(profiles.c.id == sa.bindparam("b_id"))
                .values(
                    external_id=sa.bindparam("external_id"),
                    email=sa.bindparam("email"),
                    phone=sa.bindparam("phone"),
                    timezone=sa.bindparam("timezone"),
                    locale=sa.bindparam("locale"),
                    data=sa.bindparam("data", type_=profiles.c.data.type),
                    updated_at=sa.bindparam("updated_at"),
                ),
                changed,
            )

    def insert_identities(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._insert_identities(
                conn,
                [
                    (r["project_id"], r["kind"], r["value"], r["profile_id"], r["created_at"])
                    for r in rows
                ],
            )

    def insert_events(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._insert_events(
                conn,
                [
                    (
                        r["id"],
                        r["project_id"],
                        r["profile_id"],
                        r["message_id"],
                        r["name"],
                        r["external_id"],
                        r["anonymous_id"],
                        _json(r["data"]),
                        r["created_at"],
                        r["received_at"],
                        _json(r["context"]) if r.get("context") is not None else None,
                    )
                    for r in rows
                ],
            )

    def upsert_devices(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """By ``device_id``, else by ``token``: an app reinstalled under a new device id
        keeps its push token, and must not leave a second device holding it."""
        for row in rows:  # one by one: the same device may appear twice in a batch
            token = row.get("token")
            if token:
                by_token = conn.execute(
                    sa.select(devices.c.id, devices.c.device_id).where(
                        devices.c.project_id == row["project_id"], devices.c.token == token
                    )
                ).first()
                if by_token is not None and by_token.device_id != row["device_id"]:
                    taken = conn.execute(
                        sa.select(devices.c.id).where(
                            devices.c.project_id == row["project_id"],
                            devices.c.device_id == row["device_id"],
                        )
                    ).first()
                    if taken is None:  # the token's device, renamed
                        values = {k: v for k, v in row.items() if k not in ("id", "created_at")}
                        conn.execute(
                            sa.update(devices).where(devices.c.id == by_token.id).values(values)
                        )
                        continue
                    conn.execute(  # the token moved to another device: drop it here
                        sa.update(devices).where(devices.c.id == by_token.id).values(token=None)
                    )
            conn.execute(self._upsert_device, row)
        for project_id, profile_id in {(r["project_id"], r["profile_id"]) for r in rows}:
            self._trim_devices(conn, project_id, profile_id)

    @staticmethod
    def _trim_devices(conn: Connection, project_id: int, profile_id: str) -> None:
        """A profile keeps its ``limits.MAX_DEVICES_PER_PROFILE`` most recently updated
        devices (an app reinstalled again and again makes a new device id each time)."""
        owned = (devices.c.project_id == project_id, devices.c.profile_id == profile_id)
        kept = (
            sa.select(devices.c.id)
            .where(*owned)
            .order_by(devices.c.updated_at.desc(), devices.c.id.desc())
            .limit(limits.MAX_DEVICES_PER_PROFILE)
        )
        conn.execute(sa.delete(devices).where(*owned, devices.c.id.not_in(kept)))

    @staticmethod
    def erase_profile(conn: Connection, project_id: int, profile_id: str) -> list[ErasedDay]:
        """Delete a profile and everything that is about it (its events' message ids too:
        a retry of an erased event is stored again, as it was before they had a table).
        Returns what its events counted per name and UTC day, read before they go: the
        reporting rollups subtract it (store/rollups.py)."""
        gone = rollups.erased_days(conn, project_id, profile_id)
        conn.execute(
            sa.delete(event_message_ids).where(
                event_message_ids.c.project_id == project_id,
                event_message_ids.c.message_id.in_(
                    sa.select(events.c.message_id).where(
                        events.c.project_id == project_id, events.c.profile_id == profile_id
                    )
                ),
            )
        )
        for table in (events, identities, devices):
            conn.execute(
                sa.delete(table).where(
                    table.c.project_id == project_id, table.c.profile_id == profile_id
                )
            )
        conn.execute(
            sa.delete(merge_rejections).where(
                merge_rejections.c.project_id == project_id,
                sa.or_(
                    merge_rejections.c.profile_id == profile_id,
                    merge_rejections.c.other_profile_id == profile_id,
                ),
            )
        )
        conn.execute(
            sa.delete(profiles).where(
                profiles.c.project_id == project_id, profiles.c.id == profile_id
            )
        )
        return gone

    @staticmethod
    def insert_rejections(conn: Connection, rows: list[dict[str, Any]]) -> None:
        if rows:  # a reason quotes an id (up to 255 characters itself): fit the column
            rows = [{**row, "reason": row["reason"][:255]} for row in rows]
            conn.execute(sa.insert(merge_rejections), rows)

    @staticmethod
    def merge_profiles(conn: Connection, project_id: int, absorbed: str, survivor: str) -> None:
        """Re-point everything of ``absorbed`` to ``survivor``, then drop ``absorbed``."""
        for table in (events, identities, devices):
            conn.execute(
                sa.update(table)
                .where(table.c.project_id == project_id, table.c.profile_id == absorbed)
                .values(profile_id=survivor)
            )
        for column in (merge_rejections.c.profile_id, merge_rejections.c.other_profile_id):
            conn.execute(
                sa.update(merge_rejections)
                .where(merge_rejections.c.project_id == project_id, column == absorbed)
                .values({column.name: survivor})
            )
        conn.execute(
            sa.delete(profiles).where(
                profiles.c.project_id == project_id, profiles.c.id == absorbed
            )
        )

    @staticmethod
    def lock_profiles(conn: Connection, ids: Iterable[str]) -> dict[str, int]:
        """``updated_at`` of the profiles that exist, locked until the transaction ends
        (in id order, so that two workers never deadlock on them)."""
        found: dict[str, int] = {}
        id_list = sorted(ids)
        for start in range(0, len(id_list), _CHUNK):
            rows = conn.execute(
                sa.select(profiles.c.id, profiles.c.updated_at)
                .where(profiles.c.id.in_(id_list[start : start + _CHUNK]))
                .order_by(profiles.c.id)
                .with_for_update()
            )
            found.update({profile_id: updated for profile_id, updated in rows})
        return found

    @staticmethod
    def lock_positions(conn: Connection, partitions: Sequence[int]) -> dict[int, int]:
        """Stored positions of ``partitions``, locked until the transaction ends."""
        rows = conn.execute(
            sa.select(log_positions.c.partition, log_positions.c.seq)
            .where(log_positions.c.partition.in_(list(partitions)))
            .order_by(log_positions.c.partition)
            .with_for_update()
        )
        return {int(partition): int(seq) for partition, seq in rows}

    def set_positions(self, conn: Connection, positions: dict[int, int]) -> None:
        """Store each partition's applied position (one statement for all of them)."""
        if positions:
            rows = [{"partition": p, "seq": seq} for p, seq in sorted(positions.items())]
            conn.execute(self._upsert_position, rows)

    def ensure_positions(self, partitions: Iterable[int]) -> None:
        """A position row (0) for every partition, so that workers can lock it."""
        rows = [{"partition": p, "seq": 0} for p in partitions]
        insert = postgresql.insert if self.writer.dialect.name == "postgresql" else sqlite.insert
        with self.writer.begin() as conn:
            conn.execute(insert(log_positions).on_conflict_do_nothing(), rows)

    def positions(self) -> dict[int, int]:
        with self.reader.connect() as conn:
            return {p: s for p, s in conn.execute(sa.select(log_positions))}

    # -- reads ------------------------------------------------------------------------------

    def rejections_at(self, project_id: int, seqs: list[int]) -> dict[int, str]:
        """Merges refused while applying these log positions: position → explanation."""
        with self.reader.connect() as conn:
            rows = conn.execute(
                sa.select(
                    merge_rejections.c.log_seq,
                    merge_rejections.c.anonymous_id,
                    merge_rejections.c.reason,
                ).where(
                    merge_rejections.c.project_id == project_id,
                    merge_rejections.c.log_seq.in_(seqs),
                )
            ).all()
        return {seq: _refusal(anonymous, reason) for seq, anonymous, reason in rows}

    def link_rejections(
        self, project_id: int, links: set[tuple[str, str]], since: int
    ) -> dict[tuple[str, str], str]:
        """Links ``(anonymous_id, external_id)`` refused at or after ``since`` (µs):
        ``(anonymous_id, external_id)`` → explanation. A refusal is final (the anonymous
        id belongs to another identified user), so any such refusal answers for a request
        accepted at ``since`` that asked for the same link."""
        table = merge_rejections
        found: dict[tuple[str, str], str] = {}
        with self.reader.connect() as conn:
            for chunk in _chunks(sorted(links), 500):
                rows = conn.execute(
                    sa.select(table.c.anonymous_id, table.c.external_id, table.c.reason).where(
                        table.c.project_id == project_id,
                        table.c.anonymous_id.in_([anonymous for anonymous, _ in chunk]),
                        table.c.created_at >= since,
                    )
                ).all()
                wanted = set(chunk)
                for anonymous, external, reason in rows:
                    if (anonymous, external) in wanted:
                        found[(anonymous, external)] = _refusal(anonymous, reason)
        return found

    def profile_id_for(self, project_id: int, kind: str, value: str) -> str | None:
        with self.reader.connect() as conn:
            return conn.execute(
                sa.select(identities.c.profile_id).where(
                    identities.c.project_id == project_id,
                    identities.c.kind == kind,
                    identities.c.value == value,
                )
            ).scalar_one_or_none()

    def get_profile(self, project_id: int, profile_id: str) -> dict[str, Any] | None:
        with self.reader.connect() as conn:
            row = conn.execute(
                sa.select(profiles).where(
                    profiles.c.id == profile_id, profiles.c.project_id == project_id
                )
            ).first()
            if row is None:
                return None
            anonymous_ids = list(
                conn.execute(
                    sa.select(identities.c.value)
                    .where(
                        identities.c.profile_id == profile_id,
                        identities.c.project_id == project_id,
                        identities.c.kind == "anonymous",
                    )
                    .order_by(identities.c.created_at, identities.c.value)
                ).scalars()
            )
            device_rows = conn.execute(
                sa.select(devices)
                .where(devices.c.profile_id == profile_id, devices.c.project_id == project_id)
                .order_by(devices.c.updated_at.desc())
            ).all()
            rejection_rows = conn.execute(
                sa.select(merge_rejections)
                .where(
                    merge_rejections.c.project_id == project_id,
                    sa.or_(
                        merge_rejections.c.profile_id == profile_id,
                        merge_rejections.c.other_profile_id == profile_id,
                    ),
                )
                .order_by(merge_rejections.c.created_at, merge_rejections.c.id)
            ).all()
        return {
            "id": row.id,
            "project_id": project_id,
            "external_id": row.external_id,
            "anonymous_ids": anonymous_ids,
            "email": row.email,
            "phone": row.phone,
            "timezone": row.timezone,
            "locale": row.locale,
            "data": row.data or {},
            "created_at": row.created_at,
            "updated_at": row.updated_at,
            "devices": [
                {
                    "device_id": d.device_id,
                    "token": d.token,
                    "os": d.os,
                    "os_version": d.os_version,
                    "model": d.model,
                    "app_build": d.app_build,
                    "app_version": d.app_version,
                    "sdk_version": d.sdk_version,
                    "created_at": d.created_at,
                    "updated_at": d.updated_at,
                }
                for d in device_rows
            ],
            "merge_rejections": [
                {
                    "anonymous_id": r.anonymous_id,
                    "external_id": r.external_id,
                    "reason": r.reason,
                    "created_at": r.created_at,
                }
                for r in rejection_rows
            ],
        }


def data_fits(before: dict[str, Any], after: dict[str, Any], profile_id: str) -> bool:
    """Whether a profile's ``data`` may become ``after``: at most
    ``limits.MAX_PROFILE_DATA_BYTES`` as compact JSON, or no larger than it was (an update
    that shrinks an oversized profile is always applied). Else the update's ``data`` is
    dropped (its other fields still apply) and that is logged."""
    size = len(_encode_json(after))
    if size <= limits.MAX_PROFILE_DATA_BYTES or size <= len(_encode_json(before)):
        return True
    logger.warning(
        "profile %s: a traits update was not applied: data would be %d bytes, over the limit of %d",
        profile_id,
        size,
        limits.MAX_PROFILE_DATA_BYTES,
    )
    return False


def _refusal(anonymous_id: str, reason: str) -> str:
    return (
        f"Not linked: anonymous_id {anonymous_id!r}: {reason}; two identified users "
        "are never merged."
    )


def _chunks(items: list[tuple[str, str]], size: int) -> list[list[tuple[str, str]]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
