"""API key authentication with a short-lived cache in front of the key table."""

from __future__ import annotations

import time
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from tidings.domain.auth import ApiKey, Role, authorize, hash_key
from tidings.domain.errors import AuthenticationRequired, NotFound
from tidings.store.projects import Project, ProjectStore

__all__ = ["AuthContext", "KeyCache"]


@dataclass(frozen=True, slots=True)
class AuthContext:
    key: ApiKey
    project: Project


class KeyCache:
    """Maps key hashes to keys and projects; entries live ``ttl`` seconds (0 disables)."""

    def __init__(self, store: ProjectStore, ttl: float) -> None:
        self.store = store
        self.ttl = ttl
        self._entries: dict[str, tuple[float, AuthContext | None]] = {}

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
        cached = self._entries.get(key_hash)
        if cached is not None and cached[0] > now:
            return cached[1]
        context = await run_in_threadpool(self._load, key_hash)
        if self.ttl > 0:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[key_hash] = (now + self.ttl, context)
        return context

    async def authenticate(
        self, request: Request, *, secret: bool, role: Role | None = None
    ) -> AuthContext:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationRequired(
                "A valid API key is required: Authorization: Bearer <key>."
            )
        context = await self.lookup(token.strip())
        authorize(context.key if context else None, secret=secret, role=role)
        assert context is not None
        return context
