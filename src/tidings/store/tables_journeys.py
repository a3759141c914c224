"""The tables of the journeys area, on the shared metadata of store/tables.py
(which imports this module, so that migrations and their tests see one schema).

- ``journeys``: a journey, its status (draft | live | off), settings, archived flag.
- ``journey_steps``: its graph, one row per step uuid; a step removed by an edit keeps its
  row (``removed_at``) so that users still on it can be moved by the documented rule.
- ``journey_entrances``: one user's pass through a journey. **Unique per (journey, entrance
  step, profile, entrance key, occurrence)**: the database, not a check, makes entering
  exactly-once (``occurrence`` is ``0`` unless the entrance allows re-entry).
- ``journey_path``: the steps an entrance went through, one row per (entrance, step).
- ``journey_timers``: what must happen at ``due_at``, one row per (entrance, kind):
  ``run`` (a step held until then: a delay, quiet hours, a throttle), ``timeout`` (a wait's),
  ``recheck`` (a wait of a journey turned back on), ``move`` (an edit moved the entrance
  or changed its delay: decide again now); claimed in the transaction that applies it.
- ``journey_ready`` (migration 0022): duration delays fired in bulk, one row per entrance
  (the delay step, the timer's due time, when it fired): the delay is complete, and the
  entrance's next step runs from the ready queue (``journeys/timers.py``). Narrow, with
  one index, so that firing writes as little as it can per timer.
- ``journey_waits``: entrances waiting at a wait step for an event or a list change.
- ``journey_step_stats``: per-step counters (entered, completed, failed), in shards:
  each transaction adds to the shard of its thread, so that workers side by side do not
  wait on one another's counter rows; reads sum the shards.
- ``journey_outbox``: events and trait updates a step emits, appended to the ingest log
  after the step's transaction commits (stable message ids make that at-least-once
  append exactly-once in effect).
- ``journey_rates``: per-step counts per rate window (balancer, throttle).
- ``journey_schedule_runs``: the schedule entrance's occurrences already run.
- ``journey_list_seen``: list changes a list entrance or a list wait has handled.
- ``journey_marks``: named points in time the worker keeps (``lists``: every list change
  created before it, less the lag a transaction may take to commit, was handled).
"""

from __future__ import annotations

import sqlalchemy as sa

from tidings.store.tables import Json, Micros, metadata

__all__ = [
    "journey_entrances",
    "journey_list_seen",
    "journey_marks",
    "journey_outbox",
    "journey_path",
    "journey_rates",
    "journey_ready",
    "journey_schedule_runs",
    "journey_step_stats",
    "journey_steps",
    "journey_timers",
    "journey_waits",
    "journeys",
]

BigId = sa.BigInteger().with_variant(sa.Integer, "sqlite")

journeys = sa.Table(
    "journeys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("project_id", sa.Integer, nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("tags", Json, nullable=False),
    sa.Column("status", sa.String(8), nullable=False),  # draft | live | off
    sa.Column("archived", sa.Boolean, nullable=False),
    sa.Column("settings", Json, nullable=False),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("updated_at", Micros, nullable=False),
    sa.Column("published_at", Micros, nullable=True),
    sa.Column("deleted_at", Micros, nullable=True),
    sa.Column("live_at", Micros, nullable=True),  # when it last went live (list entrances)
    sa.Index("ix_journeys_project", "project_id", "id"),
)

