"""The cursor codec every paged route uses: what it made comes back; nothing else passes."""

from __future__ import annotations

import base64
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.domain.errors import InvalidRequest
from tidings.store import cursors

SHAPE = tuple[Literal["n", "p"], int, str]

positions = st.tuples(
    st.sampled_from(["n", "p"]),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=255),
)


@given(positions)
def test_a_cursor_it_made_decodes_to_its_position(position: tuple[str, int, str]) -> None:
    assert cursors.decode(cursors.encode(*position), SHAPE) == position


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


forged = (
    st.text(max_size=600)
    | st.binary(max_size=200).map(_b64)
    | st.sampled_from(
        [
            _b64(b'["n", 99999999999999999999999, "a"]'),
            _b64(b'["n", -99999999999999999999999, "a"]'),
            _b64(b'["n", 1, "a\\u0000"]'),
            _b64(b'["n", 1, "\\ud800"]'),
            _b64(b'["x", 1, "a"]'),
            _b64(b'["n", 1.5, "a"]'),
            _b64(b'["n", 1, "' + b"a" * 300 + b'"]'),
            _b64(b"[" * 5000 + b"]" * 5000),
            _b64(b'{"n": 1}'),
            "A" * 5000,
            "====",
        ]
    )
)


@given(forged)
def test_anything_else_is_a_400_about_the_cursor(text: str) -> None:
    try:
        value = cursors.decode(text, SHAPE)
    except InvalidRequest as error:
        assert error.param == "cursor"
        assert error.code == "parameter_invalid_format"
        return
    # It decoded: then it is a position encode() could have made.
    assert cursors.decode(cursors.encode(*value), SHAPE) == value
    assert -(2**63) <= value[1] < 2**63 and "\x00" not in value[2]


def test_a_forged_cursor_names_the_parameter() -> None:
    with pytest.raises(InvalidRequest, match="cursor"):
        cursors.decode("not base64 !", SHAPE)
