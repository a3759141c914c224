"""Schedule entrances: RFC 5545 RRULEs (python-dateutil) in the project's timezone."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from dateutil.rrule import rrulestr

__all__ = ["occurrences_between", "rrule_error"]


def _rule(text: str, start: datetime):  # type: ignore[no-untyped-def]
    body = text.strip()
    if body.upper().startswith("RRULE:"):
        body = body[6:]
    return rrulestr(body, dtstart=start)


def rrule_error(text: object) -> str | None:
    if not isinstance(text, str) or not text.strip() or len(text) > 1000:
        return "must be an RRULE string"
    if "DTSTART" in text.upper():
        return "DTSTART is set by Tidings (the journey's publication, in the project timezone)"
    try:
        _rule(text, datetime(2024, 1, 1, tzinfo=UTC))
    except (ValueError, TypeError) as exc:
        return f"not a valid RRULE: {exc}"
    return None


def occurrences_between(text: str, anchor: int, after: int, upto: int, tz: str) -> list[int]:
    """Occurrences (µs) in ``(after, upto]`` of the rule starting at ``anchor`` (µs), whose
    wall-clock times are read in ``tz``."""
    zone = ZoneInfo(tz)
    start = datetime.fromtimestamp(anchor / 1e6, zone).replace(microsecond=0, tzinfo=None)
    rule = _rule(text, start)
    lo = datetime.fromtimestamp(after / 1e6, zone).replace(tzinfo=None)
    hi = datetime.fromtimestamp(upto / 1e6, zone).replace(tzinfo=None)
    found = []
    for naive in rule.between(lo, hi, inc=True)[:1000]:
        at = int(naive.replace(tzinfo=zone).timestamp() * 1_000_000)
        if after < at <= upto:
            found.append(at)
    return found
