"""A journey's step graph as the admin's editor checks it: the JSON text parsed as
``PUT /api/client/journeys/{id}/steps`` does (``parse_steps``), then what would stop it
going live (``publish_errors``), each problem at the step it concerns.

Every problem's ``param`` starts with the step's uuid (``<uuid>.data.rule``,
``<uuid>.children[0]``), which is how ``by_step`` finds its step. Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tidings.domain.errors import FieldError, TidingsError
from tidings.domain.journeys import Step, parse_steps, publish_errors, step_to_json

__all__ = ["StepErrors", "by_step", "check_graph", "graph_text"]


@dataclass
class StepErrors:
    """Problems of a graph: per step (by uuid, in the editor's order) and the others."""

    steps: dict[str, list[FieldError]] = field(default_factory=dict)
    general: list[FieldError] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)  # where each step starts in the text

    def __bool__(self) -> bool:
        return bool(self.steps or self.general)

    def messages(self) -> dict[str, list[str]]:
        """Per step uuid, the problems as text (what the graph's boxes show on hover)."""
        return {u: [f"{e.param}: {e.message}" for e in errs] for u, errs in self.steps.items()}

    def as_json(self) -> dict[str, Any]:
        return {
            "general": [{"param": e.param, "message": e.message} for e in self.general],
            "steps": [
                {
                    "uuid": uuid,
                    "line": self.lines.get(uuid),
                    "errors": [{"param": e.param, "message": e.message} for e in errs],
                }
                for uuid, errs in self.steps.items()
            ],
        }


def by_step(errors: Iterable[FieldError], uuids: Iterable[str], text: str = "") -> StepErrors:
    """Each error at the step its ``param`` starts with (``<uuid>.data.rule``,
    ``<uuid>.children[0]``, ``<uuid>``); the longest uuid wins when one is a prefix of
    another. ``text``: the editor's JSON, to say on which line each step starts."""
    known = sorted(set(uuids), key=len, reverse=True)
    out = StepErrors()
    for error in errors:
        owner = next(
            (
                u
                for u in known
                if error.param == u or (error.param.startswith(u) and error.param[len(u)] in ".[")
            ),
            None,
        )
        if owner is None:
            out.general.append(error)
        else:
            out.steps.setdefault(owner, []).append(error)
    for uuid in out.steps:
        found = re.search(r"^\s{0,8}" + re.escape(json.dumps(uuid)) + r"\s*:", text, re.M)
        if found:
            out.lines[uuid] = text.count("\n", 0, found.start()) + 1
    return out


def check_graph(text: str) -> tuple[dict[str, Step] | None, StepErrors, StepErrors]:
    """The editor's text: (the parsed graph, what stops saving it, what stops it going
    live). A graph that cannot be saved has no publish check."""
    if not text.strip():
        text = "{}"
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        message = f"Not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}."
        return (
            None,
            StepErrors(general=[FieldError("steps", "parameter_invalid_format", message)]),
            StepErrors(),
        )
    uuids = [str(k) for k in raw] if isinstance(raw, dict) else []
    try:
        steps = parse_steps(raw)
    except TidingsError as exc:
        problems = exc.errors or [FieldError(exc.param or "steps", exc.code, exc.message)]
        return None, by_step(problems, uuids, text), StepErrors()
    return steps, StepErrors(), by_step(publish_errors(steps), uuids, text)


def graph_text(steps: Mapping[str, Step]) -> str:
    return json.dumps({u: step_to_json(s) for u, s in steps.items()}, indent=2, ensure_ascii=False)
