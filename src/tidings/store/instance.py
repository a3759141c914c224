"""Facts about this installation and its users that the public routes need.

- ``instance_secret``: a secret this installation makes for itself on first use and keeps
  in the database (``instance_secrets``), so every API node and worker shares it. Two
  processes starting together agree: the first insert wins, the other reads it.
- ``identity_of``: how to name a profile in an event (its external id, else its first
  anonymous id), for events appended on behalf of a known profile (tracking).
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from tidings.store.database import Writer
from tidings.store.tables import identities
from tidings.store.tables_notifications import instance_secrets

__all__ = ["identity_of", "instance_secret"]


def instance_secret(writer: Writer, name: str, make: Callable[[], str], now: int) -> str:
    """The stored secret ``name``, made with ``make`` and stored if there is none."""
    select = sa.select(instance_secrets.c.value).where(instance_secrets.c.name == name)
    with writer.begin() as conn:
        found = conn.execute(select).scalar_one_or_none()
        if found is not None:
            return str(found)
        insert = postgresql.insert if writer.dialect.name == "postgresql" else sqlite.insert
        conn.execute(
            insert(instance_secrets)
            .values(name=name, value=make(), created_at=now)
            .on_conflict_do_nothing(index_elements=["name"])
        )
        return str(conn.execute(select).scalar_one())


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
