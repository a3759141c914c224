"""Reading dates out of JSON, the same way in Python and in SQL.

A date inside ``data`` is either

* a string in this ISO-8601 shape (the one ``domain/schema.py`` infers as ``date``):
  ``YYYY-MM-DD`` optionally followed by ``T`` or a space, ``HH:MM``, optionally ``:SS``
  and a fraction (digits past the sixth are dropped), optionally ``Z`` or an offset
  ``±HH:MM`` / ``±HHMM``. No offset means UTC. Years 0001-9999; an impossible calendar
  date (``2023-02-29``, ``24:00``) is not a date; or
* a JSON number: seconds since the Unix epoch (fractions allowed), as Customer.io and
  Stripe send them, between the years 1 and 9999.

Anything else is not a date. The arithmetic below is deliberately plain integer
arithmetic (days from the civil date, Howard Hinnant's algorithm) so that
``tidings.segments.compile`` can write the very same computation in SQL for SQLite and
PostgreSQL, with no database date parser (which would disagree at the edges, or raise).
"""

from __future__ import annotations

import math
import re

from tidings.domain.rules.model import DAY, UNIT_MICROS, UNITS, RelativeDate, Unit

__all__ = [
    "DATE_REGEX",
    "MAX_SECONDS",
    "MIN_SECONDS",
    "days_from_civil",
    "days_in_month",
    "parse_date_text",
    "parse_relative",
    "seconds_to_micros",
    "start_of_day",
]

#: The accepted string shape, written for both Python ``re`` and PostgreSQL's ``~``.
DATE_REGEX = (
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    "([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.][0-9]+)?)?(Z|[+-][0-9]{2}:?[0-9]{2})?)?$"
)
_DATE = re.compile(DATE_REGEX)
#: 0001-01-01T00:00:00Z and 10000-01-01T00:00:00Z in seconds since the epoch.
MIN_SECONDS = -62_135_596_800
MAX_SECONDS = 253_402_300_800
_SECOND = 1_000_000


def days_in_month(year: int, month: int) -> int:
    if month == 2:
        leap = (year % 4 == 0 and year % 100 != 0) or year % 400 == 0
        return 29 if leap else 28
    return 30 if month in (4, 6, 9, 11) else 31


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (``year >= 1``)."""
    y = year - (1 if month <= 2 else 0)
    era = y // 400
    yoe = y - era * 400
    mp = (month + 9) % 12
    doy = (153 * mp + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def parse_date_text(text: str) -> int | None:
    """Microseconds since the epoch of an ISO-8601 string in the accepted shape, or
    ``None`` if it is not one (see the module docstring)."""
    if _DATE.fullmatch(text) is None:
        return None
    year, month, day = int(text[0:4]), int(text[5:7]), int(text[8:10])
    if year < 1 or not 1 <= month <= 12 or not 1 <= day <= days_in_month(year, month):
        return None
    micros = days_from_civil(year, month, day) * DAY
    if len(text) == 10:
        return micros
    hour, minute = int(text[11:13]), int(text[14:16])
    rest = text[16:]
    zone = ""
    if rest.endswith("Z"):
        zone = "Z"
    elif len(rest) >= 6 and rest[-6] in "+-" and rest[-3] == ":":
        zone = rest[-6:]
    elif len(rest) >= 5 and rest[-5] in "+-":
        zone = rest[-5:]
    middle = rest[: len(rest) - len(zone)]
    second = int(middle[1:3]) if middle else 0
    fraction = int((middle[4:] + "000000")[:6]) if len(middle) > 3 else 0
    zone_hours = int(zone[1:3]) if len(zone) > 1 else 0
    zone_minutes = int(zone[-2:]) if len(zone) > 1 else 0
    if hour > 23 or minute > 59 or second > 59 or zone_hours > 23 or zone_minutes > 59:
        return None
    offset = (zone_hours * 60 + zone_minutes) * 60 * _SECOND
    if zone.startswith("-"):
        offset = -offset
    return micros + ((hour * 60 + minute) * 60 + second) * _SECOND + fraction - offset


def seconds_to_micros(seconds: float) -> int | None:
    """A JSON number read as a date: seconds since the epoch, truncated to microseconds
    in double precision (as SQL does it), or ``None`` outside the years 1-9999."""
    value = float(seconds)
    if math.isnan(value) or not MIN_SECONDS <= value < MAX_SECONDS:
        return None
    return int(value * 1_000_000.0)


def start_of_day(micros: int) -> int:
    """Midnight UTC at the start of the day holding ``micros``."""
    return micros - micros % DAY


_RELATIVE = re.compile(
    r"\s*(?:(?P<now>now)|(?P<ago>[0-9]{1,6})\s+(?P<unit1>[a-z]+?)s?\s+ago"
    r"|in\s+(?P<in>[0-9]{1,6})\s+(?P<unit2>[a-z]+?)s?"
    r"|(?P<ahead>[0-9]{1,6})\s+(?P<unit3>[a-z]+?)s?\s+from\s+now)\s*",
    re.IGNORECASE,
)


def parse_relative(text: str) -> RelativeDate | None:
    """``now``, ``30 days ago``, ``1 week ago``, ``in 3 days``, ``2 hours from now``
    (case and extra spaces do not matter), or ``None`` if ``text`` is none of these.
    Units: minute, hour, day, week, month (30 days), year (365 days)."""
    match = _RELATIVE.fullmatch(text)
    if match is None:
        return None
    if match["now"]:
        return RelativeDate(0, "day")
    if match["ago"]:
        amount, unit = -int(match["ago"]), match["unit1"].lower()
    elif match["in"]:
        amount, unit = int(match["in"]), match["unit2"].lower()
    else:
        amount, unit = int(match["ahead"]), match["unit3"].lower()
    if unit not in UNIT_MICROS:
        return None
    if amount == 0:
        return RelativeDate(0, "day")
    return RelativeDate(amount, _unit(unit))


def _unit(name: str) -> Unit:
    for unit in UNITS:
        if unit == name:
            return unit
    raise ValueError(name)
