"""A call decided without I/O, and the decisions around sending it.

An ``Op`` is what a public call sends and how its answer is read; ``Pages`` is cursor paging;
``Attempts`` decides, after each attempt, whether to wait and retry or to raise. ``Client``
performs all of this blocking, ``AsyncClient`` awaited: the logic is written once, here and
in ``_calls``, and the clients only do the I/O.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import httpx

from ._exceptions import TidingsError
from ._http import connection_error, error_from_response
from ._reporting import EventPage
from ._retry import RetryPolicy, retry_after_of

__all__ = [
    "Attempts",
    "Call",
    "Op",
    "Pages",
    "Request",
    "Track",
    "as_method",
    "named_methods",
    "read_json",
    "result_of",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)


@dataclass(frozen=True, slots=True)
class Call:
    """One request, built once so that every retry sends identical bytes."""

    method: str
    path: str
    content: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


class Op(Protocol[T_co]):
    """One public call: the request it sends, and how its successful answer is read."""

    @property
    def call(self) -> Call: ...

    def read(self, response: httpx.Response) -> T_co: ...


@dataclass(frozen=True, slots=True)
class Request(Generic[T]):
    """An ``Op`` from its request and a reader of the answer."""

    call: Call
    reader: Callable[[httpx.Response], T]

    def read(self, response: httpx.Response) -> T:
        return self.reader(response)


@dataclass(frozen=True, slots=True)
class Track:
    """``track``'s op: one event, which the batching client queues rather than sends.

    Light to make, as ``BatchingClient.track`` makes one per event on the host's thread.
    """

    message_id: str
    event: bytes

    @property
    def call(self) -> Call:
        # ``POST /events`` takes an array of events: here this one alone.
        return Call("POST", "/events", b"[" + self.event + b"]")

    def read(self, response: httpx.Response) -> str:
        return self.message_id


@dataclass(frozen=True, slots=True)
class Pages:
    """Cursor paging: each page's op from the cursor the page before it handed back."""

    page: Callable[[str | None], Op[EventPage]]

    def first(self) -> Op[EventPage]:
        return self.page(None)

    def after(self, page: EventPage) -> Op[EventPage] | None:
        """The next page's op; None after the last page."""
        return self.page(page.next_cursor) if page.next_cursor else None


class Attempts:
    """The retry decisions of one call, attempt after attempt."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._retries = 0

    def outcome(self, answer: httpx.Response | httpx.RequestError) -> httpx.Response | float:
        """The answer when it is a success; else seconds to wait before trying again.

        Raises the ``TidingsError`` of the answer when the policy gives up on it.
        """
        error: TidingsError
        if isinstance(answer, httpx.Response):
            if answer.is_success:
                return answer
            error = error_from_response(answer)
        else:
            error = connection_error(answer)
        if not self._policy.should_retry(self._retries, error):
            raise error
        delay = self._policy.delay(self._retries, retry_after_of(error))
        self._retries += 1
        return delay


def read_json(response: httpx.Response, call: str = "") -> Any:
    """The answer's JSON body; a ``TidingsError`` (naming ``call``, if given) when it is not."""
    try:
        return response.json()
    except ValueError as exc:
        named = f" {call}" if call else ""
        raise TidingsError(
            f"the server answered{named} with a body that is not JSON",
            status=response.status_code,
            request_id=response.headers.get("x-request-id"),
        ) from exc


# -- methods built from the calls -------------------------------------------------------------


def as_method(method: F, like: Callable[..., Any], returns: str | None = None) -> F:
    """Give ``method`` (``self, /, *args, **kwargs``) the name, parameters and docstring (unless
    it has one) of ``like``, whose first parameter (the client, or ``self``) reads as ``self``,
    and the return annotation ``returns`` (default: ``like``'s): what ``help()`` and
    ``inspect.signature`` show."""
    signature = inspect.signature(like)
    returns = signature.return_annotation if returns is None else returns
    _, *parameters = signature.parameters.values()
    self = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    method.__name__ = method.__qualname__ = like.__name__
    method.__doc__ = method.__doc__ or like.__doc__
    method.__annotations__ = {
        **{p.name: p.annotation for p in parameters if p.annotation is not p.empty},
        "return": returns,
    }
    method.__dict__["__signature__"] = signature.replace(
        parameters=[self, *parameters], return_annotation=returns
    )
    return method


def result_of(op: Callable[..., Any]) -> str:
    """The annotation of what performing ``op``'s return gives: ``str`` for ``Op[str]``."""
    annotation = str(inspect.signature(op).return_annotation)
    return "str" if annotation == "Track" else annotation.removeprefix("Op[").removesuffix("]")


def named_methods(cls: C) -> C:
    """Class decorator: the methods built by ``as_method`` read as the class's own
    (``Client.track``), in reprs and for documentation tools."""
    for name, value in vars(cls).items():
        if inspect.isfunction(value) and "__signature__" in vars(value):
            value.__qualname__ = f"{cls.__qualname__}.{name}"
            value.__module__ = cls.__module__
    return cls
