"""Signed tracking tokens and the decoration of emails (the routes: tests/api/test_tracking.py)."""

from __future__ import annotations

import html
import re

import pytest

from tidings.domain.channels import EmailMessage
from tidings.domain.tracking import TrackingRef
from tidings.messaging.tracking import TokenTracker

PUBLIC = "https://t.example.com"
REF = TrackingRef(
    project_id=1,
    profile_id="p_ada",
    campaign_id=7,
    send_id=101,
    subscription_id=3,
    channel="email",
    journey_id=5,
    step_id=9,
)
HTML = """<html><body>
<p>Hi Ada, <a href="https://shop.example/sale?a=1&amp;b=2">sale</a>
<a class="btn" href='http://shop.example/x'>x</a> <A HREF=https://shop.example/bare>bare</A>
<a href="mailto:help@shop.example">mail us</a> <a href="/relative">rel</a>
<a href="https://t.example.com/unsubscribe/already">unsubscribe</a></p>
</body></html>"""


def _tracker(key: str = "k" * 32) -> TokenTracker:
    return TokenTracker(key, PUBLIC + "/")


def _hrefs(body: str) -> list[str]:
    return [html.unescape(h) for h in re.findall(r'href="([^"]*)"', body, re.IGNORECASE)]


def test_links_go_through_signed_click_redirects() -> None:
    tracker = _tracker()
    decorated = tracker.decorate_email(
        EmailMessage(to="ada@example.com", from_address="n@shop.example", subject="s", html=HTML),
        REF,
    )
    assert decorated.html is not None
    hrefs = _hrefs(decorated.html)
    clicks = [h for h in hrefs if h.startswith(f"{PUBLIC}/t/c/")]
    assert len(clicks) == 3
    targets = [tracker.read_click(h.rsplit("/", 1)[1]) for h in clicks]
    assert [t[1] for t in targets if t] == [
        "https://shop.example/sale?a=1&b=2",
        "http://shop.example/x",
        "https://shop.example/bare",
    ]
    assert all(t is not None and t[0] == REF for t in targets)
    # Left as written: other schemes, relative links, our own links.
    assert "mailto:help@shop.example" in hrefs
    assert "/relative" in hrefs
    assert f"{PUBLIC}/unsubscribe/already" in hrefs


def test_open_pixel_and_list_unsubscribe_headers() -> None:
    tracker = _tracker()
    message = EmailMessage(
        to="ada@example.com",
        from_address="n@shop.example",
        subject="s",
        html=HTML,
        text="Plain https://shop.example/sale",
        headers={"list-unsubscribe": "<mailto:old@x>", "X-Keep": "1"},
    )
    decorated = tracker.decorate_email(message, REF)
    assert decorated.html is not None
    pixel = re.search(r'<img src="([^"]+)" width="1" height="1"', decorated.html)
    assert pixel is not None
    assert decorated.html.index(pixel.group(0)) < decorated.html.index("</body>")
    open_token = html.unescape(pixel.group(1)).removeprefix(f"{PUBLIC}/t/o/")
    assert tracker.read_open(open_token) == REF
    unsubscribe = decorated.headers["List-Unsubscribe"]
    assert unsubscribe.startswith(f"<{PUBLIC}/unsubscribe/") and unsubscribe.endswith(">")
    assert tracker.read_unsubscribe(unsubscribe[1:-1].rsplit("/", 1)[1]) == REF
    assert decorated.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "list-unsubscribe" not in decorated.headers  # replaced, not doubled
    assert decorated.headers["X-Keep"] == "1"
    assert decorated.text == message.text  # the text part is left as written
    assert message.headers == {"list-unsubscribe": "<mailto:old@x>", "X-Keep": "1"}  # a copy


def test_a_message_without_html_gets_the_headers_only() -> None:
    decorated = _tracker().decorate_email(
        EmailMessage(to="a@x.example", from_address="n@x.example", subject="s", text="hi"), REF
    )
    assert decorated.html is None
    assert "List-Unsubscribe" in decorated.headers


def test_html_without_a_body_tag_gets_the_pixel_at_the_end() -> None:
    decorated = _tracker().decorate_email(
        EmailMessage(to="a@x.example", from_address="n@x.example", subject="s", html="<p>hi</p>"),
        REF,
    )
    assert decorated.html is not None
    assert decorated.html.startswith("<p>hi</p><img src=")


def test_tokens_cannot_be_forged_swapped_or_reused_for_another_user() -> None:
    tracker = _tracker()
    other_user = TrackingRef(1, "p_bob", 7, 102, 3, "email")
    token = tracker.token("unsubscribe", REF)
    assert tracker.read_unsubscribe(token) == REF
    # Another key's token, a changed byte, another purpose's token: all refused.
    assert _tracker("x" * 32).read_unsubscribe(token) is None
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert tracker.read_unsubscribe(flipped) is None
    assert tracker.read_unsubscribe(tracker.token("open", REF)) is None
    assert tracker.read_click(tracker.token("open", REF)) is None
    # Bob's payload under Ada's signature (and the other way round).
    payload_bob, _, signature_bob = tracker.token("unsubscribe", other_user).rpartition(".")
    payload_ada, _, signature_ada = token.rpartition(".")
    assert payload_bob != payload_ada
    assert tracker.read_unsubscribe(f"{payload_bob}.{signature_ada}") is None
    assert tracker.read_unsubscribe(f"{payload_bob}.{signature_bob}") == other_user
    # A click token's URL cannot be replaced.
    click = tracker.token("click", REF, "https://shop.example/")
    evil = tracker.token("click", other_user, "https://evil.example/")
    assert tracker.read_click(evil.rpartition(".")[0] + "." + click.rpartition(".")[2]) is None
    assert tracker.read_click("") is None
    assert tracker.read_click("x" * 10_000) is None


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="16"):
        TokenTracker("short", PUBLIC)


@pytest.mark.parametrize(
    "purpose, url",
    [
        ("open", None),
        ("unsubscribe", None),
        ("click", "https://shop.example/?a=1"),
        ("click", "https://shop.example/" + "long/path/" * 40),  # compressed
    ],
)
def test_tokens_are_itsdangerous_tokens(purpose: str, url: str | None) -> None:
    """Tokens are made without itsdangerous' per-token key derivation, in its format:
    its serializer reads them, and a compressed one is byte for byte what it makes."""
    from itsdangerous import URLSafeSerializer

    from tidings.messaging.tracking import _pack

    tracker = TokenTracker("k" * 32, PUBLIC)
    token = tracker.token(purpose, REF, url)
    serializer = URLSafeSerializer(
        "k" * 32,
        salt=f"tidings.tracking.{purpose}",
        signer_kwargs={"digest_method": __import__("hashlib").sha256},
    )
    payload = _pack(REF) + ([url] if purpose == "click" else [])
    assert serializer.loads(token) == payload
    if token.startswith("."):
        assert token == serializer.dumps(payload)
    other = URLSafeSerializer("j" * 32, salt=f"tidings.tracking.{purpose}")
    with pytest.raises(Exception, match="Signature"):
        other.loads(token)
