"""Reading member CSVs: columns, row numbers, and what makes a file or a row unusable."""

from __future__ import annotations

import pytest

from tidings.domain.errors import InvalidRequest
from tidings.domain.membership import MAX_REPORTED_ROWS, MemberRow, Tally, read_member_csv


def _read(text: bytes) -> tuple[str, list[tuple[int, str | None]]]:
    parsed = read_member_csv(text.splitlines(keepends=True))
    return parsed.kind, [(r.row, r.value) for r in parsed.rows]


def test_rows_are_numbered_as_a_spreadsheet_shows_them() -> None:
    text = b'note,external_id\n"two\nlines",a\n\n,b\n'
    assert _read(text) == ("external_id", [(2, "a"), (4, "b")])


def test_external_id_wins_over_email_and_header_case_is_ignored() -> None:
    assert _read(b"EMAIL, External_Id \nx@example.com,u1\n") == ("external_id", [(2, "u1")])
    assert _read(b"Email\nSam@EXAMPLE.com\n") == ("email", [(2, "Sam@example.com")])


@pytest.mark.parametrize(
    ("text", "param"),
    [(b"", "body"), (b"id\n1\n", "row 1"), (b'external_id\n"a\n', "row 2")],
)
def test_a_file_without_the_column_or_with_broken_quoting_is_refused(
    text: bytes, param: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        _read(text)
    assert caught.value.param == param


def test_a_tally_of_many_chunks_counts_everything_and_lists_the_first_rows() -> None:
    total = Tally()
    for chunk in range(3):
        part = Tally(changed=1)
        for row in range(MAX_REPORTED_ROWS):
            part.missing(chunk * 1000 + row)
        part.bad(MemberRow(chunk, None, None))
        total.merge(part)
    assert (total.changed, total.not_found, total.invalid) == (3, 3 * MAX_REPORTED_ROWS, 3)
    assert total.not_found_rows == list(range(MAX_REPORTED_ROWS))
    assert [r.row for r in total.invalid_rows] == [0, 1, 2]
