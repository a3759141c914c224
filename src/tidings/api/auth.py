"""API key authentication with a short-lived cache in front of the key table.

While the database is up, a key's answer (its key and project, or "no such key") is
reused for ``ttl`` seconds, then read again: a revoked key stops working within ``ttl``.

While the database is down or does not answer (stale-if-error): a key whose answer was
read within the last ``stale_for`` seconds (10 minutes) keeps that answer, so clients
already known go on sending (into JetStream when the log is there, docs/jetstream.md).
A read waits at most ``lookup_timeout`` seconds. Once one failed, known keys are answered
from memory at once, except that every ``retry_every`` seconds one request tries a read
again (and waits for it, bounded): the first that succeeds ends the outage, so a key
revoked meanwhile is refused again as soon as the database answers. A key without a
usable answer gets ``503 service_unavailable``: it may be valid, so 401 would be wrong.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from tidings.api.cors import check_origin, is_public_path
from tidings.api.errors import is_database_unavailable
from tidings.domain.auth import ApiKey, Role, authorize, hash_key
from tidings.domain.errors import AuthenticationRequired, NotFound, ServiceUnavailable
from tidings.store.projects import Project, ProjectStore

__all__ = ["AuthContext", "KeyCache"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AuthContext:
    key: ApiKey
    project: Project


@dataclass(frozen=True, slots=True)
class _Entry:
    context: AuthContext | None
    loaded_at: float  # monotonic time the read that gave this answer started


class KeyCache:
    """Maps key hashes to keys and projects; entries are fresh for ``ttl`` seconds (0: read
    every time) and serve as the last known answer for ``stale_for`` seconds."""

    def __init__(
        self,
        store: ProjectStore,
        ttl: float,
        *,
        stale_for: float = 600.0,
        lookup_timeout: float = 2.0,
        retry_every: float = 1.0,
        max_entries: int = 10_000,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.stale_for = stale_for
        self.lookup_timeout = lookup_timeout
        self.retry_every = retry_every
        self.max_entries = max_entries
        self._entries: dict[str, _Entry] = {}  # oldest read first
        self._reading: dict[str, asyncio.Task[AuthContext | None]] = {}
        self._down_since: float | None = None  # reads fail: answer known keys from memory
        self._probe: asyncio.Task[AuthContext | None] | None = None  # the read that retries
        self._probe_at = 0.0
        self._stale_served = 0
        self._stale_logged_at = float("-inf")

    def _load(self, key_hash: str) -> AuthContext | None:
        key = self.store.find_key(key_hash)
        if key is None:
            return None
        try:
            project = self.store.get_project(key.project_id)
        except NotFound:
            return None
        return AuthContext(key=key, project=project)

    async def lookup(self, token: str) -> AuthContext | None:
        key_hash = hash_key(token)
        now = time.monotonic()
        entry = self._entries.get(key_hash)
        if entry is not None and now < entry.loaded_at + self.ttl:
            return entry.context
        usable = entry is not None and now - entry.loaded_at <= self.stale_for
        if self._down_since is not None and entry is not None and usable:
            probing = self._probe is not None and not self._probe.done()
            if probing or now < self._probe_at:
                return self._stale(entry, now)
            self._probe_at = now + self.retry_every  # this request tries a read
        read = self._read(key_hash)
        if self._down_since is not None:
            self._probe = read
        try:
            return await asyncio.wait_for(asyncio.shield(read), self.lookup_timeout)
        except Exception as exc:  # the read failed or did not finish in time
            if not isinstance(exc, TimeoutError) and not is_database_unavailable(exc):
                raise  # a bug, not an outage: let it be a 500
            self._went_down(exc)
            if entry is not None and usable:
                return self._stale(entry, now)
            raise ServiceUnavailable(
                "API keys cannot be checked now (the database is unavailable); retry shortly.",
                retry_after=2,
            ) from exc

    def _read(self, key_hash: str) -> asyncio.Task[AuthContext | None]:
        """The read of ``key_hash`` in progress, or a new one: one at a time per key."""
        loop = asyncio.get_running_loop()
        task = self._reading.get(key_hash)
        if task is not None and not task.done() and task.get_loop() is loop:
            return task
        started = time.monotonic()
        task = loop.create_task(run_in_threadpool(self._load, key_hash))
        self._reading[key_hash] = task

        def done(task: asyncio.Task[AuthContext | None]) -> None:
            if self._reading.get(key_hash) is task:
                del self._reading[key_hash]
            if task.cancelled():
                return
            error = task.exception()  # retrieved here, whoever waits for it
            if error is not None:
                if is_database_unavailable(error):
                    self._went_down(error)
                return
            self._remember(key_hash, _Entry(task.result(), started))
            if self._down_since is not None:
                logger.warning(
                    "API key lookups work again (after %.0f s)",
                    time.monotonic() - self._down_since,
                )
                self._down_since = None

        task.add_done_callback(done)
        return task

    def _went_down(self, error: BaseException) -> None:
        if self._down_since is not None:
            return
        now = self._down_since = time.monotonic()
        self._probe_at = now + self.retry_every
        logger.warning(
            "API key lookup failed (%s); answering keys from their last known answer "
            "(up to %g s old) until lookups work again",
            _reason(error),
            self.stale_for,
        )

    def _remember(self, key_hash: str, entry: _Entry) -> None:
        old = self._entries.pop(key_hash, None)
        if old is not None and old.loaded_at > entry.loaded_at:
            entry = old  # a newer read finished first
        while len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]  # the oldest read
        self._entries[key_hash] = entry

    def _stale(self, entry: _Entry, now: float) -> AuthContext | None:
        self._stale_served += 1
        if now - self._stale_logged_at >= 10.0:
            logger.warning(
                "the database is unavailable: %d requests authenticated from memory "
                "(answers up to %.0f s old)",
                self._stale_served,
                now - entry.loaded_at,
            )
            self._stale_served = 0
            self._stale_logged_at = now
        return entry.context

    async def authenticate(
        self, request: Request, *, secret: bool, role: Role | None = None
    ) -> AuthContext:
        """The key of ``request``; on a route a public key may call from a web page, also
        whether it may be used from the page's origin (``cors.check_origin``)."""
        context = await self.authenticate_header(
            request.headers.get("authorization", ""), secret=secret, role=role
        )
        if not secret and is_public_path(request.scope["path"]):
            check_origin(request.scope, context, request.headers.get("origin"))
        return context

    async def authenticate_header(
        self, header: str, *, secret: bool, role: Role | None = None
    ) -> AuthContext:
        """The same, from the ``Authorization`` header's value."""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationRequired(
                "A valid API key is required: Authorization: Bearer <key>."
            )
        context = await self.lookup(token.strip())
        authorize(context.key if context else None, secret=secret, role=role)
        assert context is not None
        return context


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    text = str(getattr(exc, "orig", None) or exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200] if text else ''}"
