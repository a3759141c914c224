"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from tests.conftest import _admin_engine, postgres_url_or_skip


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A database of its own: these processes migrate and fill it from scratch."""
    base = postgres_url_or_skip()
    name = f"tidings_topology_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = _admin_engine(base)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield str(sa.engine.make_url(base).set(database=name).render_as_string(False))
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
