"""Liquid for journeys: the ``update`` and ``event`` steps' JSON and the ``date`` delay.

Rendering is sandboxed: no loader (no file access), no network, bounded loops and output.
Roots: ``user`` (profile fields and ``user.data``), ``event`` (the entering event's
data), ``journey`` ({id, entrance_id}).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from liquid import BoundTemplate, Environment
from liquid.exceptions import LiquidError

__all__ = ["TemplateFailed", "render_json", "render_text", "template_error"]

_MAX_OUTPUT = 64 * 1024


class _Sandbox(Environment):
    output_stream_limit = _MAX_OUTPUT
    loop_iteration_limit = 10_000
    local_namespace_limit = 64 * 1024
    context_depth_limit = 30


_ENV = _Sandbox()


class TemplateFailed(ValueError):
    """A template that does not parse, renders with an error, or gives bad JSON."""


@lru_cache(maxsize=512)
def _compiled(source: str) -> BoundTemplate:
    return _ENV.from_string(source)


def template_error(source: object) -> str | None:
    """Why ``source`` is not a usable template (None: it is)."""
    if not isinstance(source, str) or len(source) > _MAX_OUTPUT:
        return "must be a Liquid template string of at most 64 KB"
    try:
        _compiled(source)
    except LiquidError as exc:
        return f"does not parse: {str(exc).splitlines()[0]}"
    return None


def render_text(source: str, roots: Mapping[str, Any]) -> str:
    try:
        return _compiled(source).render(**roots)
    except LiquidError as exc:
        raise TemplateFailed(str(exc).splitlines()[0]) from exc


def render_json(source: str, roots: Mapping[str, Any]) -> dict[str, Any]:
    """Render ``source`` and read the result as a JSON object."""
    text = render_text(source, roots)
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise TemplateFailed(f"the template did not give JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise TemplateFailed("the template did not give a JSON object")
    return value
