"""The pure step logic: what each step decides for one entrance at an instant."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from tidings.domain.errors import ValidationFailed
from tidings.domain.journeys import (
    Child,
    Context,
    Emit,
    ExitEntrance,
    JourneySettings,
    LinkTo,
    Send,
    Step,
    UpdateTraits,
    decide,
    in_holdout,
    parse_settings,
    parse_steps,
    publish_errors,
    wait_matches,
)
from tidings.domain.journeys.schedule import occurrences_between, rrule_error
from tidings.domain.rules import EventFact, ProfileFacts

S = 1_000_000


def at(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * S)


def ctx(**kw) -> Context:  # type: ignore[no-untyped-def]
    base = dict(
        project_id=1,
        journey_id=1,
        entrance_id=42,
        profile=ProfileFacts(
            id="p", external_id="x", timezone="Europe/Paris", data={"plan": "pro"}
        ),
        arrived_at=at("2026-03-02T10:00:00+00:00"),
        timezone="UTC",
        event={"name": "Cart updated", "data": {"cart_id": "c1", "total": 30}},
    )
    base.update(kw)
    return Context(**base)


def step(type_: str, data: dict, children: tuple[Child, ...] = (Child("next"),)) -> Step:
    return Step(uuid="s", type=type_, data=data, children=children, id=1)


def test_duration_delay_holds_then_passes_and_accepts_seconds() -> None:
    s = step("delay", {"format": "duration", "duration": {"days": 1, "seconds": 5}})
    c = ctx()
    assert decide(s, c, c.arrived_at).hold_until == c.arrived_at + 86405 * S
    d = decide(s, c, c.arrived_at + 86405 * S)
    assert d.hold_until is None and d.next == "next"


def test_time_of_day_delay_is_in_the_users_timezone() -> None:
    s = step("delay", {"format": "time", "time": "09:00"})
    c = ctx()  # 10:00 UTC = 11:00 in Paris: the next 09:00 Paris is tomorrow, 08:00 UTC
    assert decide(s, c, c.arrived_at).hold_until == at("2026-03-03T08:00:00+00:00")
    fallback = ctx(profile=ProfileFacts(id="p"), timezone="Australia/Sydney")
    due = decide(s, fallback, fallback.arrived_at).hold_until
    assert due is not None
    assert datetime.fromtimestamp(due / S, ZoneInfo("Australia/Sydney")).hour == 9


def test_templated_date_delay() -> None:
    s = step("delay", {"format": "date", "date": "{{ event.renews_at }}"})
    c = ctx(event={"data": {"renews_at": "2026-04-01T00:00:00Z"}})
    assert decide(s, c, c.arrived_at).hold_until == at("2026-04-01T00:00:00+00:00")
    bad = ctx(event={"data": {"renews_at": "soon"}})
    assert decide(s, bad, bad.arrived_at).failed


def test_gate_reads_profile_and_journey_event() -> None:
    rule = {
        "type": "wrapper",
        "group": "parent",
        "operator": "and",
        "children": [
            {
                "type": "string",
                "group": "user",
                "path": "data.plan",
                "operator": "=",
                "value": "pro",
            },
            {
                "type": "number",
                "group": "user",
                "path": "data.journey.event.total",
                "operator": ">",
                "value": 20,
            },
        ],
    }
    s = step("gate", {"rule": rule}, (Child("y", "yes"), Child("n", "no")))
    assert decide(s, ctx(), ctx().arrived_at).next == "y"
    low = ctx(event={"data": {"total": 5}})
    assert decide(s, low, low.arrived_at).next == "n"


def test_wait_times_out_to_no_and_matches_the_entering_key() -> None:
    s = step(
        "wait",
        {"event_name": "Order placed", "match": "data.cart_id", "timeout": {"hours": 2}},
        (Child("y", "yes"), Child("n", "no")),
    )
    c = ctx()
    d = decide(s, c, c.arrived_at)
    assert d.wait is not None and d.wait.timeout_at == c.arrived_at + 7200 * S
    profile = c.profile
    same = EventFact("Order placed", {"cart_id": "c1"}, c.arrived_at + 1)
    other = EventFact("Order placed", {"cart_id": "c2"}, c.arrived_at + 1)
    assert wait_matches(d.wait, c.event, profile, same, c.arrived_at + 1)
    assert not wait_matches(d.wait, c.event, profile, other, c.arrived_at + 1)
    assert decide(s, ctx(resumed="yes"), c.arrived_at).next == "y"
    assert decide(s, c, c.arrived_at + 7200 * S).next == "n"


def test_action_sends_unless_quiet_capped_or_held_out() -> None:
    s = step("action", {"campaign_id": 9})
    c = ctx()
    assert decide(s, c, c.arrived_at).effects == (Send(9),)
    quiet = JourneySettings(quiet_hours=(22 * 60, 8 * 60, "hold"))
    night = at("2026-03-02T23:30:00+01:00")  # 23:30 in Paris
    d = decide(s, ctx(settings=quiet), night)
    assert d.hold_until == at("2026-03-03T08:00:00+01:00") and not d.effects
    skip = JourneySettings(quiet_hours=(22 * 60, 8 * 60, "skip"))
    d = decide(s, ctx(settings=skip), night)
    assert d.outcome == "skipped_quiet_hours" and not d.effects and d.next == "next"
    capped = JourneySettings(frequency_cap=(2, 86400 * S))
    assert decide(s, ctx(settings=capped, sent_count=2), night).outcome == "frequency_capped"
    assert decide(s, ctx(settings=capped, sent_count=1), c.arrived_at).effects == (Send(9),)
    assert decide(s, ctx(holdout=True), c.arrived_at).outcome == "holdout"


def test_experiment_splits_by_weight_and_is_stable() -> None:
    s = step("experiment", {}, (Child("a", ratio=3), Child("b", ratio=1)))
    picks = Counter(decide(s, ctx(entrance_id=i), 0).next for i in range(4000))
    assert 2800 < picks["a"] < 3200 and picks["a"] + picks["b"] == 4000
    assert decide(s, ctx(entrance_id=7), 0).next == decide(s, ctx(entrance_id=7), 5).next


def test_throttle_and_balancer() -> None:
    t = step("throttle", {"rate_limit": 2, "rate_interval": "minute"})
    now = at("2026-03-02T10:00:30+00:00")
    assert decide(t, ctx(rate_counts={"": 1}), now).count_rate == ""
    assert decide(t, ctx(rate_counts={"": 2}), now).hold_until == at("2026-03-02T10:01:00+00:00")
    b = step("balancer", {"rate_limit": 5, "rate_interval": "hour"}, (Child("a"), Child("b")))
    assert decide(b, ctx(rate_counts={"a": 3, "b": 1}), now).next == "b"
    assert decide(b, ctx(rate_counts={"a": 5, "b": 5}), now).hold_until is not None


def test_update_event_link_exit() -> None:
    u = step("update", {"template": '{"last_cart": "{{ event.cart_id }}", "n": 1}'})
    assert decide(u, ctx(), 0).effects == (UpdateTraits({"last_cart": "c1", "n": 1}),)
    assert decide(step("update", {"template": "not json"}), ctx(), 0).failed
    e = step(
        "event", {"event_name": "Cart reminded", "template": '{"cart": "{{ event.cart_id }}"}'}
    )
    assert decide(e, ctx(), 0).effects == (Emit("Cart reminded", {"cart": "c1"}),)
    assert decide(step("link", {"target_id": 3}, ()), ctx(), 0).effects == (LinkTo(3, None),)
    assert decide(step("exit", {}, ()), ctx(), 0).effects == (ExitEntrance(None),)


def test_templates_are_sandboxed() -> None:
    loop = step("update", {"template": "{% for i in (1..100000000) %}x{% endfor %}"})
    assert decide(loop, ctx(), 0).failed
    include = step("update", {"template": "{% include 'secrets.txt' %}"})
    assert decide(include, ctx(), 0).failed


def test_holdout_is_per_user_and_near_the_percent() -> None:
    inside = sum(in_holdout(1, f"p{i}", 10) for i in range(5000))
    assert 400 < inside < 600
    assert in_holdout(1, "p1", 10) == in_holdout(1, "p1", 10)
    assert not any(in_holdout(1, f"p{i}", 0) for i in range(100))


def test_publish_checks_every_step() -> None:
    steps = parse_steps(
        {
            "e": {
                "type": "entrance",
                "data": {"trigger": "event"},
                "children": [{"external_id": "g"}],
            },
            "g": {"type": "gate", "data": {"rule": {"type": "nonsense"}}, "children": []},
            "w": {"type": "wait", "data": {"event_name": "x"}},
            "s": {
                "type": "entrance",
                "data": {"trigger": "schedule", "list_id": 1, "schedule": "FREQ=SOMETIMES"},
            },
        }
    )
    params = {e.param for e in publish_errors(steps)}
    assert {"e.data.event_name", "g.children", "w.data.timeout", "s.data.schedule"} <= params
    assert any(p.startswith("g.data.rule") for p in params)


def test_settings_are_checked() -> None:
    s = parse_settings(
        {
            "quiet_hours": {"start": "22:00", "end": "08:00", "mode": "skip"},
            "max_entries_per_user": 2,
            "frequency_cap": {"count": 3, "period": {"days": 1}},
            "goal": {"event_name": "Order placed", "within": {"days": 3}},
            "holdout_percent": 10,
        }
    )
    assert s.quiet_hours == (1320, 480, "skip") and s.frequency_cap == (3, 86400 * S)
    with pytest.raises(ValidationFailed) as caught:
        parse_settings({"holdout_percent": 101, "quiet_hours": {"start": "25:00"}, "x": 1})
    assert {e.param for e in caught.value.errors} >= {
        "settings.holdout_percent",
        "settings.quiet_hours.start",
        "settings.x",
    }


def test_schedule_occurrences_in_the_project_timezone() -> None:
    assert rrule_error("FREQ=DAILY;BYHOUR=9;BYMINUTE=0") is None
    assert rrule_error("FREQ=NEVER")
    anchor = at("2026-03-01T00:00:00+00:00")
    found = occurrences_between(
        "FREQ=DAILY;BYHOUR=9;BYMINUTE=0;BYSECOND=0",
        anchor,
        anchor,
        at("2026-03-03T12:00:00+00:00"),
        "Australia/Sydney",
    )
    local = [datetime.fromtimestamp(x / S, ZoneInfo("Australia/Sydney")) for x in found]
    assert [(d.day, d.hour) for d in local] == [(2, 9), (3, 9)]
    assert datetime.fromtimestamp(found[0] / S, UTC).hour == 22  # 09:00 AEDT
