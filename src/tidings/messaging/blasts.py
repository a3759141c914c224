"""Blast campaigns: from ``scheduled`` to ``finished`` (or ``aborted``).

The delivery worker calls ``BlastRunner.tick`` between batches. It moves campaigns
along: a scheduled blast whose time came (for sends in each user's timezone, up to 26
hours early, the widest gap between two timezones) becomes ``loading``; a loading blast
materialises its audience one chunk of profiles at a time, in profile id order (the
lists' members minus the exclusion lists' members, from ``list_members``), so memory
stays bounded whatever the audience; each chunk, its outbox rows and the cursor are one
transaction, so a crash resumes where it stopped and the unique (campaign, profile,
reference) key makes a repeated chunk harmless. Then ``running`` until no send of it is
pending, then ``finished``. ``aborting`` (its pending sends were skipped when it was
asked for) becomes ``aborted`` once no send is in flight.

Who receives is decided again, per send, when it is claimed (subscription state).
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tidings.domain.messaging import wall_clock_in
from tidings.messaging.sql import insert_ignoring, is_postgres
from tidings.store.database import Writer
from tidings.store.tables import list_members, profiles, projects
from tidings.store.tables_messaging import campaigns, sends

__all__ = ["BlastRunner"]

EARLY = 26 * 3_600_000_000  # microseconds: UTC+14 and UTC-12 are 26 hours apart


class BlastRunner:
    def __init__(self, writer: Writer, reader: Engine, *, chunk: int = 2000) -> None:
        self.writer = writer
        self.reader = reader
        self.chunk = chunk

    def tick(self, now: int, *, budget: int = 4) -> bool:
        """Move blasts along; at most ``budget`` audience chunks. True if work remains
        that the caller should come back for at once."""
        with self.reader.connect() as conn:
            rows = conn.execute(
                sa.select(
                    campaigns.c.id,
                    campaigns.c.type,
                    campaigns.c.state,
                    campaigns.c.send_at,
                    campaigns.c.send_in_user_timezone,
                ).where(
                    campaigns.c.state.in_(("scheduled", "loading", "running", "aborting")),
                    campaigns.c.deleted_at.is_(None),
                )
            ).all()
        more = False
        for row in rows:
            if row.state == "scheduled":
                start = (row.send_at or 0) - (EARLY if row.send_in_user_timezone else 0)
                if start <= now:
                    self._move(row.id, "scheduled", "loading", now)
                    more = True
            elif row.state == "loading":
                while budget > 0:
                    budget -= 1
                    if not self.load_chunk(row.id, now):
                        break
                else:
                    more = True
            elif row.state == "running" and row.type == "blast":
                if not self._has(row.id, ("pending", "sending")):
                    self._move(row.id, "running", "finished", now)
            elif row.state == "aborting" and not self._has(row.id, ("sending",)):
                self._move(row.id, "aborting", "aborted", now)
        return more

    def _has(self, campaign_id: int, states: tuple[str, ...]) -> bool:
        with self.reader.connect() as conn:
            return (
                conn.execute(
                    sa.select(sends.c.id)
                    .where(sends.c.campaign_id == campaign_id, sends.c.state.in_(states))
                    .limit(1)
                ).first()
                is not None
            )

    def _move(self, campaign_id: int, old: str, new: str, now: int) -> bool:
        with self.writer.begin() as conn:
            result = conn.execute(
                sa.update(campaigns)
                .where(campaigns.c.id == campaign_id, campaigns.c.state == old)
                .values(state=new, updated_at=now)
            )
        return bool(result.rowcount)

    def load_chunk(self, campaign_id: int, now: int) -> bool:
        """Queue the next chunk of a loading blast's audience; False once it is all queued
        (the campaign is then ``running``) or the campaign is no longer loading."""
        with self.writer.begin() as conn:
            query = sa.select(campaigns).where(campaigns.c.id == campaign_id)
            if is_postgres(conn):
                query = query.with_for_update()
            campaign = conn.execute(query).first()
            if campaign is None or campaign.state != "loading":
                return False
            timezone = conn.execute(
                sa.select(projects.c.timezone).where(projects.c.id == campaign.project_id)
            ).scalar_one_or_none()
            members = self._audience(conn, campaign, campaign.load_cursor)
            send_at = campaign.send_at or now
            due: Callable[[str | None], int] = (
                (lambda tz: wall_clock_in(send_at, timezone, tz))
                if campaign.send_in_user_timezone
                else (lambda tz: send_at)
            )
            rows = [
                {
                    "project_id": campaign.project_id,
                    "campaign_id": campaign.id,
                    "subscription_id": campaign.subscription_id,
                    "profile_id": profile_id,
                    "reference": "blast",
                    "state": "pending",
                    "due_at": due(user_timezone),
                    "attempts": 0,
                    "created_at": now,
                    "updated_at": now,
                }
                for profile_id, user_timezone in members
            ]
            insert_ignoring(conn, sends, rows, ("campaign_id", "profile_id", "reference"))
            done = len(members) < self.chunk
            conn.execute(
                sa.update(campaigns)
                .where(campaigns.c.id == campaign.id)
                .values(
                    load_cursor=members[-1][0] if members else campaign.load_cursor,
                    loaded=campaign.loaded + len(members),
                    state="running" if done else "loading",
                    updated_at=now,
                )
            )
        return not done

    def _audience(
        self, conn: Connection, campaign: sa.Row[tuple[object, ...]], cursor: str | None
    ) -> list[tuple[str, str | None]]:
        """The next chunk of (profile id, timezone) after ``cursor``, in id order."""
        included = list(campaign.list_ids or [])
        excluded = list(campaign.exclusion_list_ids or [])
        if not included:
            return []
        member = list_members.alias("m")
        query = (
            sa.select(member.c.profile_id, profiles.c.timezone)
            .select_from(member.join(profiles, profiles.c.id == member.c.profile_id))
            .where(
                member.c.list_id.in_(included),
                profiles.c.project_id == campaign.project_id,
            )
            .distinct()
            .order_by(member.c.profile_id)
            .limit(self.chunk)
        )
        if cursor is not None:
            query = query.where(member.c.profile_id > cursor)
        if excluded:
            other = list_members.alias("x")
            query = query.where(
                ~sa.exists().where(
                    other.c.list_id.in_(excluded), other.c.profile_id == member.c.profile_id
                )
            )
        return [(p, tz) for p, tz in conn.execute(query)]
