"""The schema, as SQLAlchemy Core tables. Migrations in ``store/migrations`` create it.

Timestamps are integers (microseconds since the epoch, UTC): portable, compact and
totally ordered on both databases. JSON documents use JSON on SQLite and JSONB on
PostgreSQL.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

__all__ = [
    "api_keys",
    "devices",
    "event_message_ids",
    "events",
    "idempotency_keys",
    "identities",
    "ingest_log",
    "list_changes",
    "list_members",
    "lists",
    "log_positions",
    "merge_rejections",
    "metadata",
    "profiles",
    "projects",
    "schema_paths",
    "segment_timers",
]

metadata = sa.MetaData()

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Micros = sa.BigInteger

projects = sa.Table(
    "projects",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("locale", sa.String(255), nullable=True),
    sa.Column("timezone", sa.String(50), nullable=True),
    sa.Column("created_at", Micros, nullable=False),
    # Web origins its public key may be used from (a JSON list); NULL: any (docs/browser.md).
    sa.Column("allowed_origins", Json, nullable=True),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id"), nullable=False),
    sa.Column("scope", sa.String(10), nullable=False),
    sa.Column("role", sa.String(20), nullable=True),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("hint", sa.String(16), nullable=False),
    sa.Column("name", sa.String(255), nullable=True),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("revoked_at", Micros, nullable=True),
)

ingest_log = sa.Table(
    "ingest_log",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("partition", sa.Integer, nullable=False),
    sa.Column("project_id", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("accepted_at", Micros, nullable=False),
    # Positions must never be reused after a trim, or a consumer would skip new entries.
    sqlite_autoincrement=True,
)
# Per-partition reads (several workers): PostgreSQL only. On SQLite one consumer reads
# every partition in position order, and keeping the index cost 15-25% of an ingest
# request's CPU (migration 0007).
sa.Index(
    "ix_ingest_log_partition_seq",
    ingest_log.c.partition,
    ingest_log.c.seq,
    info={"dialects": ("postgresql",)},
).ddl_if(dialect="postgresql")

log_positions = sa.Table(
    "log_positions",
    metadata,
    sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("project_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("status", sa.Integer, nullable=True),
    sa.Column("body", sa.LargeBinary, nullable=True),
    sa.Column("created_at", Micros, nullable=False),
    sa.Index("ix_idempotency_keys_created_at", "created_at"),
)

profiles = sa.Table(
    "profiles",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("project_id", sa.Integer, nullable=False),
    sa.Column("external_id", sa.String(255), nullable=True),
    sa.Column("email", sa.String(320), nullable=True),
    sa.Column("phone", sa.String(32), nullable=True),
    sa.Column("timezone", sa.String(50), nullable=True),
    sa.Column("locale", sa.String(255), nullable=True),
    sa.Column("data", Json, nullable=False),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("updated_at", Micros, nullable=False),
    sa.Index("ix_profiles_project_external", "project_id", "external_id"),
    sa.Index("ix_profiles_project_created", "project_id", "created_at", "id"),
    sa.Index("ix_profiles_project_email", "project_id", "email"),
    sa.Index("ix_profiles_project_phone", "project_id", "phone"),
)

# Emails matched ignoring case (static list members by email): migration 0008.
sa.Index("ix_profiles_project_lower_email", profiles.c.project_id, sa.func.lower(profiles.c.email))

identities = sa.Table(
    "identities",
    metadata,
    sa.Column("project_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("value", sa.String(255), primary_key=True),
    sa.Column("profile_id", sa.String(32), nullable=False),
    sa.Column("created_at", Micros, nullable=False),
    sa.Index("ix_identities_profile", "profile_id"),
)

# On PostgreSQL ``events`` is partitioned by month of ``created_at`` (``events_YYYYMM``
# plus ``events_default``, see store/partitions.py), so its key includes ``created_at`` and
# it can hold no unique constraint on anything else: ``message_id`` de-duplication lives in
# ``event_message_ids``. ``ix_events_created_at`` serves retention (store/retention.py):
# a BRIN index on PostgreSQL (tiny, cheap to maintain), a B-tree on SQLite.
events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("project_id", sa.Integer, nullable=False),
    sa.Column("profile_id", sa.String(32), nullable=False),
    sa.Column("message_id", sa.String(255), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("external_id", sa.String(255), nullable=True),
    sa.Column("anonymous_id", sa.String(255), nullable=True),
    sa.Column("data", Json, nullable=False),
    sa.Column("created_at", Micros, primary_key=True, autoincrement=False),
    sa.Column("received_at", Micros, nullable=False),
    sa.Column("context", Json, nullable=True),  # e.g. the Segment spec's context object
    sa.Index("ix_events_profile_time", "project_id", "profile_id", "created_at", "id"),
    # Segment rules: one person's events of one name in a time range (migration 0006).
    sa.Index("ix_events_profile_name_time", "project_id", "profile_id", "name", "created_at"),
    sa.Index("ix_events_created_at", "created_at", postgresql_using="brin"),
    postgresql_partition_by="RANGE (created_at)",
)

# The message ids of stored events: a retried event (same project and message id) is
# dropped. ``created_at`` is the event's, so that retention forgets both together.
event_message_ids = sa.Table(
    "event_message_ids",
    metadata,
    sa.Column("project_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("message_id", sa.String(255), primary_key=True),
    sa.Column("created_at", Micros, nullable=False),
    sa.Index("ix_event_message_ids_created_at", "created_at"),
)

devices = sa.Table(
    "devices",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("project_id", sa.Integer, nullable=False),
    sa.Column("profile_id", sa.String(32), nullable=False),
    sa.Column("device_id", sa.String(255), nullable=False),
    sa.Column("token", sa.String(4096), nullable=True),
    sa.Column("os", sa.String(64), nullable=True),
    sa.Column("os_version", sa.String(64), nullable=True),
    sa.Column("model", sa.String(255), nullable=True),
    sa.Column("app_build", sa.String(64), nullable=True),
    sa.Column("app_version", sa.String(64), nullable=True),
    sa.Column("sdk_version", sa.String(64), nullable=True),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("updated_at", Micros, nullable=False),
    sa.UniqueConstraint("project_id", "device_id", name="uq_devices_project_device"),
    sa.Index("ix_devices_profile", "profile_id"),
    sa.Index("ix_devices_project_token", "project_id", "token"),
)

schema_paths = sa.Table(
    "schema_paths",
    metadata,
    sa.Column("project_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("source", sa.String(16), primary_key=True),  # trait | event
    sa.Column("event_name", sa.String(255), primary_key=True),  # '' for traits
    sa.Column("path", sa.String(512), primary_key=True),
    sa.Column("type", sa.String(16), primary_key=True),
    sa.Column("first_seen_at", Micros, nullable=False),
    sa.Column("last_seen_at", Micros, nullable=False),
)

merge_rejections = sa.Table(
    "merge_rejections",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("project_id", sa.Integer, nullable=False),
    sa.Column("anonymous_id", sa.String(255), nullable=False),
    sa.Column("external_id", sa.String(255), nullable=False),
    sa.Column("profile_id", sa.String(32), nullable=False),
    sa.Column("other_profile_id", sa.String(32), nullable=False),
    sa.Column("reason", sa.String(255), nullable=False),
    sa.Column("log_seq", sa.BigInteger, nullable=False),
    sa.Column("created_at", Micros, nullable=False),
    sa.Index("ix_merge_rejections_profile", "profile_id"),
    sa.Index("ix_merge_rejections_other", "other_profile_id"),
    # The users/batch answer's reads (migration 0009).
    sa.Index("ix_merge_rejections_project_seq", "project_id", "log_seq"),
    sa.Index("ix_merge_rejections_project_anonymous", "project_id", "anonymous_id"),
)

# -- lists (segments) ---------------------------------------------------------------------
# A list's members are rows of ``list_members`` whatever its type. ``version`` counts rule
# changes: a back-fill of version N upserts the members it finds with version N, then
# removes those still below N, so a recomputation is a diff (enter/leave facts only for the
# difference). ``list_changes`` is the append-only record of those enter/leave facts.

lists = sa.Table(
    "lists",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("project_id", sa.Integer, nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("type", sa.String(16), nullable=False),  # static | dynamic
    sa.Column("rule", Json, nullable=True),  # dynamic lists only
    sa.Column("state", sa.String(16), nullable=False),  # draft | loading | ready
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("users_count", sa.BigInteger, nullable=False),
    sa.Column("tags", Json, nullable=False),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("updated_at", Micros, nullable=False),
    sa.Column("deleted_at", Micros, nullable=True),
    # The back-fill of a dynamic list (segments/backfill.py): the version it is computing,
    # the last profile id done (profiles are visited in id order), and done/total counts.
    sa.Column("backfill_version", sa.Integer, nullable=True),
    sa.Column("backfill_cursor", sa.String(32), nullable=True),
    sa.Column("backfill_done", sa.BigInteger, nullable=True),
    sa.Column("backfill_total", sa.BigInteger, nullable=True),
    sa.Index("ix_lists_project", "project_id", "id"),
)

list_members = sa.Table(
    "list_members",
    metadata,
    sa.Column("list_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("profile_id", sa.String(32), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),  # the list version that (re)found it
    sa.Column("added_at", Micros, nullable=False),
    sa.Index("ix_list_members_list_added", "list_id", "added_at", "profile_id"),
    sa.Index("ix_list_members_profile", "profile_id"),
)

list_changes = sa.Table(
    "list_changes",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("project_id", sa.Integer, nullable=False),
    sa.Column("list_id", sa.Integer, nullable=False),
    sa.Column("profile_id", sa.String(32), nullable=False),
    sa.Column("change", sa.String(16), nullable=False),  # entered | left
    sa.Column("list_version", sa.Integer, nullable=False),
    sa.Column("created_at", Micros, nullable=False),
    # A list's facts by time; ``change`` and ``project_id`` ride along so that the list
    # growth per day (reporting/history.py) reads its window from the index alone.
    sa.Index("ix_list_changes_list_time", "list_id", "created_at", "change", "project_id"),
    sa.Index("ix_list_changes_profile", "project_id", "profile_id", "created_at"),
    sqlite_autoincrement=True,
)

# When the clock alone will change whether a profile matches a dynamic list (a counted event
# leaving a rolling window, a relative date passing a stored one): the worker re-evaluates
# the pair at ``due_at`` (segments/realtime.py). One row per (list, profile), member or not.
segment_timers = sa.Table(
    "segment_timers",
    metadata,
    sa.Column("list_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("profile_id", sa.String(32), primary_key=True),
    sa.Column("due_at", Micros, nullable=False),
    sa.Index("ix_segment_timers_due", "due_at"),
    sa.Index("ix_segment_timers_profile", "profile_id"),
)

# The engagement areas keep their tables in modules of their own, on this same metadata.
from tidings.store import (  # noqa: E402
    tables_admin,
    tables_journeys,
    tables_messaging,
    tables_notifications,
    tables_reporting,
)

__all__ += ["tables_admin", "tables_journeys", "tables_messaging", "tables_reporting"]
__all__ += ["tables_notifications"]
