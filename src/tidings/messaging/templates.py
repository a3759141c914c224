"""Message templates: checked and compiled when saved, rendered per recipient.

Liquid (python-liquid) renders every text field of a template with the roots ``user``,
``event``, ``journey``, ``project`` and ``context``. Rendering is sandboxed: the
environments have no template loader (``include`` and ``render`` find nothing: no file
or network access), and python-liquid's resource limits bound the work (loop
iterations, nesting, local variables) and the output size. HTML bodies are rendered
with auto-escaping, so a user's value never breaks out of its place in the markup.

Email may be written in MJML: at save time it becomes HTML (the ``mjml`` package), and
CSS in ``<style>`` blocks is inlined (``css-inline``, never fetching remote sheets); the
result, still Liquid, is kept in the template's ``compiled`` column. Text is derived from
the rendered HTML when the template has none.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import css_inline
from liquid import DictLoader, Environment
from liquid.exceptions import LiquidError, LiquidSyntaxError
from mjml import mjml_to_html

from tidings.domain.channels import (
    EmailMessage,
    InAppMessage,
    Message,
    PushMessage,
    TextMessage,
    WebhookMessage,
)
from tidings.domain.errors import FieldError, InvalidRequest, ValidationFailed
from tidings.domain.templates import HTML_FIELDS, LIQUID_FIELDS, check_data, html_to_text
from tidings.messaging.fastliquid import FastField, fast_field

__all__ = ["CompiledTemplate", "RenderError", "compile_template", "prepare"]


class _Sandbox(Environment):
    loop_iteration_limit = 100_000
    output_stream_limit = 1_000_000  # characters per field
    context_depth_limit = 30
    local_namespace_limit = 100_000  # bytes of assigned values
    block_nesting_limit = 100


_PLAIN = _Sandbox(autoescape=False, loader=DictLoader({}))
_HTML = _Sandbox(autoescape=True, loader=DictLoader({}))
_INLINER = css_inline.CSSInliner(load_remote_stylesheets=False)


class RenderError(Exception):
    """A template failed for this recipient: the send fails permanently with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _position(source: str, index: int) -> tuple[int, int]:
    before = source[:index]
    return before.count("\n") + 1, index - (before.rfind("\n") + 1) + 1


def _fields(channel: str, data: Mapping[str, Any]) -> dict[str, str]:
    """The Liquid text fields of ``data`` by dotted name (headers as ``headers.<name>``)."""
    out: dict[str, str] = {}
    for name in LIQUID_FIELDS[channel]:
        head, _, tail = name.partition(".")
        value = data.get(head)
        if tail:
            value = value.get(tail) if isinstance(value, dict) else None
        if isinstance(value, str):
            out[name] = value
    if channel == "webhook" and isinstance(data.get("headers"), dict):
        for key, value in data["headers"].items():
            if isinstance(value, str):
                out[f"headers.{key}"] = value
    return out


def prepare(channel: str, data: Any) -> dict[str, Any]:
    """Check a template's ``data`` for saving; what to keep in ``compiled`` (email: the
    HTML made from MJML, CSS inlined). Raises ``ValidationFailed`` (422) naming each
    field that is wrong, with the line and column of a Liquid syntax error."""
    errors = check_data(channel, data)
    if errors:  # a missing, unknown or mistyped field: 400 with its code, as elsewhere
        first = errors[0]
        raise InvalidRequest(
            f"{first.param}: {first.message}", code=first.code, param=first.param, errors=errors
        )
    compiled: dict[str, Any] = {}
    if channel == "email":
        html = data.get("html")
        if data.get("mjml"):
            try:
                result = mjml_to_html(io.StringIO(data["mjml"]))
            except Exception as exc:  # the MJML parser raises what its XML parser raises
                raise ValidationFailed(
                    "The MJML does not parse.",
                    param="data.mjml",
                    errors=[FieldError("data.mjml", "validation_failed", f"MJML: {exc}")],
                ) from None
            if result.errors:
                message = "; ".join(str(e) for e in result.errors)[:500]
                raise ValidationFailed(
                    "The MJML has errors.",
                    param="data.mjml",
                    errors=[FieldError("data.mjml", "validation_failed", message)],
                )
            html = result.html
        if html:
            try:
                html = _INLINER.inline(html)
            except ValueError as exc:
                raise ValidationFailed(
                    "The HTML's CSS could not be inlined.",
                    param="data.html",
                    errors=[FieldError("data.html", "validation_failed", str(exc)[:500])],
                ) from None
            compiled["html"] = html
            if not data.get("text"):
                # The text part, derived once from the HTML as written (Liquid included),
                # then rendered per recipient like any field: not an HTML parse per send.
                compiled["text"] = html_to_text(html)
    # Checked in the sources as written (so that line and column are the author's),
    # then the compiled HTML as it will be rendered.
    fields = _fields(channel, data)
    if channel == "email" and isinstance(data.get("mjml"), str):
        fields["mjml"] = data["mjml"]
    checks = [(f"data.{name}", name, source) for name, source in fields.items()]
    for name in ("html", "text"):
        if name in compiled:
            where = "data.mjml" if data.get("mjml") else "data.html"
            checks.append((where, name, compiled[name]))
    problems: list[FieldError] = []
    seen: set[str] = set()
    for where, name, source in checks:
        env = _HTML if name in HTML_FIELDS or name == "mjml" else _PLAIN
        try:
            env.from_string(source)
        except LiquidSyntaxError as exc:
            if where in seen:
                continue
            seen.add(where)
            token = exc.token
            line, column = _position(source, token.start_index) if token else (1, 1)
            problems.append(
                FieldError(
                    where,
                    "validation_failed",
                    f"Liquid syntax error at line {line}, column {column}: {exc.message}",
                )
            )
        except LiquidError as exc:
            problems.append(FieldError(where, "validation_failed", str(exc)[:500]))
    if problems:
        raise ValidationFailed(
            f"The template does not parse: {problems[0].message}",
            param=problems[0].param,
            errors=problems,
        )
    return compiled


