"""The filter every reporting read takes, validated once at the edge.

``EventFilter.build`` turns raw parameters (as the API or a Python caller has them) into a
checked filter, raising ``InvalidRequest`` (400) for what is malformed or missing and
``ValidationFailed`` (422) for what is well-formed but contradictory (``from`` after
``to``, a range longer than allowed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec

from tidings.domain.errors import FieldError, InvalidRequest, ValidationFailed

__all__ = ["GROUPS", "MAX_VALUES", "EventFilter", "parse_time"]

DAY = 86_400_000_000
MAX_VALUES = 100  # per list filter
GROUPS = ("event_name", "campaign", "user", "day")


def parse_time(value: str | None, param: str) -> int:
    """An RFC 3339 time with an offset (or ``Z``) → microseconds since the epoch."""
    if value is None or not value.strip():
        raise InvalidRequest(
            f"{param}: required (an RFC 3339 time such as 2026-01-01T00:00:00Z).",
            code="parameter_missing",
            param=param,
        )
    text = value.strip()
    # "…T10:00:00+10:00" unencoded in a URL arrives with a space for the "+".
    if len(text) > 6 and text[-6] == " " and text[-3] == ":":
        text = text[:-6] + "+" + text[-5:]
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None or "T" not in text.upper():
        raise InvalidRequest(
            f"{param}: '{value[:60]}' is not an RFC 3339 time with an offset "
            "(such as 2026-01-01T00:00:00Z).",
            param=param,
        )
    delta = parsed.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _strings(values: Sequence[str], param: str) -> tuple[str, ...]:
    if len(values) > MAX_VALUES:
        raise InvalidRequest(f"{param}: at most {MAX_VALUES} values.", param=param)
    for value in values:
        if not value.strip():
            raise InvalidRequest(
                f"{param}: a value is empty.", code="parameter_invalid_empty", param=param
            )
        if len(value) > 255:
            raise InvalidRequest(f"{param}: a value is longer than 255 characters.", param=param)
    return tuple(sorted(set(values)))


def _integers(values: Sequence[str | int], param: str) -> tuple[int, ...]:
    if len(values) > MAX_VALUES:
        raise InvalidRequest(f"{param}: at most {MAX_VALUES} values.", param=param)
    found = set()
    for value in values:
        text = str(value).strip()
        if not text.isascii() or not text.isdigit() or len(text) > 18:
            raise InvalidRequest(f"{param}: '{text[:30]}' is not a campaign id.", param=param)
        found.add(int(text))
    return tuple(sorted(found))


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Events of one project with ``start <= created_at < end`` and, for each list that is
    not empty, one of its values (names; users by external or anonymous id, together;
    campaigns, as ``data.campaign_id``)."""

    project_id: int
    start: int
    end: int
    names: tuple[str, ...] = ()
    external_ids: tuple[str, ...] = ()
    anonymous_ids: tuple[str, ...] = ()
    campaign_ids: tuple[int, ...] = ()

    @classmethod
    def build(
        cls,
        project_id: int,
        start: str | int | None,
        end: str | int | None,
        *,
        names: Sequence[str] = (),
        external_ids: Sequence[str] = (),
        anonymous_ids: Sequence[str] = (),
        campaign_ids: Sequence[str | int] = (),
        max_days: int | None = None,
    ) -> EventFilter:
        lower = start if isinstance(start, int) else parse_time(start, "from")
        upper = end if isinstance(end, int) else parse_time(end, "to")
        if lower > upper:
            raise ValidationFailed(
                "from is after to.",
                errors=[FieldError("from", "validation_failed", "from must not be after to.")],
                param="from",
            )
        if max_days is not None and upper - lower > max_days * DAY:
            raise ValidationFailed(
                f"The range is longer than {max_days} days.",
                errors=[
                    FieldError("to", "validation_failed", f"at most {max_days} days after from.")
                ],
                param="to",
            )
        return cls(
            project_id=project_id,
            start=lower,
            end=upper,
            names=_strings(names, "event_name"),
            external_ids=_strings(external_ids, "external_id"),
            anonymous_ids=_strings(anonymous_ids, "anonymous_id"),
            campaign_ids=_integers(campaign_ids, "campaign_id"),
        )

    @property
    def by_user(self) -> bool:
        return bool(self.external_ids or self.anonymous_ids)

    @property
    def whole_days(self) -> bool:
        return self.start % DAY == 0 and self.end % DAY == 0

    def fingerprint(self) -> str:
        """A short digest of what the filter selects (cursors carry it: a cursor is only
        good for the filter it was made for)."""
        raw = msgspec.json.encode(
            [
                self.project_id,
                self.start,
                self.end,
                self.names,
                self.external_ids,
                self.anonymous_ids,
                self.campaign_ids,
            ]
        )
        return hashlib.sha256(raw).hexdigest()[:12]
