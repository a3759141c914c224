"""Validation and normalisation of the profile fields the wire contract names.

Each function returns the normalised value or raises ``ValueError`` with a message fit
for a user; callers attach the parameter path.
"""

from __future__ import annotations

import functools
import zoneinfo
from datetime import UTC, datetime, timedelta

import langcodes
import phonenumbers
from email_validator import EmailNotValidError, validate_email

from tidings.domain import limits

__all__ = [
    "MAX_ID_LENGTH",
    "format_timestamp",
    "normalise_email",
    "normalise_locale",
    "normalise_phone",
    "normalise_timezone",
    "parse_timestamp",
    "region_of_locale",
]

MAX_ID_LENGTH = 255
MAX_TIMEZONE_LENGTH = 50
MAX_LOCALE_LENGTH = 255


def normalise_email(value: str) -> str:
    try:
        result = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"'{value}' is not a valid email address: {exc}") from None
    return str(result.normalized)


@functools.lru_cache(maxsize=1024)
def region_of_locale(locale: str | None) -> str | None:
    """The ISO 3166 region a BCP-47 tag names (``en-AU`` → ``AU``), if any."""
    if not locale:
        return None
    try:
        territory = langcodes.Language.get(locale).territory
    except ValueError:  # langcodes.LanguageTagError is a ValueError
        return None
    if territory and territory.isalpha():
        return str(territory).upper()
    return None


def normalise_phone(value: str, *, locales: tuple[str | None, ...] = ()) -> str:
    """E.164 form of ``value``; a national number is read with the first locale's region."""
    region = next((r for r in map(region_of_locale, locales) if r), None)
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not phonenumbers.is_valid_number(number):
        hint = "" if value.startswith("+") or region else " (no region known: use +<country code>)"
        raise ValueError(f"'{value}' is not a valid phone number{hint}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@functools.cache
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def normalise_timezone(value: str) -> str:
    if len(value) > MAX_TIMEZONE_LENGTH or value not in _timezones():
        raise ValueError(f"'{value[:60]}' is not an IANA time zone name (e.g. Australia/Sydney)")
    return value


@functools.lru_cache(maxsize=1024)
def normalise_locale(value: str) -> str:
    """A BCP-47 tag; ``de_DE`` (as Android and Java write locales) becomes ``de-DE``."""
    tag = value.replace("_", "-")
    if len(tag) > MAX_LOCALE_LENGTH or not langcodes.tag_is_valid(tag):
        raise ValueError(f"'{value[:60]}' is not a BCP-47 language tag (e.g. en-AU)")
    return tag


def parse_timestamp(value: str) -> int:
    """Microseconds since the epoch of an ISO-8601 timestamp; naive means UTC.

    Exact (integer arithmetic, no float rounding), and only in the range a calendar date
    can show once converted to UTC: years 1 to 9999 (``limits.MIN_TIMESTAMP`` to
    ``limits.MAX_TIMESTAMP``). ``0001-01-01T00:00:00+01:00`` is in year 0 in UTC: refused.
    """
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"'{value[:60]}' is not an ISO-8601 timestamp") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        offset = parsed.utcoffset() or timedelta(0)
    except ValueError:  # a tzinfo that cannot say its offset
        raise ValueError(f"'{value[:60]}' has an unusable UTC offset") from None
    # datetime - datetime would convert to UTC first, which fails outside years 1-9999.
    local = parsed.replace(tzinfo=None) - limits.EPOCH.replace(tzinfo=None)
    micros = (local - offset) // timedelta(microseconds=1)
    if not limits.MIN_TIMESTAMP <= micros <= limits.MAX_TIMESTAMP:
        raise ValueError(
            f"'{value[:60]}' is outside the accepted range: 0001-01-01T00:00:00Z to "
            "9999-12-31T23:59:59.999999Z (in UTC)"
        )
    return micros


def format_timestamp(micros: int) -> str:
    """ISO-8601 in UTC with milliseconds (``2026-04-28T10:00:00.000Z``).

    Exact, and total: a stored value outside the calendar's range (written before the
    range was enforced) is shown clamped to its nearest end rather than failing the read.
    """
    clamped = min(max(micros, limits.MIN_TIMESTAMP), limits.MAX_TIMESTAMP)
    moment = limits.EPOCH + timedelta(microseconds=clamped)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
