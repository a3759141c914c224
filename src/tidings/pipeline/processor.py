"""Apply a batch of log records to profiles, identities, events and devices.

The whole batch, and the partition's new log position, commit in one transaction: a
crash before the commit replays the batch, after it the batch is never seen again.
Records are applied in log order in memory, then written with a few bulk statements.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.engine import Connection, Engine

from tidings.domain.ids import new_device_id, new_event_id, new_profile_id, new_ulid
from tidings.domain.ingest import LogRecord
from tidings.domain.profiles import PROFILE_FIELDS, merge_traits
from tidings.domain.schema import infer_paths
from tidings.segments.realtime import BatchChanges, RealtimeSegments, profile_state
from tidings.store.database import Writer
from tidings.store.lists import ListStore
from tidings.store.profiles import ProfileRow, ProfileStore, data_fits
from tidings.store.rollups import ErasedDay
from tidings.store.schema import SchemaStore

__all__ = ["BatchFacts", "BatchHook", "BatchProcessor", "StaleBatch"]

logger = logging.getLogger(__name__)

EXTERNAL = "external"
ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class BatchFacts:
    """What one batch wrote, for the hooks that follow it in its transaction."""

    events: list[dict[str, Any]]  # rows inserted into ``events`` (duplicates already dropped)
    merges: list[tuple[int, str, str]]  # (project, absorbed profile, survivor)
    erased: list[tuple[int, str]]  # (project, profile)
    profiles: list[ProfileRow]  # every profile the batch touched, as written
    # What each erased profile's deleted events counted, per name and UTC day:
    # (project, profile) -> [(name, day, count, first, last created_at)]
    erased_events: dict[tuple[int, str], list[ErasedDay]] = field(default_factory=dict)


class BatchHook(Protocol):
    """Runs inside a batch's write transaction, after its rows and the dynamic lists.

    It must be idempotent with the batch: a batch that fails (or is stale) is computed
    and applied again, hooks included, and nothing of the failed attempt is kept.
    """

    def apply(self, conn: Connection, facts: BatchFacts, now: int) -> None: ...


class StaleBatch(Exception):
    """What the batch was computed from changed before it could be written (another
    worker wrote the same profile, or took over the partition): compute it again."""


class _Batch:
    """The in-memory state of one batch: identities and profiles touched so far."""

    def __init__(self, conn: Connection, store: ProfileStore, now: int) -> None:
        self.conn = conn
        self.store = store
        self.now = now
        self.identities: dict[tuple[int, str, str], str] = {}
        self.profiles: dict[str, ProfileRow] = {}
        self.new_identities: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.devices: list[dict[str, Any]] = []
        self.merges: list[tuple[int, str, str]] = []  # (project, absorbed, survivor)
        self.erased: list[tuple[int, str]] = []  # (project, profile) that existed before
        self.rejections: list[dict[str, Any]] = []
        self.schema: set[tuple[int, str, str, str, str]] = set()
        self.seq = 0  # the log position of the record being applied
        self.read_versions: dict[str, int] = {}  # profile → updated_at as read
        self.before: dict[str, tuple[Any, ...]] = {}  # profile → as read (segments)

    def load(self, ids: set[str]) -> None:
        loaded = self.store.load_profiles(self.conn, ids)
        self.profiles.update(loaded)
        for profile_id, row in loaded.items():
            self.read_versions.setdefault(profile_id, row.updated_at)
            self.before.setdefault(profile_id, profile_state(row))

    def profile(self, profile_id: str) -> ProfileRow:
        found = self.profiles.get(profile_id)
        if found is None:
            self.load({profile_id})
            found = self.profiles.get(profile_id)
            if found is None:  # merged away or erased by another worker since the lookup
                raise StaleBatch(f"profile {profile_id} is gone")
        return found

    def touch(self, profile: ProfileRow) -> None:
        """Mark a profile changed. Its ``updated_at`` always grows, so that a concurrent
        writer that read the old value can tell it changed (see ``BatchProcessor``)."""
        profile.dirty = True
        profile.updated_at = max(self.now, profile.updated_at + 1)

    def _link(self, project_id: int, kind: str, value: str, profile_id: str) -> None:
        self.identities[(project_id, kind, value)] = profile_id
        self.new_identities.append(
            {
                "project_id": project_id,
                "kind": kind,
                "value": value,
                "profile_id": profile_id,
                "created_at": self.now,
            }
        )

    def _create(self, project_id: int, external_id: str | None) -> ProfileRow:
        profile = ProfileRow(
            id=new_profile_id(),
            project_id=project_id,
            external_id=external_id,
            email=None,
            phone=None,
            timezone=None,
            locale=None,
            data={},
            created_at=self.now,
            updated_at=self.now,
            is_new=True,
        )
        self.profiles[profile.id] = profile
        return profile

    def resolve(self, project_id: int, external_id: str | None, anonymous_id: str | None) -> str:
        """The profile these ids name, linking and creating as needed.

        A known external id wins. When both ids already have profiles, the anonymous one
        is merged into the known one, unless it is itself known under another external
        id: two identified users are never merged.
        """
        by_external = self.identities.get((project_id, EXTERNAL, external_id or ""))
        by_anonymous = self.identities.get((project_id, ANONYMOUS, anonymous_id or ""))
        if external_id and by_external:
            if anonymous_id and not by_anonymous:
                self._link(project_id, ANONYMOUS, anonymous_id, by_external)
            elif anonymous_id and by_anonymous and by_anonymous != by_external:
                absorbed = self.profile(by_anonymous)
                if absorbed.external_id in (None, external_id):
                    self._merge(absorbed, self.profile(by_external))
                else:
                    self._reject(project_id, anonymous_id, external_id, absorbed, by_external)
            return by_external
        if anonymous_id and by_anonymous:
            if external_id:
                profile = self.profile(by_anonymous)
                if profile.external_id is None:
                    profile.external_id = external_id
                    self.touch(profile)
                    self._link(project_id, EXTERNAL, external_id, profile.id)
                    return profile.id
                created = self._create(project_id, external_id)
                self._link(project_id, EXTERNAL, external_id, created.id)
                self._reject(project_id, anonymous_id, external_id, profile, created.id)
                return created.id
            return by_anonymous
        created = self._create(project_id, external_id)
        if external_id:
            self._link(project_id, EXTERNAL, external_id, created.id)
        if anonymous_id:
            self._link(project_id, ANONYMOUS, anonymous_id, created.id)
        return created.id

    def _reject(
        self,
        project_id: int,
        anonymous_id: str,
        external_id: str,
        holder: ProfileRow,
        other_profile_id: str,
    ) -> None:
        """Record a merge refused because the anonymous id already belongs to another
        identified user: it stays where it is, and both profiles show the refusal."""
        logger.info(
            "merge refused: anonymous id %r belongs to %r, not %r",
            anonymous_id,
            holder.external_id,
            external_id,
        )
        self.rejections.append(
            {
                "id": f"mrj_{new_ulid()}",
                "project_id": project_id,
                "anonymous_id": anonymous_id,
                "external_id": external_id,
                "profile_id": holder.id,
                "other_profile_id": other_profile_id,
                "reason": f"anonymous id belongs to user {holder.external_id!r}",
                "log_seq": self.seq,
                "created_at": self.now,
            }
        )

    def _repoint(self, old: str, new: str | None) -> None:
        """Rows of this batch not yet written that belong to ``old``: move them to ``new``,
        or drop them when ``new`` is None (erased)."""
        for rows in (self.new_identities, self.events, self.devices):
            if new is None:
                rows[:] = [r for r in rows if r["profile_id"] != old]
            else:
                for row in rows:
                    if row["profile_id"] == old:
                        row["profile_id"] = new
        for key, profile_id in list(self.identities.items()):
            if profile_id == old:
                if new is None:
                    del self.identities[key]
                else:
                    self.identities[key] = new

    def erase(self, profile_id: str) -> None:
        profile = self.profile(profile_id)
        self._repoint(profile_id, None)
        self.profiles.pop(profile_id, None)
        if not profile.is_new:
            self.erased.append((profile.project_id, profile_id))

    def _merge(self, absorbed: ProfileRow, survivor: ProfileRow) -> None:
        """Fold ``absorbed`` into ``survivor``: traits by latest write, rows re-pointed."""
        older, newer = sorted((absorbed, survivor), key=lambda p: p.updated_at)
        survivor.data = {**older.data, **newer.data}
        for name in PROFILE_FIELDS:
            value = getattr(newer, name) or getattr(older, name)
            setattr(survivor, name, value)
        survivor.created_at = min(absorbed.created_at, survivor.created_at)
        survivor.updated_at = max(survivor.updated_at, absorbed.updated_at)
        self.touch(survivor)
        self._repoint(absorbed.id, survivor.id)
        self.profiles.pop(absorbed.id, None)
        if not absorbed.is_new:
            self.merges.append((absorbed.project_id, absorbed.id, survivor.id))

    def note_schema(self, project_id: int, source: str, name: str, data: dict[str, Any]) -> None:
        for path, kind in infer_paths(data):
            self.schema.add((project_id, source, name, path, kind))

    def apply_traits(self, profile_id: str, traits: dict[str, Any]) -> None:
        profile = self.profile(profile_id)
        changed = False
        for name in PROFILE_FIELDS:
            if name in traits and getattr(profile, name) != traits[name]:
                setattr(profile, name, traits[name])
                changed = True
        patch = traits.get("data")
        if patch:
            self.note_schema(profile.project_id, "trait", "", patch)
            merged = merge_traits(profile.data, patch)
            if merged != profile.data and data_fits(profile.data, merged, profile.id):
                profile.data = merged
                changed = True
        if changed:
            self.touch(profile)


class BatchProcessor:
    """Applies batches of log records.

    A batch is read and computed outside the write transaction, then written in one short
    one. With one worker (SQLite, or one process) nobody else writes profiles meanwhile.
    With ``concurrent`` (PostgreSQL, where several workers may run), one person's ids can
    sit in partitions owned by different workers, so the write transaction first checks,
    under row locks taken in id order, that what the batch was computed from still holds:
    the partitions' positions are the ones it read from (no other worker took over), every
    profile it read has the same ``updated_at`` (which grows with every change) and every
    profile it points rows at still exists, and after inserting identities, that each one
    maps where the batch thinks. Otherwise ``StaleBatch``: the caller computes it again.
    """

    def __init__(
        self,
        writer: Writer,
        reader: Engine,
        store: ProfileStore,
        schema: SchemaStore | None = None,
        *,
        concurrent: bool = False,
        segments: RealtimeSegments | None = None,
        hooks: Sequence[BatchHook] = (),
    ) -> None:
        self.writer = writer
        self.reader = reader
        self.store = store
        self.schema = schema or SchemaStore(writer, reader)
        self.concurrent = concurrent
        self.segments = segments  # dynamic lists kept up to date with each batch
        # Journeys (entrances, waits), reporting rollups: each sees what the batch wrote,
        # in its transaction, after the segments (so list changes are recorded).
        self.hooks = list(hooks)

    def process(
        self,
        records: list[LogRecord],
        now: int,
        also: Callable[[Connection], None] | None = None,
        expected_positions: dict[int, int] | None = None,
    ) -> None:
        """Apply ``records`` (in log order); ``expected_positions`` are the stored positions
        of their partitions the caller read from (checked when ``concurrent``)."""
        if not records:
            return
        with self.reader.connect() as read:
            fresh = self._without_duplicates(read, records)
            batch = _Batch(read, self.store, now)
            batch.identities = self.store.lookup_identities(read, self._identity_keys(records))
            preload = {
                batch.identities[key]
                for record in records
                if record.kind != "event" or "user" in record.payload
                for key in self._keys_of(record)
                if key in batch.identities
            }
            batch.load(preload)
            for record in fresh:
                self._apply(batch, record)
        with self.writer.begin() as conn:
            if self.concurrent:
                self._check_still_current(conn, batch, records, expected_positions)
            # Rows already in the database first (merges re-point, erasures delete), then
            # this batch's own rows, which were re-pointed or dropped in memory.
            for project_id, absorbed, survivor in batch.merges:
                self.store.merge_profiles(conn, project_id, absorbed, survivor)
                ListStore.repoint_profile(conn, project_id, absorbed, survivor)
            erased_events: dict[tuple[int, str], list[ErasedDay]] = {}
            for project_id, profile_id in batch.erased:
                erased_events[(project_id, profile_id)] = self.store.erase_profile(
                    conn, project_id, profile_id
                )
                ListStore.forget_profile(conn, project_id, profile_id)
            self.store.save_profiles(conn, list(batch.profiles.values()))
            self.store.insert_identities(conn, batch.new_identities)
            if self.concurrent and batch.new_identities:
                self._check_identities(conn, batch)
            # The message ids first: with several workers, one that another worker stored
            # since this batch was read (the same event, retried into another partition)
            # makes the batch stale, and computing it again drops the duplicate.
            stored = self.store.record_message_ids(conn, batch.events, count=self.concurrent)
            if stored < len(batch.events):
                raise StaleBatch("an event's message id was stored by another worker meanwhile")
            self.store.insert_events(conn, batch.events)
            self.store.upsert_devices(conn, batch.devices)
            self.store.insert_rejections(conn, batch.rejections)
            self.schema.record(conn, sorted(batch.schema), now)
            if self.segments is not None:  # dynamic lists, in this transaction
                changes = BatchChanges.collect(
                    batch.profiles.values(), batch.before, batch.events, batch.merges, batch.erased
                )
                self.segments.apply(conn, changes, now)
            if self.hooks:
                facts = BatchFacts(
                    events=batch.events,
                    merges=batch.merges,
                    erased=batch.erased,
                    profiles=list(batch.profiles.values()),
                    erased_events=erased_events,
                )
                for hook in self.hooks:
                    hook.apply(conn, facts, now)
            last: dict[int, int] = {}
            for record in records:  # in log order: the last one of a partition wins
                last[record.partition] = record.seq
            self.store.set_positions(conn, last)
            if also is not None:
                also(conn)

    def _check_still_current(
        self,
        conn: Connection,
        batch: _Batch,
        records: list[LogRecord],
        expected_positions: dict[int, int] | None,
    ) -> None:
        partitions = sorted({r.partition for r in records})
        stored = self.store.lock_positions(conn, partitions)
        expected = expected_positions or {}
        for partition in partitions:
            if stored.get(partition, 0) != expected.get(partition, 0):
                raise StaleBatch(f"partition {partition} moved on: another worker holds it")
        new = {p.id for p in batch.profiles.values() if p.is_new}
        referenced = set(batch.read_versions)
        for rows in (batch.events, batch.devices, batch.new_identities):
            referenced.update(row["profile_id"] for row in rows)
        referenced.update(survivor for _, _, survivor in batch.merges)
        referenced -= new
        current = self.store.lock_profiles(conn, referenced)
        for profile_id in referenced:
            if profile_id not in current:
                raise StaleBatch(f"profile {profile_id} is gone")
            read = batch.read_versions.get(profile_id)
            if read is not None and current[profile_id] != read:
                raise StaleBatch(f"profile {profile_id} changed")

    def _check_identities(self, conn: Connection, batch: _Batch) -> None:
        keys = {(r["project_id"], r["kind"], r["value"]) for r in batch.new_identities}
        stored = self.store.lookup_identities(conn, keys)
        for key in keys:
            wanted = batch.identities.get(key)
            if wanted is not None and stored.get(key) != wanted:
                raise StaleBatch(f"identity {key[1]}:{key[2]} was linked elsewhere meanwhile")

    def _without_duplicates(self, conn: Connection, records: list[LogRecord]) -> list[LogRecord]:
        """The records minus events whose message id was already stored (or appears earlier
        in this batch): a duplicate has no effect at all, not even on traits or identities.
        Stored ids are those in ``event_message_ids``, which retention prunes with the
        events: a retry of an event older than the retention window is stored again.
        """
        wanted: dict[int, set[str]] = {}
        for record in records:
            if record.kind == "event":
                wanted.setdefault(record.project_id, set()).add(record.payload["message_id"])
        seen = {
            (project_id, message_id)
            for project_id, ids in wanted.items()
            for message_id in self.store.existing_message_ids(conn, project_id, ids)
        }
        fresh = []
        for record in records:
            if record.kind == "event":
                key = (record.project_id, record.payload["message_id"])
                if key in seen:
                    continue
                seen.add(key)
            fresh.append(record)
        return fresh

    @staticmethod
    def _keys_of(record: LogRecord) -> list[tuple[int, str, str]]:
        keys = []
        payload = record.payload
        if payload.get("external_id"):
            keys.append((record.project_id, EXTERNAL, payload["external_id"]))
        if payload.get("anonymous_id"):
            keys.append((record.project_id, ANONYMOUS, payload["anonymous_id"]))
        return keys

    def _identity_keys(self, records: list[LogRecord]) -> set[tuple[int, str, str]]:
        return {key for record in records for key in self._keys_of(record)}

    @staticmethod
    def _apply(batch: _Batch, record: LogRecord) -> None:
        payload = record.payload
        batch.seq = record.seq
        if record.kind == "erase":
            found = batch.identities.get((record.project_id, EXTERNAL, payload["external_id"]))
            if found is not None:
                batch.erase(found)
            return
        profile_id = batch.resolve(
            record.project_id, payload.get("external_id"), payload.get("anonymous_id")
        )
        if record.kind == "event":
            user = payload.get("user")
            if user:
                batch.apply_traits(profile_id, user)
            if payload.get("data"):
                batch.note_schema(record.project_id, "event", payload["name"], payload["data"])
            batch.events.append(
                {
                    "id": new_event_id(),
                    "project_id": record.project_id,
                    "profile_id": profile_id,
                    "message_id": payload["message_id"],
                    "name": payload["name"],
                    "external_id": payload.get("external_id"),
                    "anonymous_id": payload.get("anonymous_id"),
                    "data": payload.get("data") or {},
                    "created_at": payload.get("created_at") or record.accepted_at,
                    "received_at": record.accepted_at,
                    "context": payload.get("context"),
                }
            )
        elif record.kind in ("identify", "user"):
            batch.apply_traits(profile_id, payload)
        elif record.kind == "device":
            batch.devices.append(
                {
                    "id": new_device_id(),
                    "project_id": record.project_id,
                    "profile_id": profile_id,
                    "device_id": payload["device_id"],
                    "token": payload.get("token"),
                    "os": payload.get("os"),
                    "os_version": payload.get("os_version"),
                    "model": payload.get("model"),
                    "app_build": payload.get("app_build"),
                    "app_version": payload.get("app_version"),
                    "sdk_version": payload.get("sdk_version"),
                    "created_at": record.accepted_at,
                    "updated_at": record.accepted_at,
                }
            )
        # "alias" needs nothing beyond the resolve above.
