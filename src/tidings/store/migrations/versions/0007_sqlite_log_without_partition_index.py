"""SQLite: the ingest log without its (partition, seq) index.

On SQLite one consumer owns every partition and reads the log in position order (the
primary key); the index served only per-partition reads, which need several workers
(PostgreSQL). Keeping it up to date cost a fifth of the API's CPU per request
(`bench/ingest_inproc.py`: 100-event requests 1,082 to 1,260 µs with it, 916 to 1,025 µs
without; single events 49 µs and 37 µs; docs/benchmarks.md), most of it while the group
committer holds the write lock.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.drop_index("ix_ingest_log_partition_seq", table_name="ingest_log")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.create_index("ix_ingest_log_partition_seq", "ingest_log", ["partition", "seq"])
