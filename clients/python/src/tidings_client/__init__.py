"""Python client for Tidings, the self-hosted customer engagement platform.

    from tidings_client import Client

    client = Client("sk_…", base_url="https://tidings.example.com")
    client.identify(external_id="u_42", email="sam@example.com", traits={"plan": "pro"})
    client.track("Order placed", {"total": 129.5}, external_id="u_42")

``BatchingClient`` sends ``track`` in the background (optionally through a durable local
spool); ``AsyncClient`` and ``AsyncBatchingClient`` are their asyncio twins;
``tidings_client.testing`` has a transport for testing without a server. Every error is a
``TidingsError``.
"""

from ._async_batching import AsyncBatchingClient
from ._async_client import AsyncClient
from ._batching import BatchingClient
from ._client import Client
from ._exceptions import (
    APIError,
    AuthenticationError,
    ConflictError,
    FieldError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    TidingsConnectionError,
    TidingsError,
    TidingsTimeoutError,
    ValidationError,
)
from ._keys import snake_case
from ._models import ItemError, UpsertResult, UserResult
from ._queue import Dropped, DropReason
from ._reporting import AggregationRow, Event, EventPage, EventUser
from ._retry import RetryPolicy
from ._version import __version__

__all__ = [
    "APIError",
    "AggregationRow",
    "AsyncBatchingClient",
    "AsyncClient",
    "AuthenticationError",
    "BatchingClient",
    "Client",
    "ConflictError",
    "DropReason",
    "Dropped",
    "Event",
    "EventPage",
    "EventUser",
    "FieldError",
    "ItemError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitedError",
    "RetryPolicy",
    "ServerError",
    "TidingsConnectionError",
    "TidingsError",
    "TidingsTimeoutError",
    "UpsertResult",
    "UserResult",
    "ValidationError",
    "__version__",
    "snake_case",
]

# Public names read as tidings_client.X, as httpx does.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("tidings_client._"):
        _obj.__module__ = "tidings_client"
del _name, _obj
