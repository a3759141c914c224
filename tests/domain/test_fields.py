"""Field rules: email, phone, time zone, locale, timestamps."""

from __future__ import annotations

import pytest

from tidings.domain import fields


def test_email_is_normalised_and_checked() -> None:
    assert fields.normalise_email("Sam@Example.COM") == "Sam@example.com"
    with pytest.raises(ValueError, match="not a valid email"):
        fields.normalise_email("sam@")


@pytest.mark.parametrize(
    ("raw", "locales", "expected"),
    [
        ("+61491570006", (), "+61491570006"),
        ("0491 570 006", ("en-AU",), "+61491570006"),
        ("030 901820", ("de-DE",), "+4930901820"),
        ("030 901820", (None, "de-DE"), "+4930901820"),  # the project's default
    ],
)
def test_phone_becomes_e164(raw: str, locales: tuple[str | None, ...], expected: str) -> None:
    assert fields.normalise_phone(raw, locales=locales) == expected


@pytest.mark.parametrize(
    ("raw", "locales"),
    [("12", ()), ("0491 570 006", ()), ("+61612345678", ()), ("abc", ("en-AU",))],
)
def test_invalid_phone_is_refused(raw: str, locales: tuple[str | None, ...]) -> None:
    with pytest.raises(ValueError, match="not a valid phone"):
        fields.normalise_phone(raw, locales=locales)


def test_timezone_and_locale() -> None:
    assert fields.normalise_timezone("Australia/Sydney") == "Australia/Sydney"
    for bad in ("Mars/Olympus", "x" * 51, ""):
        with pytest.raises(ValueError):
            fields.normalise_timezone(bad)
    assert fields.normalise_locale("en-AU") == "en-AU"
    assert fields.normalise_locale("de_DE") == "de-DE"  # Java/Android spelling
    with pytest.raises(ValueError):
        fields.normalise_locale("not a tag")


def test_region_of_locale() -> None:
    assert fields.region_of_locale("en-AU") == "AU"
    assert fields.region_of_locale("en") is None
    assert fields.region_of_locale(None) is None


def test_timestamps() -> None:
    assert fields.parse_timestamp("1970-01-01T00:00:01Z") == 1_000_000
    assert fields.parse_timestamp("1970-01-01T01:00:01+01:00") == 1_000_000
    assert fields.parse_timestamp("1970-01-01T00:00:01") == 1_000_000  # naive means UTC
    with pytest.raises(ValueError):
        fields.parse_timestamp("yesterday")
