"""Which network addresses an outgoing request made for a user of Tidings may reach.

Webhook campaigns and the ``webhook`` provider send requests to URLs that project members
write; without a rule they could make the server call its own network: the loopback
(``127.0.0.1``, ``::1``), private ranges (``10/8``, ``172.16/12``, ``192.168/16``,
``fc00::/7``), link-local addresses (``169.254/16``, where clouds serve instance
metadata at ``169.254.169.254``, and ``fe80::/10``), and any other address that is not
globally routable (``100.64/10``, ``0.0.0.0``, documentation and reserved ranges) or is
multicast. The operator allows them with ``TIDINGS_WEBHOOK_ALLOW_PRIVATE=1``.

Pure: ``blocked_address`` looks at an IP address, ``blocked_url_reason`` at what a URL
says without resolving it (an IP literal, ``localhost``). The provider checks every
address a name resolves to when it connects (messaging/providers/_addresses.py).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

__all__ = ["ALLOW_SETTING", "blocked_address", "blocked_host_reason", "blocked_url_reason"]

ALLOW_SETTING = "TIDINGS_WEBHOOK_ALLOW_PRIVATE"
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


def blocked_address(address: str) -> bool:
    """True for an IP address a webhook may not reach (not globally routable, or
    multicast); an IPv4 address mapped into IPv6 is judged as itself."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone is no escape
    except ValueError:
        return True  # not an address at all: nothing to allow
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            ip = mapped
    return not ip.is_global or ip.is_multicast


def blocked_host_reason(host: str) -> str | None:
    """Why ``host`` (a URL's host, an IP literal or a name) is refused as written, or None
    (a name is then checked when it is resolved)."""
    name = host.strip("[]").rstrip(".").lower()
    if not name:
        return "the URL has no host"
    if name in _LOCAL_NAMES or name.endswith(".localhost"):
        return f"{host} is this machine"
    try:
        ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return None
    if blocked_address(name):
        return f"{host} is a private, loopback or link-local address"
    return None


def blocked_url_reason(url: str) -> str | None:
    """``blocked_host_reason`` of a URL's host (None when the URL has no host to judge)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return blocked_host_reason(host) if host else None