@dataclass(frozen=True)
class CompiledTemplate:
    """A stored template, parsed once per worker and rendered per recipient."""

    channel: str
    data: Mapping[str, Any]
    parsed: Mapping[str, Any]  # field name → liquid template
    fast: Mapping[str, FastField] = field(default_factory=dict)  # plain fields (fastliquid)

    def render_fields(self, roots: Mapping[str, Any]) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, template in self.parsed.items():
            if isinstance(template, str):  # no Liquid in it
                out[name] = template
                continue
            quick = self.fast.get(name)
            if quick is not None:
                text = quick.render(roots)
                if text is not None:
                    out[name] = text
                    continue
            try:
                out[name] = template.render(**roots)
            except LiquidError as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise RenderError(f"template_error: {name}: {first}"[:500]) from None
        return out

    def render(
        self,
        roots: Mapping[str, Any],
        *,
        recipient: Mapping[str, Any],
    ) -> Message:
        """The message for one recipient. ``recipient``: ``email``, ``phone``,
        ``push_token`` and ``push_os`` of the user (or a proof's address)."""
        fields = self.render_fields(roots)
        data = self.data
        if self.channel == "email":
            to = recipient.get("email")
            if not to:
                raise RenderError("no_address: the user has no email")
            html = fields.get("html") or None
            text = fields.get("text") or (html_to_text(html) if html else None)
            return EmailMessage(
                to=to,
                from_address=fields.get("from.address", ""),
                from_name=fields.get("from.name") or None,
                subject=fields.get("subject", "").replace("\r", " ").replace("\n", " "),
                html=html,
                text=text,
                reply_to=fields.get("reply_to") or None,
                cc=_addresses(data.get("cc")),
                bcc=_addresses(data.get("bcc")),
            )
        if self.channel == "text":
            to = recipient.get("phone")
            if not to:
                raise RenderError("no_address: the user has no phone")
            return TextMessage(to=to, body=fields.get("text", ""))
        if self.channel == "push":
            token = recipient.get("push_token")
            if not token:
                raise RenderError("no_address: the user has no device with a push token")
            return PushMessage(
                token=token,
                os=recipient.get("push_os") or "",
                title=fields.get("title", ""),
                body=fields.get("body", ""),
                url=fields.get("url") or None,
                custom=dict(data.get("custom") or {}),
            )
        if self.channel == "webhook":
            headers = {
                key[len("headers.") :]: value
                for key, value in fields.items()
                if key.startswith("headers.")
            }
            return WebhookMessage(
                method=fields.get("method", "POST").upper(),
                url=fields.get("endpoint", ""),
                headers=headers,
                body=fields.get("body"),
            )
        content = {
            "type": data.get("type"),
            "title": fields.get("title", ""),
            "body": fields.get("body", ""),
        }
        for optional in ("html", "image"):
            if fields.get(optional):
                content[optional] = fields[optional]
        if data.get("custom"):
            content["custom"] = dict(data["custom"])
        return InAppMessage(content=content)


def _addresses(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list):
        return tuple(v for v in value if isinstance(v, str) and v)
    return ()


def compile_template(
    channel: str, data: Mapping[str, Any], compiled: Mapping[str, Any] | None
) -> CompiledTemplate:
    """Parse a stored template (its ``data`` and ``compiled`` columns) for rendering."""
    merged = {**data, **(compiled or {})}
    parsed: dict[str, Any] = {}
    fast: dict[str, FastField] = {}
    for name, source in _fields(channel, merged).items():
        if "{{" not in source and "{%" not in source:
            parsed[name] = source
            continue
        env = _HTML if name in HTML_FIELDS else _PLAIN
        try:
            parsed[name] = env.from_string(source)
        except LiquidError as exc:  # saved before a stricter check: fail its sends
            raise RenderError(f"template_error: {name}: {exc}"[:500]) from None
        quick = fast_field(parsed[name])
        if quick is not None:
            fast[name] = quick
    return CompiledTemplate(channel=channel, data=data, parsed=parsed, fast=fast)
