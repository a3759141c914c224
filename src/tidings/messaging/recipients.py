"""What delivery reads about the users of a claimed batch, a few statements per batch:
their subscription states, the fields templates see, their newest push token."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tidings.store.tables import devices, profiles
from tidings.store.tables_messaging import user_subscriptions

__all__ = ["push_tokens", "states", "template_users"]


def states(conn: Connection, profile_ids: list[str]) -> dict[tuple[str, int], int]:
    found: dict[tuple[str, int], int] = {}
    ids = sorted(set(profile_ids))
    for start in range(0, len(ids), 500):
        for p, s, st in conn.execute(
            sa.select(
                user_subscriptions.c.profile_id,
                user_subscriptions.c.subscription_id,
                user_subscriptions.c.state,
            ).where(user_subscriptions.c.profile_id.in_(ids[start : start + 500]))
        ):
            found[(p, s)] = st
    return found


def template_users(conn: Connection, ids: set[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    ordered = sorted(ids)
    for start in range(0, len(ordered), 500):
        for row in conn.execute(
            sa.select(
                profiles.c.id,
                profiles.c.external_id,
                profiles.c.email,
                profiles.c.phone,
                profiles.c.timezone,
                profiles.c.locale,
                profiles.c.data,
                profiles.c.created_at,
            ).where(profiles.c.id.in_(ordered[start : start + 500]))
        ):
            data = row.data or {}
            out[row.id] = {
                **data,
                "id": row.external_id,
                "external_id": row.external_id,
                "email": row.email,
                "phone": row.phone,
                "timezone": row.timezone,
                "locale": row.locale,
                "data": data,
            }
    return out


def push_tokens(conn: Connection, ids: set[str]) -> dict[str, dict[str, str]]:
    """The newest device with a push token of each profile."""
    out: dict[str, dict[str, str]] = {}
    if not ids:
        return out
    for row in conn.execute(
        sa.select(devices.c.profile_id, devices.c.token, devices.c.os)
        .where(devices.c.profile_id.in_(sorted(ids)), devices.c.token.is_not(None))
        .order_by(devices.c.updated_at)
    ):
        out[row.profile_id] = {"push_token": row.token, "push_os": row.os or ""}
    return out
