"""``RollupHook``: the pipeline's batch hook that keeps the event rollups true.

``bootstrap.build`` passes it to ``BatchProcessor(hooks=[…])``; it runs in the batch's
write transaction after the batch's rows are written: merges first (in the order they
happened), then erasures (their counts come with the facts: the events are deleted
already), then the batch's new events (duplicates of a stored
``message_id`` never reach it: the processor drops them before). A batch that fails is
applied again from scratch, hook included, so nothing here is counted twice. The SQL lives
in store/rollups.py (retention uses it too).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.engine import Connection

from tidings.store import rollups

if TYPE_CHECKING:
    from tidings.pipeline.processor import BatchFacts

__all__ = ["REPAIRS_PER_BATCH", "RollupHook"]

# Stale sketches (keys a merge or an erasure touched) rebuilt from their user-days per
# batch: bounded, so that a large erasure does not stall one batch.
REPAIRS_PER_BATCH = 4


class RollupHook:
    """Applies one batch's facts to the user-days, the rollups and the day sketches."""

    def apply(self, conn: Connection, facts: BatchFacts, now: int) -> None:
        for project_id, absorbed, survivor in facts.merges:
            rollups.merge_profiles(conn, project_id, absorbed, survivor)
        for project_id, profile_id in facts.erased:
            gone = facts.erased_events.get((project_id, profile_id), [])
            rollups.erase_profile(conn, project_id, profile_id, gone)
        rollups.add_events(conn, facts.events)
        rollups.repair_sketches(conn, REPAIRS_PER_BATCH)
