"""Inbound SMS: opt-out and help keywords, and checking that a provider sent the request.

A message that is one keyword alone (any case, punctuation ignored) counts: ``STOP``,
``UNSUBSCRIBE``, ``CANCEL``, ``END``, ``QUIT`` unsubscribe the sender, ``HELP`` asks for
the help text. The replies are the provider's ``data.opt_out_text`` and
``data.help_text``, else the defaults here.

Authentication: Twilio signs each request (``X-Twilio-Signature``: base64 HMAC-SHA1, keyed
with the account's auth token, of the full URL followed by each POST field's name and
value, sorted by name); an ``http_sms`` provider sends ``Authorization: Bearer
<data.inbound_secret>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable
from enum import StrEnum
from xml.sax.saxutils import escape

__all__ = [
    "DEFAULT_HELP_TEXT",
    "DEFAULT_OPT_OUT_TEXT",
    "HELP_KEYWORDS",
    "STOP_KEYWORDS",
    "Keyword",
    "keyword_of",
    "secret_matches",
    "twilio_signature",
    "twiml",
]

STOP_KEYWORDS = frozenset({"STOP", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
HELP_KEYWORDS = frozenset({"HELP"})
DEFAULT_OPT_OUT_TEXT = "You are unsubscribed and will receive no more messages from us."
DEFAULT_HELP_TEXT = "Reply STOP to unsubscribe."
_WORD = re.compile(r"[A-Za-z]+")


class Keyword(StrEnum):
    STOP = "stop"
    HELP = "help"


def keyword_of(body: str) -> Keyword | None:
    """The keyword a message is, if it is one word alone."""
    words = _WORD.findall(body)
    if len(words) != 1 or len(body) > 64:
        return None
    word = words[0].upper()
    if word in STOP_KEYWORDS:
        return Keyword.STOP
    if word in HELP_KEYWORDS:
        return Keyword.HELP
    return None


def twilio_signature(auth_token: str, url: str, fields: Iterable[tuple[str, str]]) -> str:
    """What Twilio sends as ``X-Twilio-Signature`` for a form POST to ``url``."""
    payload = url + "".join(k + v for k, v in sorted(fields, key=lambda kv: kv[0]))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def secret_matches(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode())


def twiml(reply: str | None) -> str:
    """A TwiML answer: the reply as a message, or nothing."""
    inner = f"<Message>{escape(reply)}</Message>" if reply else ""
    return f'<?xml version="1.0" encoding="UTF-8"?><Response>{inner}</Response>'
