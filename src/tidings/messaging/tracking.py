"""Signed tracking links: the open pixel, click redirects and one-click unsubscribe.

The delivery worker hands each email and its ``TrackingRef`` to ``TokenTracker.
decorate_email`` before the provider sees it; the public routes in ``api/tracking.py``
read the tokens back. A token is the ref (and, for a click, the URL) signed with
itsdangerous (HMAC-SHA256) under the installation's secret key, one salt per purpose:
changing any byte, or using an open token as a click or unsubscribe token, fails the
check. So a click redirects only to the URL that was signed (never an open redirect),
and a token names its own user: it cannot be turned into another user's.

Tokens do not expire (an email may be opened months later); changing
``TIDINGS_SECRET_KEY`` invalidates every link already sent.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import html
import json
import re
import zlib
from collections.abc import Callable
from typing import Any

from itsdangerous import BadData, URLSafeSerializer

from tidings.domain.channels import EmailMessage
from tidings.domain.tracking import TrackingRef

__all__ = ["Purpose", "TokenTracker"]

Purpose = str  # "open" | "click" | "unsubscribe"
_VERSION = 1
_LINK = re.compile(
    r"""(?P<head><(?:a|area)\b[^>]*?\bhref\s*=\s*)(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<bare>[^\s"'>]+))""",
    re.IGNORECASE | re.DOTALL,
)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


class _Minter:
    """Makes the tokens ``serializer.dumps`` makes, and ``serializer.loads`` reads, at a
    half of its cost (a send makes three or more): the signing key is derived once, not
    per token, and a short payload is not compressed (zlib saves a few bytes there at
    most; ``loads`` reads either form). The same steps otherwise: compact JSON, URL-safe
    base64 without padding, ``.`` and the HMAC-SHA256 of that (itsdangerous' ``Signer``)."""

    _SHORT = 96  # bytes of JSON below which compressing is not tried

    def __init__(self, serializer: URLSafeSerializer) -> None:
        signer = serializer.make_signer()
        self._mac = hmac.new(signer.derive_key(), digestmod=hashlib.sha256)

    def dumps(self, payload: list[Any]) -> str:
        raw = json.dumps(payload, separators=(",", ":")).encode()
        compressed = False
        if len(raw) >= self._SHORT:
            shorter = zlib.compress(raw)
            if len(shorter) < len(raw) - 1:
                raw, compressed = shorter, True
        value = base64.urlsafe_b64encode(raw).rstrip(b"=")
        if compressed:
            value = b"." + value
        mac = self._mac.copy()
        mac.update(value)
        signature = base64.urlsafe_b64encode(mac.digest()).rstrip(b"=")
        return (value + b"." + signature).decode("ascii")


def _pack(ref: TrackingRef) -> list[Any]:
    return [
        _VERSION,
        ref.project_id,
        ref.profile_id,
        ref.campaign_id,
        ref.send_id,
        ref.subscription_id,
        ref.channel,
        ref.journey_id,
        ref.step_id,
    ]


def _unpack(values: Any) -> TrackingRef | None:
    if not isinstance(values, list) or len(values) != 9 or values[0] != _VERSION:
        return None
    _, project_id, profile_id, campaign_id, send_id, subscription_id, channel, journey, step = (
        values
    )
    try:
        return TrackingRef(
            project_id=int(project_id),
            profile_id=str(profile_id),
            campaign_id=int(campaign_id),
            send_id=int(send_id),
            subscription_id=None if subscription_id is None else int(subscription_id),
            channel=str(channel),
            journey_id=None if journey is None else int(journey),
            step_id=None if step is None else int(step),
        )
    except (TypeError, ValueError):
        return None


class TokenTracker:
    """Makes and reads tracking tokens; ``public_url`` is where the routes are served
    (``TIDINGS_PUBLIC_URL``). Pure apart from signing, as ``Tracker`` requires."""

    def __init__(self, secret_key: str | Callable[[], str], public_url: str) -> None:
        # A callable key is read on first use (the installation's own key lives in the
        # database, which may not be migrated yet when the services are built).
        self._key = secret_key
        if isinstance(secret_key, str):
            self._check(secret_key)
        self.public_url = public_url.rstrip("/")
        self._made: dict[str, URLSafeSerializer] | None = None
        self._minters: dict[str, _Minter] | None = None

    @staticmethod
    def _check(key: str) -> None:
        if len(key) < 16:
            raise ValueError("the tracking secret key must be at least 16 characters")

    @property
    def _serializers(self) -> dict[str, URLSafeSerializer]:
        if self._made is None:
            key = self._key if isinstance(self._key, str) else self._key()
            self._check(key)
            self._made = {
                purpose: URLSafeSerializer(
                    key,
                    salt=f"tidings.tracking.{purpose}",
                    signer_kwargs={"digest_method": hashlib.sha256},
                )
                for purpose in ("open", "click", "unsubscribe")
            }
        return self._made

    @property
    def _mint(self) -> dict[str, _Minter]:
        if self._minters is None:
            self._minters = {p: _Minter(s) for p, s in self._serializers.items()}
        return self._minters

    # -- making links ------------------------------------------------------------------------

    def token(self, purpose: Purpose, ref: TrackingRef, url: str | None = None) -> str:
        payload = _pack(ref)
        if purpose == "click":
            payload.append(url)
        return self._mint[purpose].dumps(payload)

    def open_url(self, ref: TrackingRef) -> str:
        return f"{self.public_url}/t/o/{self.token('open', ref)}"

    def click_url(self, ref: TrackingRef, url: str) -> str:
        return f"{self.public_url}/t/c/{self.token('click', ref, url)}"

    def unsubscribe_url(self, ref: TrackingRef) -> str:
        """The one-click unsubscribe address: a confirmation page (GET), the unsubscribe
        itself (POST, RFC 8058). Templates may link to it too."""
        return f"{self.public_url}/unsubscribe/{self.token('unsubscribe', ref)}"

    def decorate_email(self, message: EmailMessage, ref: TrackingRef) -> EmailMessage:
        """Every http(s) link of the HTML through the click redirect, an open pixel at the
        end of the body, and the List-Unsubscribe headers of RFC 8058. The text part
        is left as written."""
        unsubscribe = self.unsubscribe_url(ref)
        headers = dict(message.headers)
        for name in [n for n in headers if n.lower().startswith("list-unsubscribe")]:
            del headers[name]
        headers["List-Unsubscribe"] = f"<{unsubscribe}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        body = message.html
        if body is not None:
            body = self._rewrite_links(body, ref)
            pixel = (
                f'<img src="{html.escape(self.open_url(ref))}" width="1" height="1" alt="" '
                'style="display:block;border:0;width:1px;height:1px;overflow:hidden">'
            )
            ends = list(_BODY_END.finditer(body))
            if ends:
                at = ends[-1].start()
                body = body[:at] + pixel + body[at:]
            else:
                body += pixel
        return dataclasses.replace(message, html=body, headers=headers)

    def _rewrite_links(self, body: str, ref: TrackingRef) -> str:
        own = f"{self.public_url}/"

        def rewrite(match: re.Match[str]) -> str:
            raw = match.group("dq")
            if raw is None:
                raw = match.group("sq")
            if raw is None:
                raw = match.group("bare")
            url = html.unescape(raw).strip()
            if not url.lower().startswith(("http://", "https://")) or url.startswith(own):
                return match.group(0)
            return f'{match.group("head")}"{html.escape(self.click_url(ref, url))}"'

        return _LINK.sub(rewrite, body)

    # -- reading tokens ----------------------------------------------------------------------

    def _load(self, purpose: Purpose, token: str) -> Any:
        if len(token) > 8192:
            return None
        try:
            return self._serializers[purpose].loads(token)
        except (BadData, ValueError, TypeError):
            return None

    def read_open(self, token: str) -> TrackingRef | None:
        return _unpack(self._load("open", token))

    def read_unsubscribe(self, token: str) -> TrackingRef | None:
        return _unpack(self._load("unsubscribe", token))

    def read_click(self, token: str) -> tuple[TrackingRef, str] | None:
        values = self._load("click", token)
        if not isinstance(values, list) or len(values) != 10:
            return None
        ref, url = _unpack(values[:9]), values[9]
        if ref is None or not isinstance(url, str):
            return None
        if not url.lower().startswith(("http://", "https://")):
            return None
        return ref, url
