"""The machine's PostgreSQL and NATS, when the environment names them.

``.ci/run`` sets TIDINGS_TEST_POSTGRES_URL and TIDINGS_TEST_NATS_URL (and
TIDINGS_TEST_REQUIRE_SERVICES): there, an unreachable service fails the suite instead of
silently skipping the tests that need it. Elsewhere these tests skip with the reason.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import pytest


def _reachable(url: str, default_port: int) -> tuple[bool, str]:
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or default_port
    try:
        with socket.create_connection((host, port), timeout=3):
            return True, f"{host}:{port}"
    except OSError as exc:
        return False, f"{host}:{port}: {exc}"


@pytest.mark.parametrize(
    ("variable", "port"), [("TIDINGS_TEST_POSTGRES_URL", 5432), ("TIDINGS_TEST_NATS_URL", 4222)]
)
def test_configured_service_is_reachable(variable: str, port: int) -> None:
    url = os.environ.get(variable)
    if not url:
        pytest.skip(f"{variable} is not set: tests needing this service do not run here")
    ok, where = _reachable(url, port)
    if not ok and not os.environ.get("TIDINGS_TEST_REQUIRE_SERVICES"):
        pytest.skip(f"{variable} names {where}, which is unreachable")
    assert ok, f"{variable} names {where}, which is unreachable"
