"""Who to add to or remove from a static list: identifiers read from CSV or JSON, checked.

A CSV names its column in a header row (``external_id`` or ``email``; other columns are
ignored, ``external_id`` wins when both are there). Rows are numbered as a spreadsheet
shows them: the header is row 1, blank rows count. A problem with the file as a whole (no
such column, broken quoting, bytes that are not UTF-8) raises ``InvalidRequest`` naming the
row; a bad value only marks its own row invalid, and the other rows still count.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from tidings.domain import fields
from tidings.domain.errors import FieldError, InvalidRequest

__all__ = [
    "MAX_REPORTED_ROWS",
    "IdKind",
    "MemberCsv",
    "MemberRow",
    "Tally",
    "check_value",
    "read_member_csv",
]

IdKind = Literal["external_id", "email"]
COLUMNS: tuple[IdKind, ...] = ("external_id", "email")
MAX_REPORTED_ROWS = 100  # row numbers listed in a summary; the counts are always complete


@dataclass(frozen=True, slots=True)
class MemberRow:
    """One identifier: ``row`` is its row number (CSV) or index (JSON array); ``value`` is
    normalised, or ``None`` with ``error`` when it is not a usable identifier."""

    row: int
    value: str | None
    error: FieldError | None = None


def check_value(kind: IdKind, raw: str, param: str) -> tuple[str | None, FieldError | None]:
    """The identifier to look up, or the problem with it. Surrounding spaces are ignored;
    emails are normalised as the ingest API stores them (domain in lower case)."""
    value = raw.strip()
    if not value:
        return None, FieldError(param, "parameter_invalid_empty", f"The {kind} is empty.")
    if "\x00" in value:  # no database stores it in text
        return None, FieldError(param, "parameter_invalid_format", "Contains a NUL character.")
    if kind == "email":
        if len(value) > 320:
            return None, FieldError(param, "parameter_invalid_format", "Longer than 320.")
        try:
            return fields.normalise_email(value), None
        except ValueError as exc:
            return None, FieldError(param, "parameter_invalid_format", str(exc))
    if len(value) > fields.MAX_ID_LENGTH:
        message = f"The external_id is longer than {fields.MAX_ID_LENGTH} characters."
        return None, FieldError(param, "parameter_invalid_format", message)
    return value, None


@dataclass(slots=True)
class MemberCsv:
    """A CSV whose header was read; iterate ``rows`` once for the data rows."""

    kind: IdKind
    rows: Iterator[MemberRow]


def _decoded(lines: Iterable[bytes], position: list[int]) -> Iterator[str]:
    """UTF-8 text per line (a byte-order mark at the start is dropped). A newline byte is
    never part of a multi-byte character, so decoding line by line is exact."""
    first = True
    for line in lines:
        if first:
            first = False
            if line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
        try:
            yield line.decode("utf-8")
        except UnicodeDecodeError:
            row = position[0] + 1
            raise InvalidRequest(
                f"Row {row} is not UTF-8 text; save the CSV as UTF-8.",
                param=f"row {row}",
                errors=[FieldError(f"row {row}", "parameter_invalid_format", "Not UTF-8.")],
            ) from None


def _records(lines: Iterable[bytes]) -> Iterator[tuple[int, list[str]]]:
    position = [0]  # rows read so far, for the decoder's error message
    reader = csv.reader(_decoded(lines, position), strict=True)
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            row = position[0] + 1
            raise InvalidRequest(
                f"Row {row} is not valid CSV: {exc}.",
                param=f"row {row}",
                errors=[FieldError(f"row {row}", "parameter_invalid_format", str(exc))],
            ) from None
        position[0] += 1
        yield position[0], record


def read_member_csv(lines: Iterable[bytes]) -> MemberCsv:
    """Read the header from ``lines`` (bytes, line endings kept) and return the rows to come.

    Structural problems raise ``InvalidRequest`` as soon as they are met, also while
    iterating ``rows``: read the rows through once before writing anything.
    """
    records = _records(lines)
    header: list[str] | None = None
    for _, record in records:
        if record:
            header = record
            break
    if header is None:
        raise InvalidRequest(
            "The CSV is empty: its first row must name the column, external_id or email.",
            code="parameter_missing",
            param="body",
        )
    names = [name.strip().lower() for name in header]
    kind = next((c for c in COLUMNS if c in names), None)
    if kind is None:
        shown = ", ".join(repr(n) for n in header[:10])
        raise InvalidRequest(
            f"The header row names no external_id or email column (found {shown}).",
            code="parameter_missing",
            param="row 1",
            errors=[FieldError("row 1", "parameter_missing", "No external_id or email column.")],
        )
    column = names.index(kind)
    return MemberCsv(kind=kind, rows=_rows(records, kind, column))


def _rows(
    records: Iterator[tuple[int, list[str]]], kind: IdKind, column: int
) -> Iterator[MemberRow]:
    for row, record in records:
        if not record or all(not cell.strip() for cell in record):
            continue  # a blank row: nothing asked
        param = f"row {row}"
        if column >= len(record):
            missing = FieldError(param, "parameter_missing", f"The row has no {kind} value.")
            yield MemberRow(row, None, missing)
            continue
        value, error = check_value(kind, record[column], param)
        yield MemberRow(row, value, error)


@dataclass(slots=True)
class Tally:
    """What a membership change did, row by row; ``merge`` adds up chunks of one file."""

    changed: int = 0  # added, or removed
    unchanged: int = 0  # already a member, or not a member
    not_found: int = 0
    invalid: int = 0
    not_found_rows: list[int] = field(default_factory=list)
    invalid_rows: list[MemberRow] = field(default_factory=list)

    def missing(self, row: int) -> None:
        self.not_found += 1
        if len(self.not_found_rows) < MAX_REPORTED_ROWS:
            self.not_found_rows.append(row)

    def bad(self, row: MemberRow) -> None:
        self.invalid += 1
        if len(self.invalid_rows) < MAX_REPORTED_ROWS:
            self.invalid_rows.append(row)

    def summary(self, *, added: bool) -> dict[str, Any]:
        """The counts as the API and ``tidings import`` report them."""
        changed, unchanged = ("added", "already_member") if added else ("removed", "not_member")
        return {
            changed: self.changed,
            unchanged: self.unchanged,
            "not_found": self.not_found,
            "invalid": self.invalid,
            "not_found_rows": list(self.not_found_rows),
            "invalid_rows": [
                {"row": r.row, "code": r.error.code, "message": r.error.message}
                for r in self.invalid_rows
                if r.error is not None
            ],
        }

    def merge(self, other: Tally) -> None:
        self.changed += other.changed
        self.unchanged += other.unchanged
        for number in other.not_found_rows:
            self.missing(number)
        self.not_found += other.not_found - len(other.not_found_rows)
        for row in other.invalid_rows:
            self.bad(row)
        self.invalid += other.invalid - len(other.invalid_rows)
