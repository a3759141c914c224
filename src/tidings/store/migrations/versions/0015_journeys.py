"""Journeys: journeys, their steps, entrances (unique per journey, entrance step, profile,
entrance key and occurrence), paths, timers, waits, step counters, the outbox of events a
step emits, rate windows, schedule runs and the list changes handled.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BigId = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "journeys",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("tags", Json, nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("archived", sa.Boolean, nullable=False),
        sa.Column("settings", Json, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("published_at", sa.BigInteger, nullable=True),
        sa.Column("deleted_at", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_journeys_project", "journeys", ["project_id", "id"])
    op.create_table(
        "journey_steps",
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
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("removed_at", sa.BigInteger, nullable=True),
        sa.UniqueConstraint("journey_id", "uuid", name="uq_journey_steps_uuid"),
    )
    op.create_table(
        "journey_entrances",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("journey_id", sa.Integer, nullable=False),
        sa.Column("entrance_step_id", sa.Integer, nullable=False),
        sa.Column("profile_id", sa.String(32), nullable=False),
        sa.Column("entrance_key", sa.String(255), nullable=False),
        sa.Column("occurrence", sa.String(64), nullable=False),
        sa.Column("step_id", sa.Integer, nullable=True),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("event", Json, nullable=True),
        sa.Column("holdout", sa.Boolean, nullable=False),
        sa.Column("branch", sa.String(64), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("ended_at", sa.BigInteger, nullable=True),
        sa.Column("goal_at", sa.BigInteger, nullable=True),
        sa.UniqueConstraint(
            "journey_id",
            "entrance_step_id",
            "profile_id",
            "entrance_key",
            "occurrence",
            name="uq_journey_entrances_once",
        ),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_journey_entrances_profile", "journey_entrances", ["project_id", "profile_id"]
    )
    op.create_index(
        "ix_journey_entrances_step", "journey_entrances", ["journey_id", "step_id", "state"]
    )
    op.create_table(
        "journey_path",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("entrance_id", sa.BigInteger, nullable=False),
        sa.Column("step_id", sa.Integer, nullable=False),
        sa.Column("entered_at", sa.BigInteger, nullable=False),
        sa.Column("completed_at", sa.BigInteger, nullable=True),
        sa.Column("outcome", sa.String(32), nullable=True),
        sa.UniqueConstraint("entrance_id", "step_id", name="uq_journey_path_step"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "journey_timers",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("journey_id", sa.Integer, nullable=False),
        sa.Column("entrance_id", sa.BigInteger, nullable=False),
        sa.Column("step_id", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("due_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("entrance_id", "kind", name="uq_journey_timers_entrance"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_journey_timers_due", "journey_timers", ["due_at"])
    op.create_table(
        "journey_waits",
        sa.Column("entrance_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("profile_id", sa.String(32), nullable=False),
        sa.Column("step_id", sa.Integer, nullable=False),
        sa.Column("event_name", sa.String(255), nullable=True),
        sa.Column("list_id", sa.Integer, nullable=True),
        sa.Column("match_value", sa.Text, nullable=True),
    )
    op.create_index("ix_journey_waits_profile", "journey_waits", ["project_id", "profile_id"])
    op.create_table(
        "journey_step_stats",
        sa.Column("journey_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("step_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("shard", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("entered", sa.BigInteger, nullable=False),
        sa.Column("completed", sa.BigInteger, nullable=False),
        sa.Column("failed", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "journey_outbox",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("payload", Json, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "journey_rates",
        sa.Column("step_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("child", sa.String(64), primary_key=True, autoincrement=False),
        sa.Column("window_start", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("count", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "journey_schedule_runs",
        sa.Column("step_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("occurrence_at", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "journey_list_seen",
        sa.Column("change_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    # Dropping a table drops its indexes.
    op.drop_table("journey_list_seen")
    op.drop_table("journey_schedule_runs")
    op.drop_table("journey_rates")
    op.drop_table("journey_outbox")
    op.drop_table("journey_step_stats")
    op.drop_table("journey_waits")
    op.drop_table("journey_timers")
    op.drop_table("journey_path")
    op.drop_table("journey_entrances")
    op.drop_table("journey_steps")
    op.drop_table("journeys")
