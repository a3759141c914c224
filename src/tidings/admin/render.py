"""Jinja2 for the admin pages: autoescaping on, templates and macros in ``templates/``.

Everything a user controls (event names, traits, list names…) reaches the HTML through
``{{ … }}`` and is escaped; no template marks user data ``|safe``. The filters here turn
stored values into text (times in the project's time zone, JSON for nested traits).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
import msgspec

__all__ = ["Templates", "as_json", "when"]

_pretty = msgspec.json.Encoder(order="sorted")


def when(micros: int | None, timezone: str = "UTC") -> str:
    """``2026-12-06 14:05:09`` in the time zone (or an empty string)."""
    if micros is None:
        return ""
    try:
        zone = ZoneInfo(timezone)
    except (ValueError, KeyError):
        zone = ZoneInfo("UTC")
    moment = datetime.fromtimestamp(micros / 1_000_000, tz=UTC).astimezone(zone)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def iso(micros: int | None) -> str:
    if micros is None:
        return ""
    return datetime.fromtimestamp(micros / 1_000_000, tz=UTC).isoformat(timespec="seconds")


def as_json(value: Any, indent: int = 2) -> str:
    """Readable JSON of a stored value (the caller's template escapes it)."""
    return msgspec.json.format(_pretty.encode(value), indent=indent).decode()


def scalar(value: Any) -> str:
    """A trait's value as text: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        return value
    return (
        as_json(value, indent=0)
        if isinstance(value, dict | list)
        else _pretty.encode(value).decode()
    )


class Templates:
    def __init__(self) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("tidings.admin", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(when=when, iso=iso, as_json=as_json, scalar=scalar)
        self.env.globals["number"] = lambda n: f"{n:,}" if isinstance(n, int) else ""

    def render(self, name: str, **context: Any) -> str:
        return self.env.get_template(name).render(**context)
