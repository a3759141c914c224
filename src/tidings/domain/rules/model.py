"""The rule tree as immutable values: what ``parse_rule`` returns and both evaluators read.

Three kinds of node:

* ``Condition``: a leaf that tests one value of the profile (group ``user``) or of an event
  (group ``event``, only inside an ``EventRule``).
* ``Wrapper``: combines its children with ``and``, ``or``, ``none`` or ``xor``.
* ``EventRule``: "the profile has events named N (whose data pass the children), optionally
  counted within a period and compared with a count".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

__all__ = [
    "ARRAY_OPERATORS",
    "BOOLEAN_OPERATORS",
    "COMBINATORS",
    "COUNT_OPERATORS",
    "DATE_OPERATORS",
    "DAY",
    "EVENT_COLUMNS",
    "NUMBER_OPERATORS",
    "OPERATORS",
    "PRESENCE_OPERATORS",
    "PROFILE_COLUMNS",
    "STRING_OPERATORS",
    "UNITS",
    "UNIT_MICROS",
    "AbsoluteDate",
    "Combinator",
    "Condition",
    "CountOperator",
    "DataPath",
    "DateOperand",
    "EventRule",
    "Field",
    "Fixed",
    "Frequency",
    "Operand",
    "Ref",
    "RelativeDate",
    "Rolling",
    "Rule",
    "Scalar",
    "Unit",
    "ValueType",
    "Wrapper",
]

ValueType = Literal["string", "number", "boolean", "date", "array"]
Combinator = Literal["and", "or", "none", "xor"]
CountOperator = Literal["=", "<", "<=", ">", ">="]
Unit = Literal["minute", "hour", "day", "week", "month", "year"]
Scalar: TypeAlias = str | int | float | bool

MINUTE = 60 * 1_000_000
DAY = 24 * 60 * MINUTE
#: Fixed lengths, as Parcelvoy has them: a month is 30 days and a year 365 days.
UNIT_MICROS: dict[str, int] = {
    "minute": MINUTE,
    "hour": 60 * MINUTE,
    "day": DAY,
    "week": 7 * DAY,
    "month": 30 * DAY,
    "year": 365 * DAY,
}
UNITS: tuple[Unit, ...] = ("minute", "hour", "day", "week", "month", "year")

PRESENCE_OPERATORS = ("is set", "is not set")
STRING_OPERATORS = (
    "=",
    "!=",
    "contains",
    "not contain",
    "starts with",
    "not start with",
    "ends with",
    "empty",
    *PRESENCE_OPERATORS,
)
NUMBER_OPERATORS = ("=", "!=", "<", "<=", ">", ">=", *PRESENCE_OPERATORS)
DATE_OPERATORS = ("=", "!=", "<", "<=", ">", ">=", "is same day", *PRESENCE_OPERATORS)
BOOLEAN_OPERATORS = ("=", "!=", *PRESENCE_OPERATORS)
ARRAY_OPERATORS = ("any", "none", "empty", *PRESENCE_OPERATORS)
OPERATORS: dict[str, tuple[str, ...]] = {
    "string": STRING_OPERATORS,
    "number": NUMBER_OPERATORS,
    "boolean": BOOLEAN_OPERATORS,
    "date": DATE_OPERATORS,
    "array": ARRAY_OPERATORS,
}
COMBINATORS: tuple[Combinator, ...] = ("and", "or", "none", "xor")
COUNT_OPERATORS: tuple[CountOperator, ...] = ("=", "<", "<=", ">", ">=")

#: The profile's own columns a user condition may name, with their type.
PROFILE_COLUMNS: dict[str, ValueType] = {
    "external_id": "string",
    "email": "string",
    "phone": "string",
    "timezone": "string",
    "locale": "string",
    "created_at": "date",
}
#: The event's own columns an event condition may name, with their type.
EVENT_COLUMNS: dict[str, ValueType] = {"name": "string", "created_at": "date"}


@dataclass(frozen=True, slots=True)
class Field:
    """A column of the profile or the event (``email``, ``created_at``, ``name``)."""

    name: str


@dataclass(frozen=True, slots=True)
class DataPath:
    """Keys into the JSON ``data`` object: ``("address", "city")`` is ``data.address.city``."""

    keys: tuple[str, ...]

    @property
    def dotted(self) -> str:
        return ".".join(self.keys)


Ref: TypeAlias = Field | DataPath


@dataclass(frozen=True, slots=True)
class AbsoluteDate:
    """An ISO-8601 date or date-time as written, and its instant. A date-only value
    (``2024-05-01``) is midnight UTC at the start of that day."""

    text: str
    micros: int
    date_only: bool


@dataclass(frozen=True, slots=True)
class RelativeDate:
    """``amount`` units from the evaluation's ``now``: negative is in the past
    (``RelativeDate(-30, "day")`` is "30 days ago"), zero is "now"."""

    amount: int
    unit: Unit

    @property
    def offset(self) -> int:
        """Microseconds to add to ``now``."""
        return self.amount * UNIT_MICROS[self.unit]

    @property
    def text(self) -> str:
        """The canonical spelling: ``now``, ``30 days ago``, ``in 2 weeks``."""
        if self.amount == 0:
            return "now"
        n = abs(self.amount)
        unit = self.unit if n == 1 else f"{self.unit}s"
        return f"{n} {unit} ago" if self.amount < 0 else f"in {n} {unit}"


DateOperand: TypeAlias = AbsoluteDate | RelativeDate
Operand: TypeAlias = str | int | float | bool | DateOperand | tuple[Scalar, ...] | None


@dataclass(frozen=True, slots=True)
class Condition:
    """A leaf: ``operator`` applied to the value at ``ref``, against ``operand``.

    ``operand`` is ``None`` for ``is set``, ``is not set`` and ``empty``; a ``str`` for string
    rules, an ``int | float`` for numbers, a ``bool``, a ``DateOperand`` for dates, and a
    non-empty tuple of JSON scalars for array ``any``/``none``. ``path`` is kept as written.
    """

    type: ValueType
    group: Literal["user", "event"]
    path: str
    ref: Ref
    operator: str
    operand: Operand = None
    uuid: str | None = None


@dataclass(frozen=True, slots=True)
class Wrapper:
    """Combines ``children``: ``and`` (all), ``or`` (at least one), ``none`` (no child),
    ``xor`` (exactly one). A wrapper without children is true."""

    operator: Combinator
    children: tuple[Rule, ...]
    group: Literal["user", "parent", "event"] = "parent"
    path: str | None = None
    uuid: str | None = None


@dataclass(frozen=True, slots=True)
class Rolling:
    """The last ``value`` ``unit``s: events with ``now - length < created_at <= now``."""

    unit: Unit
    value: int

    @property
    def length(self) -> int:
        return self.value * UNIT_MICROS[self.unit]


@dataclass(frozen=True, slots=True)
class Fixed:
    """Events with ``start <= created_at <= end`` (and not after ``now``); a date-only
    ``end`` covers that whole day (UTC); without ``end`` the period is open."""

    start: AbsoluteDate
    end: AbsoluteDate | None = None

    @property
    def end_exclusive(self) -> int | None:
        if self.end is None:
            return None
        return self.end.micros + (DAY if self.end.date_only else 1)


@dataclass(frozen=True, slots=True)
class Frequency:
    """How many matching events the period must hold: ``count(events) <operator> count``."""

    period: Rolling | Fixed
    operator: CountOperator
    count: int


@dataclass(frozen=True, slots=True)
class EventRule:
    """The profile's events named ``name`` whose data pass ``children`` (combined with
    ``operator``): at least one ever happened (no ``frequency``), or their number within
    the frequency's period compares with its count. Events dated after ``now`` have not
    happened yet and never count."""

    name: str
    operator: Combinator = "and"
    children: tuple[Rule, ...] = ()
    frequency: Frequency | None = None
    path: str = "name"
    uuid: str | None = None


Rule: TypeAlias = Condition | Wrapper | EventRule
