"""Journeys as pure values and functions: the step graph, its checks, and what each step
does for one entrance at an instant (``decide``). The engine in ``tidings.journeys``
loads state, calls these, and writes what they decide."""

from tidings.domain.journeys.graph import (
    STEP_TYPES,
    Child,
    JourneySettings,
    Step,
    duration_micros,
    parse_settings,
    parse_steps,
    publish_errors,
    step_to_json,
)
from tidings.domain.journeys.steps import (
    Context,
    Decision,
    Emit,
    ExitEntrance,
    LinkTo,
    Send,
    UpdateTraits,
    WaitFor,
    bucket,
    decide,
    event_passes,
    in_holdout,
    lookup_path,
    wait_matches,
    zone,
)

__all__ = [
    "STEP_TYPES",
    "Child",
    "Context",
    "Decision",
    "Emit",
    "ExitEntrance",
    "JourneySettings",
    "LinkTo",
    "Send",
    "Step",
    "UpdateTraits",
    "WaitFor",
    "bucket",
    "decide",
    "duration_micros",
    "event_passes",
    "in_holdout",
    "lookup_path",
    "parse_settings",
    "parse_steps",
    "publish_errors",
    "step_to_json",
    "wait_matches",
    "zone",
]
