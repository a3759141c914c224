"""Web origin patterns: canonical form and matching (domain/origins.py)."""

from __future__ import annotations

import pytest

from tidings.domain.errors import InvalidRequest
from tidings.domain.origins import MAX_ORIGINS, normalise_origin, normalise_origins, origin_allowed


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("https://Shop.Example.com", "https://shop.example.com"),
        ("https://shop.example.com/", "https://shop.example.com"),
        ("https://shop.example.com:443", "https://shop.example.com"),
        ("http://shop.example.com:80", "http://shop.example.com"),
        ("http://localhost:3000", "http://localhost:3000"),
        ("https://shop.example.com:8443", "https://shop.example.com:8443"),
        ("  https://*.Example.com ", "https://*.example.com"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("capacitor://localhost", "capacitor://localhost"),
    ],
)
def test_origins_are_made_canonical(text: str, canonical: str) -> None:
    assert normalise_origin(text) == canonical


@pytest.mark.parametrize(
    "text",
    [
        "",
        "shop.example.com",
        "https://shop.example.com/path",
        "https://shop.example.com?x=1",
        "https://user@shop.example.com",
        "https://shop.*.com",
        "https://*",
        "https://shop.example.com:0",
        "https://shop.example.com:70000",
        "*",
        "null",
    ],
)
def test_what_is_not_an_origin_is_refused_with_an_example(text: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        normalise_origin(text)
    assert caught.value.param == "allowed_origins"


def test_a_list_is_deduplicated_in_order_and_bounded() -> None:
    assert normalise_origins(["https://b.com", "https://a.com", "https://B.com:443"]) == (
        "https://b.com",
        "https://a.com",
    )
    with pytest.raises(InvalidRequest):
        normalise_origins(f"https://{i}.example.com" for i in range(MAX_ORIGINS + 1))


ALLOWED = normalise_origins(
    ["https://shop.example.com", "https://*.example.org", "http://localhost:3000"]
)


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://shop.example.com", True),
        ("https://SHOP.example.com:443", True),
        ("http://shop.example.com", False),  # another scheme is another origin
        ("https://shop.example.com:8443", False),
        ("https://evil-shop.example.com", False),
        ("https://a.example.org", True),
        ("https://a.b.example.org", True),
        ("https://example.org", False),  # *. needs a subdomain
        ("https://badexample.org", False),
        ("https://a.example.org:8443", False),
        ("http://localhost:3000", True),
        ("http://localhost:3001", False),
        ("null", False),  # sandboxed and file:// pages
        ("", False),
    ],
)
def test_matching(origin: str, allowed: bool) -> None:
    assert origin_allowed(origin, ALLOWED) is allowed


def test_no_list_allows_any_origin() -> None:
    assert origin_allowed("null", None) and origin_allowed("https://x.example", None)
