"""Web origins a project's public key may be used from (CORS), and how they match.

A project allows any origin (``None``: a public key is public) or a list of patterns,
each an origin as browsers send it in the ``Origin`` header, ``scheme://host[:port]``,
or with a leading ``*.`` on the host for any subdomain (``https://*.example.com``
matches ``https://shop.example.com`` and ``https://a.b.example.com``, not
``https://example.com``). Schemes and hosts compare without case; a default port
(80 for http, 443 for https) is left out, so ``https://example.com:443`` is
``https://example.com``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from tidings.domain.errors import InvalidRequest

__all__ = ["MAX_ORIGINS", "normalise_origin", "normalise_origins", "origin_allowed"]

MAX_ORIGINS = 100

_DEFAULT_PORTS = {"http": "80", "https": "443"}
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST = re.compile(rf"^(?:\*\.)?{_LABEL}(?:\.{_LABEL})*$|^\[[0-9a-f:.]+\]$")
_ORIGIN = re.compile(r"^([a-z][a-z0-9+.-]*)://([^/:?#]+|\[[^\]/?#]+\])(?::(\d{1,5}))?/?$")


def normalise_origin(text: str) -> str:
    """``text`` as a canonical origin pattern; InvalidRequest when it is not one."""
    value = text.strip().lower()
    match = _ORIGIN.match(value)
    host = match.group(2) if match else ""
    if match is None or not _HOST.match(host):
        raise InvalidRequest(
            f"'{text[:100]}' is not a web origin: write scheme://host[:port], such as "
            "https://shop.example.com, http://localhost:3000 or https://*.example.com "
            "(no path).",
            param="allowed_origins",
        )
    scheme, port = match.group(1), match.group(3)
    if port is not None:
        if not 0 < int(port) <= 65535:
            raise InvalidRequest(f"'{text[:100]}': port out of range.", param="allowed_origins")
        port = None if port == _DEFAULT_PORTS.get(scheme) else str(int(port))
    return f"{scheme}://{host}" + (f":{port}" if port else "")


def normalise_origins(texts: Iterable[str]) -> tuple[str, ...]:
    """Several patterns, canonical, without repeats, in the order given."""
    seen: dict[str, None] = {}
    for text in texts:
        seen[normalise_origin(text)] = None
    if len(seen) > MAX_ORIGINS:
        raise InvalidRequest(
            f"At most {MAX_ORIGINS} allowed origins per project.", param="allowed_origins"
        )
    return tuple(seen)


def origin_allowed(origin: str, allowed: tuple[str, ...] | None) -> bool:
    """Whether a request's ``Origin`` header value matches one of ``allowed`` (None: any)."""
    if allowed is None:
        return True
    try:
        candidate = normalise_origin(origin)
    except InvalidRequest:
        return False  # "null" (a sandboxed page, a file:// page) or garbage
    if candidate in allowed:
        return True
    scheme, _, rest = candidate.partition("://")
    for pattern in allowed:
        if "*" not in pattern:
            continue
        p_scheme, _, p_rest = pattern.partition("://")
        suffix = p_rest[1:]  # ".example.com[:port]"
        if p_scheme == scheme and rest.endswith(suffix) and len(rest) > len(suffix):
            host = rest[: len(rest) - len(suffix)]
            if ":" not in host and host:  # the port is part of the suffix
                return True
    return False
