"""``Client``: one blocking HTTP request per call; errors raise."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

import httpx

from . import _calls as calls
from ._base import ClientBase
from ._ops import Attempts, Op, Pages, as_method, named_methods, result_of
from ._reporting import Event, EventPage

__all__ = ["Client"]

P = ParamSpec("P")
T = TypeVar("T")
Spec = Callable[Concatenate[ClientBase[Any, Any], P], T]


def _blocking(spec: Spec[P, Op[T]]) -> Callable[Concatenate[Client, P], T]:
    """The blocking method performing the op ``spec`` returns."""

    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._perform(spec(self, *args, **kwargs))

    return as_method(method, spec, result_of(spec))


def _blocking_pages(spec: Spec[P, Pages]) -> Callable[Concatenate[Client, P], Iterator[Event]]:
    """The generator method fetching page after page as it is iterated."""

    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> Iterator[Event]:
        pages = spec(self, *args, **kwargs)
        op: Op[EventPage] | None = pages.first()
        while op is not None:
            page = self._perform(op)
            yield from page.results
            op = pages.after(page)

    return as_method(method, spec, "Iterator[Event]")


@named_methods
class Client(ClientBase[httpx.BaseTransport, httpx.Client]):
    """A synchronous client for the Tidings client API (``/api/client``).

    Each call sends one request and returns when the server has answered; a failure raises a
    ``TidingsError`` subclass. Nothing is retried unless ``retry`` is given, e.g.
    ``Client(key, retry=RetryPolicy(max_retries=3))``; retries resend the same bytes, so an
    event is stored once. Thread-safe; usable as a context manager; after ``os.fork()`` the
    child opens its own connections.

    Args:
        api_key: a ``pk_…`` publishable key (track, identify, alias, devices) or a ``sk_…``
            secret key (everything).
        base_url: the server root, e.g. ``https://tidings.example.com``; defaults to the
            ``TIDINGS_BASE_URL`` environment variable, else ``http://localhost:8000``.
        timeout: seconds (or an ``httpx.Timeout``) to wait for each request.
        convert_keys: convert camelCase keys of properties, traits and users to snake_case
            the way Spotzee's JS SDK does (``lifetimeValue`` → ``lifetime_value``).
        retry: a ``RetryPolicy``; the default retries nothing.
        headers: extra headers for every request.
        transport: an ``httpx.BaseTransport``, e.g. ``tidings_client.testing.RecordingTransport``.
    """

    def _new_http(self) -> httpx.Client:
        return httpx.Client(transport=self._transport, timeout=self._timeout)

    @staticmethod
    def _sleep(seconds: float) -> None:
        time.sleep(seconds)

    def close(self) -> None:
        """Close the connection pool. The client cannot be used afterwards."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _perform(self, op: Op[T]) -> T:
        method, url, headers, content = self._build(op.call)
        attempts = Attempts(self._retry)
        while True:
            answer: httpx.Response | httpx.RequestError
            try:
                answer = self._http.request(method, url, headers=headers, content=content)
            except httpx.RequestError as exc:
                answer = exc
            outcome = attempts.outcome(answer)
            if isinstance(outcome, httpx.Response):
                return op.read(outcome)
            self._sleep(outcome)

    track = _blocking(calls.track)
    identify = _blocking(calls.identify)
    alias = _blocking(calls.alias)
    register_device = _blocking(calls.register_device)
    upsert_users = _blocking(calls.upsert_users)
    trigger_campaign = _blocking(calls.trigger_campaign)
    trigger_journey = _blocking(calls.trigger_journey)
    events_page = _blocking(calls.events_page)
    events = _blocking_pages(calls.events)
    aggregations = _blocking(calls.aggregations)
