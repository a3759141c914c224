"""Keeping webhook requests off the server's own network (domain/addresses.py says which
addresses): a resolver for aiohttp that checks every address a host name resolves to,
at the moment the connection is made (so a name that resolves elsewhere later, DNS
rebinding, is checked again), and a check of IP literals, which aiohttp does not resolve.
"""

from __future__ import annotations

import socket
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from tidings.domain.addresses import ALLOW_SETTING, blocked_address, blocked_host_reason

__all__ = ["BlockedAddress", "GuardedResolver", "blocked_in", "refusal"]


class BlockedAddress(OSError):
    """A request's host is, or resolves to, an address webhooks may not reach."""


def refusal(why: str) -> str:
    return f"webhook: refused: {why} ({ALLOW_SETTING}=1 allows private addresses)"


class GuardedResolver(AbstractResolver):
    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        why = blocked_host_reason(host)
        if why is not None:
            raise BlockedAddress(why)
        found = await self._inner.resolve(host, port, family)
        for entry in found:
            if blocked_address(entry["host"]):
                raise BlockedAddress(
                    f"{host} resolves to {entry['host']}, a private, loopback or link-local address"
                )
        return found

    async def close(self) -> None:
        await self._inner.close()


def blocked_in(exc: BaseException) -> BlockedAddress | None:
    """The ``BlockedAddress`` behind an exception aiohttp raised, if that is its cause."""
    seen: Any = exc
    for _ in range(10):
        if seen is None:
            return None
        if isinstance(seen, BlockedAddress):
            return seen
        seen = seen.__cause__ or seen.__context__ or getattr(seen, "os_error", None)
    return None
