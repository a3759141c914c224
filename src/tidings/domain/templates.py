"""The shape of a template's ``data`` per channel, and text derived from HTML.

Pure: the Liquid parsing and rendering is in ``tidings.messaging.templates``.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

from tidings.domain.errors import FieldError

__all__ = ["LIQUID_FIELDS", "check_data", "html_to_text"]

# The fields of each channel's ``data`` that are Liquid, and which of them are HTML
# (rendered with auto-escaping).
LIQUID_FIELDS: dict[str, tuple[str, ...]] = {
    "email": ("subject", "preheader", "html", "text", "reply_to", "from.name", "from.address"),
    "text": ("text",),
    "push": ("title", "body", "url"),
    "webhook": ("endpoint", "body", "method"),
    "in_app": ("title", "body", "html", "image"),
}
HTML_FIELDS = frozenset({"html"})

_ALLOWED: dict[str, frozenset[str]] = {
    "email": frozenset(
        {"from", "reply_to", "cc", "bcc", "subject", "preheader", "html", "mjml", "text"}
    ),
    "text": frozenset({"text"}),
    "push": frozenset({"title", "body", "url", "custom"}),
    "webhook": frozenset({"method", "endpoint", "headers", "body"}),
    "in_app": frozenset({"type", "title", "body", "html", "image", "custom"}),
}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "email": ("from", "subject"),
    "text": ("text",),
    "push": ("title", "body"),
    "webhook": ("method", "endpoint"),
    "in_app": ("type", "title", "body"),
}
MAX_FIELD = 512 * 1024


def check_data(channel: str, data: Any) -> list[FieldError]:
    """Problems with ``data`` for ``channel`` (shape only; Liquid is checked apart)."""
    if not isinstance(data, dict):
        return [FieldError("data", "parameter_invalid_format", "'data' must be an object.")]
    errors: list[FieldError] = []
    for key in data:
        if key not in _ALLOWED[channel]:
            errors.append(
                FieldError(f"data.{key}", "parameter_unknown", f"Unknown field for {channel}.")
            )
    for key in _REQUIRED[channel]:
        if data.get(key) in (None, ""):
            errors.append(FieldError(f"data.{key}", "parameter_missing", "Required."))
    for key, value in data.items():
        if key in ("custom", "headers", "from"):
            if value is not None and not isinstance(value, dict):
                errors.append(
                    FieldError(f"data.{key}", "parameter_invalid_format", "Must be an object.")
                )
        elif key in ("cc", "bcc"):
            if value is not None and not (
                isinstance(value, str)
                or (isinstance(value, list) and all(isinstance(v, str) for v in value))
            ):
                errors.append(
                    FieldError(
                        f"data.{key}", "parameter_invalid_format", "A string or list of strings."
                    )
                )
        elif value is not None and not isinstance(value, str):
            errors.append(
                FieldError(f"data.{key}", "parameter_invalid_format", "Must be a string.")
            )
        elif isinstance(value, str) and len(value) > MAX_FIELD:
            errors.append(FieldError(f"data.{key}", "parameter_invalid_format", "Too long."))
    if channel == "email":
        sender = data.get("from")
        if isinstance(sender, dict):
            if not isinstance(sender.get("address"), str) or not sender.get("address"):
                errors.append(FieldError("data.from.address", "parameter_missing", "Required."))
            unknown = set(sender) - {"name", "address"}
            errors.extend(
                FieldError(f"data.from.{k}", "parameter_unknown", "Unknown field.") for k in unknown
            )
        if not data.get("html") and not data.get("mjml") and not data.get("text"):
            errors.append(FieldError("data.html", "parameter_missing", "Give html, mjml or text."))
    if channel == "in_app" and data.get("type") not in (None, "banner", "alert", "html"):
        errors.append(
            FieldError("data.type", "parameter_invalid_format", "One of banner, alert, html.")
        )
    if channel == "webhook" and isinstance(data.get("method"), str):
        method = data["method"].upper()
        if "{" not in method and method not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            errors.append(FieldError("data.method", "parameter_invalid_format", "An HTTP method."))
    return errors


_BLOCKS = frozenset(
    {"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "section"}
)


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0
        self._links: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script", "head", "title"):
            self._skip += 1
        elif tag in _BLOCKS:
            self.parts.append("\n")
        if tag == "a":
            self._links.append(dict(attrs).get("href"))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "head", "title"):
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCKS:
            self.parts.append("\n")
        if tag == "a" and self._links:
            href = self._links.pop()
            if href and href.startswith(("http://", "https://")):
                self.parts.append(f" ({href})")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """A plain-text alternative of an HTML body: the text, links after their words."""
    parser = _Text()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    lines = [re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
