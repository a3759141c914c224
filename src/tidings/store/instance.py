"""Facts about this installation and its users that the public routes need.

- ``InstanceSecrets``: secrets this installation makes for itself on first use and keeps
  in the database (``instance_secrets``), so every API node and worker shares it. Two
  processes starting together agree: the first insert wins, the other reads it.
- ``identity_of``: how to name a profile in an event (its external id, else its first
  anonymous id), for events appended on behalf of a known profile (tracking).
"""

from __future__ import annotations

import secrets
import time

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from tidings.store.database import Writer
from tidings.store.tables import identities
from tidings.store.tables_notifications import instance_secrets


def _now() -> int:
    return time.time_ns() // 1000


__all__ = ["InstanceSecrets", "identity_of"]


class InstanceSecrets:
    """Secrets this installation made for itself, by name (``get`` makes one on first use:
    whoever inserts first wins, the others read it). Cached once read."""

    def __init__(self, writer: Writer, reader: Engine) -> None:
        self.writer = writer
        self.reader = reader
        self._known: dict[str, str] = {}

    def get(self, name: str) -> str:
        known = self._known.get(name)
        if known is not None:
            return known
        select = sa.select(instance_secrets.c.value).where(instance_secrets.c.name == name)
        with self.reader.connect() as conn:
            found = conn.execute(select).scalar_one_or_none()
        if found is None:
            insert = (
                postgresql.insert if self.writer.dialect.name == "postgresql" else sqlite.insert
            )
            with self.writer.begin() as conn:
                conn.execute(
                    insert(instance_secrets)
                    .values(name=name, value=secrets.token_urlsafe(32), created_at=_now())
                    .on_conflict_do_nothing(index_elements=["name"])
                )
                found = conn.execute(select).scalar_one()
        self._known[name] = str(found)
        return str(found)


def identity_of(reader: Engine, project_id: int, profile_id: str) -> tuple[str, str] | None:
    """``("external_id", value)`` or ``("anonymous_id", value)`` naming the profile; None
    when it has no identity left (erased, or merged into another)."""
    with reader.connect() as conn:
        rows = conn.execute(
            sa.select(identities.c.kind, identities.c.value)
            .where(identities.c.project_id == project_id, identities.c.profile_id == profile_id)
            .order_by(identities.c.kind.desc(), identities.c.created_at, identities.c.value)
        ).all()
    for kind, value in rows:  # "external" sorts after "anonymous": first when descending
        return ("external_id" if kind == "external" else "anonymous_id", value)
    return None
