"""A faster way through the templates most messages use, with python-liquid's own rules.

Most fields of a message template are text with ``{{ user.first_name }}``-like outputs
and no tags. python-liquid renders each of those through a new render context (scopes,
limits, an output buffer) and a generic path resolver: per recipient and field that setup
costs more than the output itself (bench/sends.py's profile: rendering was two thirds of
a send).

``fast_field`` looks at a parsed template once: when it holds only text and output
statements whose expression is a plain path of names (``user.data.code``), optionally
through the ``default`` filter with a literal argument, it answers a ``FastField`` that
renders by walking the roots' dicts itself. Anything it does not handle exactly like
python-liquid — a tag, another filter, a path through a list, a ``size``/``first``/
``last`` property, a value that is not a dict on the way, an output beyond the stream
limit — makes ``render`` answer ``None``, and the caller renders the field through
python-liquid as before. The value it finds is stringified and escaped by python-liquid's
own ``to_liquid_string``, and ``default`` is python-liquid's filter function, so a field
renders to the same text either way (tests/messaging/test_fastliquid.py compares them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from liquid import BoundTemplate
from liquid.builtin.content import ContentNode
from liquid.builtin.expressions.arguments import PositionalArgument
from liquid.builtin.expressions.filtered import FilteredExpression
from liquid.builtin.expressions.path import Path
from liquid.builtin.expressions.primitive import Literal
from liquid.builtin.output import OutputNode
from liquid.stringify import to_liquid_string

__all__ = ["FastField", "fast_field"]

_SPECIAL = frozenset({"size", "first", "last"})  # python-liquid resolves these itself
_MISSING = object()


class _Output:
    __slots__ = ("default", "has_default", "path", "root", "token")

    def __init__(self, node: OutputNode, path: tuple[str, ...]) -> None:
        self.root = path[0]
        self.path = path[1:]
        self.token = node.token
        self.has_default = False
        self.default: object = None


class FastField:
    """A field of text and plain outputs, rendered without a python-liquid context."""

    __slots__ = ("autoescape", "default_filter", "env", "limit", "parts")

    def __init__(self, template: BoundTemplate, parts: list[str | _Output]) -> None:
        self.env = template.env
        self.autoescape = bool(template.env.autoescape)
        self.limit = template.env.output_stream_limit
        self.parts = parts
        self.default_filter = template.env.filters["default"]

    def render(self, roots: Mapping[str, Any]) -> str | None:
        """The field's text, or ``None`` when python-liquid must render it."""
        out: list[str] = []
        size = 0
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                size += len(part)
                continue
            value = _resolve(roots, part)
            if value is _MISSING:
                return None
            if value is _UNDEFINED_MARK:
                value = self.env.undefined(
                    part.root, hint=f"{part.root} is undefined", token=part.token
                )
            if part.has_default:
                value = self.default_filter(value, part.default)
            text = to_liquid_string(value, self.autoescape)
            out.append(text)
            size += len(text)
        if self.limit is not None and size > self.limit:
            return None  # python-liquid raises its own error for it
        return "".join(out)


_UNDEFINED_MARK = object()


def _resolve(roots: Mapping[str, Any], part: _Output) -> object:
    """The value at the path; ``_UNDEFINED_MARK`` where python-liquid finds nothing
    (a name missing from a dict); ``_MISSING`` where its rules are not plain dict
    lookups (the caller then lets python-liquid render)."""
    if type(roots) is not dict or part.root not in roots:
        return _MISSING  # python-liquid would look in its built-in names
    obj = roots[part.root]
    for key in part.path:
        if type(obj) is not dict:
            return _MISSING
        if key not in obj:
            return _UNDEFINED_MARK
        obj = obj[key]
    return obj


def _plain_path(expression: object) -> tuple[str, ...] | None:
    if not isinstance(expression, Path):
        return None
    segments = expression.path
    if not segments or not all(isinstance(s, str) and s not in _SPECIAL for s in segments):
        return None
    return tuple(str(s) for s in segments)


class _Escaping:
    """All a literal's ``evaluate`` reads of a render context."""

    def __init__(self, template: BoundTemplate) -> None:
        self.autoescape = bool(template.env.autoescape)


def fast_field(template: BoundTemplate) -> FastField | None:
    """A ``FastField`` for ``template`` if it is only text and plain outputs, else None."""
    parts: list[str | _Output] = []
    for node in template.nodes:
        if isinstance(node, ContentNode):
            parts.append(node.text)
            continue
        if not isinstance(node, OutputNode):
            return None
        expression = node.expression
        if not isinstance(expression, FilteredExpression):
            return None
        path = _plain_path(expression.left)
        if path is None:
            return None
        output = _Output(node, path)
        filters = expression.filters or []
        if len(filters) > 1:
            return None
        if filters:
            only = filters[0]
            if only.name != "default" or len(only.args) != 1:
                return None
            argument = only.args[0]
            if not isinstance(argument, PositionalArgument) or not isinstance(
                argument.value, Literal
            ):
                return None
            output.has_default = True
            # What python-liquid's literal evaluates to (a string is Markup when escaping).
            output.default = argument.value.evaluate(_Escaping(template))  # type: ignore[arg-type]
        parts.append(output)
    return FastField(template, parts)
