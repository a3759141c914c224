"""The plain-template path (messaging/fastliquid.py) renders exactly what python-liquid
renders, and hands everything it does not handle back to python-liquid."""

from __future__ import annotations

from typing import Any

import pytest

from tidings.messaging.fastliquid import fast_field
from tidings.messaging.templates import _HTML, _PLAIN, compile_template

ROOTS: list[dict[str, Any]] = [
    {
        "user": {
            "first_name": "Ada",
            "email": "ada@example.com",
            "data": {"code": 42, "vip": True, "ratio": 0.5, "tags": ["a", "b"], "none": None},
        },
        "event": {"order_id": "A-1", "total": 0},
        "project": {"name": "Shop & Co"},
        "context": {},
        "journey": {},
    },
    {  # values that need escaping, missing and empty ones
        "user": {"first_name": "<script>alert(1)</script>", "data": {"code": "", "vip": False}},
        "event": {},
        "project": {"name": 'O\'Brien "quoted"'},
        "context": {"campaign_id": 7},
        "journey": {},
    },
    {"user": {}, "event": {}, "project": {}, "context": {}, "journey": {}},
    {"user": "not a dict", "event": None, "project": {"name": 3}, "context": {}, "journey": {}},
]

PLAIN = [
    "Hello {{ user.first_name }}!",
    "Hi {{ user.first_name | default: 'there' }}, from {{ project.name }}",
    "{{ user.data.code }} {{ user.data.vip }} {{ user.data.ratio }} {{ user.data.none }}",
    "{{ user.data.tags }}",
    "{{ user.data.code | default: 0 }} {{ user.data.vip | default: 'no' }}",
    "{{ event.total | default: 'none' }} {{ event.missing.deeper }}",
    "{{ user.first_name.size }}",  # a property python-liquid resolves itself
    "{{ user.data.tags.first }} {{ user.data.tags[1] }}",
    "{{ user.first_name | upcase }}",  # another filter
    "{% if user.data.vip %}VIP{% endif %} {{ user.first_name }}",  # a tag
    "{{ now | date: '%Y' | size }}",  # not a root of ours
    "plain text, no outputs",
    "{{- user.first_name -}} ,  {{ context.campaign_id }}",
    "{{ user.first_name | default: 'x', allow_false: true }}",
]


@pytest.mark.parametrize("source", PLAIN)
@pytest.mark.parametrize("env", [_PLAIN, _HTML], ids=["plain", "html"])
def test_fast_path_renders_what_liquid_renders(source: str, env: Any) -> None:
    template = env.from_string(source)
    quick = fast_field(template)
    for roots in ROOTS:
        expected = template.render(**roots)
        if quick is None:
            continue
        got = quick.render(roots)
        if got is not None:  # None: it hands the field back to python-liquid
            assert got == expected, (source, roots)


def test_plain_fields_take_the_fast_path_and_others_do_not() -> None:
    assert fast_field(_PLAIN.from_string("Hi {{ user.first_name | default: 'x' }}")) is not None
    assert fast_field(_HTML.from_string("<p>{{ user.data.code }}</p>")) is not None
    assert fast_field(_PLAIN.from_string("{{ user.first_name | upcase }}")) is None
    assert fast_field(_PLAIN.from_string("{% if x %}y{% endif %}")) is None
    assert fast_field(_PLAIN.from_string("{{ user.tags.size }}")) is None
    assert fast_field(_PLAIN.from_string("{{ user.tags[0] }}")) is None
    # A value on the way that is not a dict: python-liquid decides.
    quick = fast_field(_PLAIN.from_string("{{ user.first_name }}"))
    assert quick is not None
    assert quick.render({"user": ["x"]}) is None
    assert quick.render({"other": {}}) is None


def test_html_fields_stay_escaped_through_the_fast_path() -> None:
    compiled = compile_template(
        "email",
        {
            "from": {"address": "shop@example.com"},
            "subject": "Hi {{ user.first_name }}",
            "html": "<p>Hi {{ user.first_name }}</p>",
        },
        None,
    )
    assert set(compiled.fast) >= {"subject", "html"}
    fields = compiled.render_fields({"user": {"first_name": "<b>&</b>"}})
    assert fields["html"] == "<p>Hi &lt;b&gt;&amp;&lt;/b&gt;</p>"
    assert fields["subject"] == "Hi <b>&</b>"


def test_output_beyond_the_limit_goes_to_liquid_which_refuses_it() -> None:
    from tidings.messaging.templates import RenderError

    compiled = compile_template("text", {"text": "{{ user.data.big }}{{ user.data.big }}"}, None)
    assert "text" in compiled.fast
    big = "x" * 600_000  # two of them pass the 1,000,000-character limit
    with pytest.raises(RenderError, match="template_error"):
        compiled.render_fields({"user": {"data": {"big": big}}})
