"""Pure rules of messaging: channels, subscription states, the campaign state machine,
template locale fallback, retry backoff, rate windows and wall-clock send times.

No I/O; ``now`` (integer microseconds, UTC) is always a parameter.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from enum import IntEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tidings.domain.errors import Conflict

__all__ = [
    "CAMPAIGN_STATES",
    "CHANNELS",
    "RATE_INTERVALS",
    "SubscriptionState",
    "backoff",
    "check_transition",
    "locale_candidates",
    "receives",
    "wall_clock_in",
    "window_start",
]

CHANNELS = ("email", "text", "push", "webhook", "in_app")
PROVIDER_GROUPS = ("email", "text", "push", "webhook")
RATE_INTERVALS: dict[str, int] = {
    "second": 1_000_000,
    "minute": 60_000_000,
    "hour": 3_600_000_000,
    "day": 86_400_000_000,
}
CAMPAIGN_STATES = (
    "draft",
    "scheduled",
    "loading",
    "running",
    "finished",
    "aborting",
    "aborted",
)


class SubscriptionState(IntEnum):
    UNSUBSCRIBED = 0
    SUBSCRIBED = 1
    OPTED_IN = 2


def receives(state: int | None, *, requires_opt_in: bool) -> bool:
    """Whether a user whose recorded state is ``state`` (None: nothing recorded) gets
    messages of a type: no record counts as subscribed, unless the type requires an
    opt-in, which only state 2 gives."""
    if requires_opt_in:
        return state == SubscriptionState.OPTED_IN
    return state is None or state != SubscriptionState.UNSUBSCRIBED


# What a PATCH may ask for, from each state (the worker makes the other moves:
# scheduled → loading → running → finished, aborting → aborted).
_ASKED: dict[tuple[str, str], set[str]] = {
    ("blast", "scheduled"): {"draft", "scheduled"},  # scheduled again: a new send_at
    ("blast", "draft"): {"scheduled"},
    ("blast", "aborting"): {"scheduled", "loading", "running"},
    ("trigger", "running"): {"draft"},
    ("trigger", "draft"): {"running"},  # a live trigger campaign back to draft pauses it
    ("trigger", "aborting"): {"running"},
}


def check_transition(campaign_type: str, current: str, wanted: str) -> None:
    """Raise ``Conflict`` (409 state_conflict) unless a PATCH may move a campaign of
    ``campaign_type`` from ``current`` to ``wanted``. Asking for the current state is
    allowed (a no-op), except ``scheduled``, which re-schedules."""
    if wanted == current and wanted != "scheduled":
        return
    if current in _ASKED.get((campaign_type, wanted), set()):
        return
    raise Conflict(
        f"A {campaign_type} campaign cannot go from '{current}' to '{wanted}'.", param="state"
    )


def locale_candidates(user_locale: str | None, project_locale: str | None) -> list[str]:
    """Template locales to try, in order: the user's locale, its language alone
    (``en-AU`` → ``en``), the project's locale, its language alone."""
    out: list[str] = []
    for locale in (user_locale, project_locale):
        if not locale:
            continue
        for candidate in (locale, locale.replace("_", "-").split("-")[0]):
            if candidate not in out:
                out.append(candidate)
    return out


def backoff(attempt: int, rng: random.Random, *, base: float = 5.0, cap: float = 3600.0) -> int:
    """Microseconds to wait before retry number ``attempt`` (1 = the first retry):
    exponential, capped, with jitter (half fixed, half random) so that many failed sends
    do not come back at the same moment."""
    delay = min(cap, base * (2 ** max(0, attempt - 1)))
    return int((delay / 2 + rng.random() * delay / 2) * 1_000_000)


def window_start(now: int, interval: str) -> int:
    """The start of the rate window (of ``interval``) that ``now`` falls in."""
    length = RATE_INTERVALS[interval]
    return now - now % length


def _zone(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def wall_clock_in(send_at: int, project_timezone: str | None, user_timezone: str | None) -> int:
    """``send_at`` as a wall-clock time (read in the project's timezone, UTC without
    one) moved to the user's timezone (the project's when the user has none): a blast
    at 09:00 reaches each user at 09:00 where they are."""
    source = _zone(project_timezone) or UTC
    target = _zone(user_timezone) or source
    local = datetime.fromtimestamp(send_at / 1_000_000, UTC).astimezone(source)
    moved = local.replace(tzinfo=None).replace(tzinfo=target)
    return int(moved.timestamp() * 1_000_000)