journey_steps = sa.Table(
    "journey_steps",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("journey_id", sa.Integer, nullable=False),
    sa.Column("uuid", sa.String(64), nullable=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("name", sa.String(255), nullable=True),
    sa.Column("data", Json, nullable=False),
    sa.Column("data_key", sa.String(255), nullable=True),
    sa.Column("x", sa.Float, nullable=True),
    sa.Column("y", sa.Float, nullable=True),
    sa.Column("children", Json, nullable=False),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("updated_at", Micros, nullable=False),
    sa.Column("removed_at", Micros, nullable=True),
    sa.UniqueConstraint("journey_id", "uuid", name="uq_journey_steps_uuid"),
)

journey_entrances = sa.Table(
    "journey_entrances",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("project_id", sa.Integer, nullable=False),
    sa.Column("journey_id", sa.Integer, nullable=False),
    sa.Column("entrance_step_id", sa.Integer, nullable=False),
    sa.Column("profile_id", sa.String(32), nullable=False),
    sa.Column("entrance_key", sa.String(255), nullable=False),  # '' without a key
    sa.Column("occurrence", sa.String(64), nullable=False),
    sa.Column("step_id", sa.Integer, nullable=True),  # where it is now
    sa.Column("state", sa.String(12), nullable=False),  # running | waiting | done | failed
    sa.Column("event", Json, nullable=True),  # the entering event {name, data, created_at}
    sa.Column("holdout", sa.Boolean, nullable=False),
    sa.Column("branch", sa.String(64), nullable=True),  # experiment child uuid it took
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("updated_at", Micros, nullable=False),
    sa.Column("ended_at", Micros, nullable=True),
    sa.Column("goal_at", Micros, nullable=True),
    sa.UniqueConstraint(
        "journey_id",
        "entrance_step_id",
        "profile_id",
        "entrance_key",
        "occurrence",
        name="uq_journey_entrances_once",
    ),
    sa.Index("ix_journey_entrances_profile", "project_id", "profile_id"),
    sa.Index("ix_journey_entrances_step", "journey_id", "step_id", "state"),
    sqlite_autoincrement=True,
)

journey_path = sa.Table(
    "journey_path",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("entrance_id", sa.BigInteger, nullable=False),
    sa.Column("step_id", sa.Integer, nullable=False),
    sa.Column("entered_at", Micros, nullable=False),
    sa.Column("completed_at", Micros, nullable=True),
    sa.Column("outcome", sa.String(32), nullable=True),
    sa.UniqueConstraint("entrance_id", "step_id", name="uq_journey_path_step"),
    sqlite_autoincrement=True,
)

journey_timers = sa.Table(
    "journey_timers",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("project_id", sa.Integer, nullable=False),
    sa.Column("journey_id", sa.Integer, nullable=False),
    sa.Column("entrance_id", sa.BigInteger, nullable=False),
    sa.Column("step_id", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),  # run | timeout | recheck | move
    sa.Column("due_at", Micros, nullable=False),
    sa.UniqueConstraint("entrance_id", "kind", name="uq_journey_timers_entrance"),
    sa.Index("ix_journey_timers_due", "due_at"),
    sa.Index("ix_journey_timers_step", "step_id", "kind", "due_at"),
    sqlite_autoincrement=True,
)

journey_ready = sa.Table(
    "journey_ready",
    metadata,
    # The ready queue's order (oldest due first) is the key's; an entrance has at most
    # one row (its ``run`` timer, unique per entrance, was deleted in the same statement).
    sa.Column("due_at", Micros, primary_key=True, autoincrement=False),
    sa.Column("entrance_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("journey_id", sa.Integer, nullable=False),
    sa.Column("step_id", sa.Integer, nullable=False),  # the delay that fired
    sa.Column("fired_at", Micros, nullable=False),
)

journey_waits = sa.Table(
    "journey_waits",
    metadata,
    sa.Column("entrance_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("project_id", sa.Integer, nullable=False),
    sa.Column("profile_id", sa.String(32), nullable=False),
    sa.Column("step_id", sa.Integer, nullable=False),
    sa.Column("event_name", sa.String(255), nullable=True),
    sa.Column("list_id", sa.Integer, nullable=True),
    sa.Column("match_value", sa.Text, nullable=True),  # JSON of the entering event's value
    sa.Index("ix_journey_waits_profile", "project_id", "profile_id"),
)

journey_step_stats = sa.Table(
    "journey_step_stats",
    metadata,
    sa.Column("journey_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("step_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("shard", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("entered", sa.BigInteger, nullable=False),
    sa.Column("completed", sa.BigInteger, nullable=False),
    sa.Column("failed", sa.BigInteger, nullable=False),
)

journey_outbox = sa.Table(
    "journey_outbox",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("project_id", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # event | user
    sa.Column("payload", Json, nullable=False),
    sa.Column("created_at", Micros, nullable=False),
    sqlite_autoincrement=True,
)

journey_rates = sa.Table(
    "journey_rates",
    metadata,
    sa.Column("step_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("child", sa.String(64), primary_key=True),  # '' for a throttle
    sa.Column("window_start", Micros, primary_key=True, autoincrement=False),
    sa.Column("count", sa.BigInteger, nullable=False),
)

journey_schedule_runs = sa.Table(
    "journey_schedule_runs",
    metadata,
    sa.Column("step_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("occurrence_at", Micros, primary_key=True, autoincrement=False),
    sa.Column("created_at", Micros, nullable=False),
)

journey_list_seen = sa.Table(
    "journey_list_seen",
    metadata,
    sa.Column("change_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("created_at", Micros, nullable=False),
)

journey_marks = sa.Table(
    "journey_marks",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("at", Micros, nullable=False),
)
