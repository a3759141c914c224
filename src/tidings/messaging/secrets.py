"""Signing keys of this installation, made on first use and shared by every process
through the database (so a token signed by one API node is read by another)."""

from __future__ import annotations

import secrets
import time

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tidings.messaging.sql import insert_ignoring
from tidings.store.database import Writer
from tidings.store.tables_messaging import installation_secrets

__all__ = ["InstallationSecrets"]


class InstallationSecrets:
    def __init__(self, writer: Writer, reader: Engine) -> None:
        self.writer = writer
        self.reader = reader
        self._known: dict[str, str] = {}

    def get(self, name: str) -> str:
        """The secret called ``name`` (made now if there is none: whoever makes it first wins)."""
        known = self._known.get(name)
        if known is not None:
            return known
        query = sa.select(installation_secrets.c.value).where(installation_secrets.c.name == name)
        with self.reader.connect() as conn:
            value = conn.execute(query).scalar_one_or_none()
        if value is None:
            with self.writer.begin() as conn:
                insert_ignoring(
                    conn,
                    installation_secrets,
                    {
                        "name": name,
                        "value": secrets.token_urlsafe(48),
                        "created_at": time.time_ns() // 1000,
                    },
                    ("name",),
                )
                value = conn.execute(query).scalar_one()
        self._known[name] = str(value)
        return str(value)
