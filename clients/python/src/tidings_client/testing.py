"""Test your code without a server: a transport that answers like Tidings and records.

    from tidings_client import Client
    from tidings_client.testing import RecordingTransport

    transport = RecordingTransport()
    client = Client("sk_test", transport=transport)
    client.track("Order placed", {"total": 12}, external_id="u_1")
    assert transport.events[0]["name"] == "Order placed"

It works with ``Client``, ``AsyncClient`` and ``BatchingClient`` (call ``flush()`` first).
Script failures with ``fail_next(...)`` or pass a ``handler`` that returns a response (or
``None`` for the default answer).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

__all__ = ["RecordingTransport", "problem_response"]

Handler = Callable[[httpx.Request], "httpx.Response | None"]


def problem_response(
    status: int,
    code: str,
    message: str,
    *,
    errors: Sequence[Mapping[str, Any]] | None = None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """A non-2xx answer shaped like the Tidings server's (``application/problem+json``)."""
    request_id = f"req_{uuid.uuid4().hex.upper()[:26]}"
    body: dict[str, Any] = {
        "status": "error",
        "code": code,
        "message": message,
        "error": message,
        "request_id": request_id,
    }
    if param is not None:
        body["param"] = param
    if errors is not None:
        body["errors"] = [dict(e) for e in errors]
    return httpx.Response(
        status,
        content=json.dumps(body).encode(),
        headers={
            "Content-Type": "application/problem+json",
            "X-Request-Id": request_id,
            **dict(headers or {}),
        },
    )


class RecordingTransport(httpx.MockTransport):
    """An ``httpx`` transport that records every request and answers like a healthy server.

    Default answers: 204 for ``/events``, ``/identify``, ``/alias``, ``/devices`` and
    ``PATCH /users``; 200 with one result per item for ``/users/batch``; 200
    ``{"success": true}`` for triggers; 404 otherwise. Thread-safe, sync and async.
    """

    def __init__(self, handler: Handler | None = None) -> None:
        self._lock = threading.Lock()
        self._requests: list[httpx.Request] = []
        self._script: deque[httpx.Response | Exception] = deque()
        self._user_handler = handler
        super().__init__(self._handle)

    # -- scripting ------------------------------------------------------------------------

    def fail_next(self, *outcomes: httpx.Response | Exception | int) -> None:
        """Answer the next requests with these, in order: a response, a status, or an
        exception to raise (e.g. ``httpx.ConnectError("refused")``)."""
        with self._lock:
            for outcome in outcomes:
                if isinstance(outcome, int):
                    outcome = problem_response(outcome, _CODES.get(outcome, "error"), "scripted")
                self._script.append(outcome)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        request.read()
        with self._lock:
            self._requests.append(request)
            scripted = self._script.popleft() if self._script else None
        if isinstance(scripted, Exception):
            raise scripted
        if scripted is not None:
            return scripted
        if self._user_handler is not None:
            response = self._user_handler(request)
            if response is not None:
                return response
        return _default_answer(request)

    # -- reading what was sent ------------------------------------------------------------

    @property
    def requests(self) -> list[httpx.Request]:
        """Every request received, in order (failed attempts included)."""
        with self._lock:
            return list(self._requests)

    def bodies(self, path: str | None = None) -> list[Any]:
        """Decoded JSON bodies, of requests whose path ends with ``path`` if given."""
        return [
            json.loads(r.content) if r.content else None
            for r in self.requests
            if path is None or r.url.path.endswith(path)
        ]

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event sent to ``POST /events``, in order; repeats when a batch was retried."""
        return [event for body in self.bodies("/events") for event in body]

    def clear(self) -> None:
        """Forget the recorded requests and scripted answers."""
        with self._lock:
            self._requests.clear()
            self._script.clear()


_CODES = {
    400: "parameter_invalid_format",
    401: "authentication_required",
    403: "permission_denied",
    404: "resource_missing",
    408: "request_timeout",
    409: "state_conflict",
    413: "payload_too_large",
    422: "validation_failed",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}


def _default_answer(request: httpx.Request) -> httpx.Response:
    path = request.url.path
    ok = {"X-Request-Id": f"req_{uuid.uuid4().hex.upper()[:26]}"}
    if request.method == "POST" and path.endswith("/users/batch"):
        items = json.loads(request.content)
        results = [
            {
                "index": i,
                "external_id": item.get("external_id"),
                "anonymous_id": item.get("anonymous_id"),
                "user": item,
            }
            for i, item in enumerate(items)
        ]
        body = {"results": results, "succeeded": len(results), "failed": 0}
        return httpx.Response(200, json=body, headers=ok)
    if request.method == "POST" and path.endswith("/trigger"):
        return httpx.Response(200, json={"success": True}, headers=ok)
    if (request.method, path.rsplit("/", 1)[-1]) in {
        ("POST", "events"),
        ("POST", "identify"),
        ("POST", "alias"),
        ("POST", "devices"),
        ("PATCH", "users"),
    }:
        return httpx.Response(204, headers=ok)
    return problem_response(404, "resource_missing", f"no route for {request.method} {path}")
