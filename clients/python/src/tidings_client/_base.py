"""The request-building half of the clients, shared by ``Client`` and ``AsyncClient``.

Each public call becomes a ``Call`` (method, path, body bytes, extra headers); the sync and
async clients differ only in how they send it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from . import _payloads as p
from ._exceptions import TidingsError
from ._http import DEFAULT_TIMEOUT, headers_for, normalize_base_url
from ._models import UpsertResult
from ._reporting import check_groups, events_query
from ._retry import RetryPolicy

__all__ = ["Call", "ClientBase"]


@dataclass(frozen=True, slots=True)
class Call:
    """One request, built once so that every retry sends identical bytes."""

    method: str
    path: str
    content: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


def _segment(value: str | int) -> str:
    text = str(value)
    if not text:
        raise ValueError("an id in the URL path must not be empty")
    return quote(text, safe="")


class ClientBase:
    """Options and request building common to every client."""

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        convert_keys: bool = True,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._headers = headers_for(api_key, headers)
        self._base_url = normalize_base_url(base_url)
        self._timeout = timeout
        self._convert = convert_keys
        self._retry = retry or RetryPolicy(max_retries=0)

    @property
    def base_url(self) -> str:
        """The ``…/api/client`` URL requests are sent under."""
        return self._base_url

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self._base_url!r})"

    # -- request building ---------------------------------------------------------------

    def _idempotency(self, key: str | None) -> dict[str, str]:
        # Retrying a trigger without a key could send a message twice: mint one per call.
        if key is None and self._retry.max_retries != 0:
            key = uuid.uuid4().hex
        return {"Idempotency-Key": key} if key else {}

    def _track_call(
        self,
        event: str,
        properties: Mapping[str, Any] | None,
        *,
        external_id: str | None,
        anonymous_id: str | None,
        user: Mapping[str, Any] | None,
        created_at: dt.datetime | str | None,
        message_id: str | None,
    ) -> tuple[Call, str]:
        body = p.track_body(
            event,
            properties,
            external_id=external_id,
            anonymous_id=anonymous_id,
            user=user,
            created_at=created_at,
            message_id=message_id,
            convert=self._convert,
        )
        return Call("POST", "/events", p.dumps([body])), str(body["message_id"])

    def _identify_call(self, **kwargs: Any) -> Call:
        return Call("POST", "/identify", p.dumps(p.identify_body(convert=self._convert, **kwargs)))

    def _alias_call(self, *, anonymous_id: str, external_id: str) -> Call:
        body = p.alias_body(anonymous_id=anonymous_id, external_id=external_id)
        return Call("POST", "/alias", p.dumps(body))

    def _device_call(self, **kwargs: Any) -> Call:
        return Call("POST", "/devices", p.dumps(p.device_body(**kwargs)))

    def _users_call(self, users: Sequence[Mapping[str, Any]], idempotency_key: str | None) -> Call:
        body = p.users_body(users, convert=self._convert)
        return Call("POST", "/users/batch", p.dumps(body), self._idempotency(idempotency_key))

    def _trigger_call(
        self, kind: str, target_id: str | int, idempotency_key: str | None, **kwargs: Any
    ) -> Call:
        body = p.trigger_body(convert=self._convert, **kwargs)
        path = f"/{kind}/{_segment(target_id)}/trigger"
        return Call("POST", path, p.dumps(body), self._idempotency(idempotency_key))

    def _events_call(
        self,
        start: dt.datetime | str,
        end: dt.datetime | str,
        *,
        event_names: Sequence[str] = (),
        external_ids: Sequence[str] = (),
        anonymous_ids: Sequence[str] = (),
        campaign_ids: Sequence[int] = (),
        include_payload: bool = False,
        direction: str = "desc",
        limit: int = 100,
        cursor: str | None = None,
    ) -> Call:
        if direction not in ("asc", "desc"):
            raise ValueError("direction must be 'asc' or 'desc'")
        if not 1 <= limit <= 100:
            raise ValueError("limit must be between 1 and 100")
        extra = [
            ("include_payload", "true" if include_payload else "false"),
            ("direction", direction),
            ("limit", str(limit)),
        ]
        if cursor:
            extra.append(("cursor", cursor))
        query = events_query(
            start,
            end,
            event_names=event_names,
            external_ids=external_ids,
            anonymous_ids=anonymous_ids,
            campaign_ids=campaign_ids,
            extra=extra,
        )
        return Call("GET", f"/events?{query}", b"")

    def _aggregations_call(
        self,
        start: dt.datetime | str,
        end: dt.datetime | str,
        *,
        group_by: Sequence[str] = (),
        event_names: Sequence[str] = (),
        external_ids: Sequence[str] = (),
        anonymous_ids: Sequence[str] = (),
        campaign_ids: Sequence[int] = (),
        limit: int = 1000,
    ) -> Call:
        query = events_query(
            start,
            end,
            event_names=event_names,
            external_ids=external_ids,
            anonymous_ids=anonymous_ids,
            campaign_ids=campaign_ids,
            extra=[*check_groups(group_by), ("limit", str(limit))],
        )
        return Call("GET", f"/events/aggregations?{query}", b"")

    def _build(self, call: Call) -> tuple[str, str, dict[str, str], bytes]:
        headers = {**self._headers, **call.headers}
        return call.method, self._base_url + call.path, headers, call.content

    # -- answers --------------------------------------------------------------------------

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise TidingsError(
                "the server answered with a body that is not JSON",
                status=response.status_code,
                request_id=response.headers.get("x-request-id"),
            ) from exc

    @staticmethod
    def _upsert_result(response: httpx.Response) -> UpsertResult:
        try:
            body = response.json()
        except ValueError as exc:
            raise TidingsError(
                "the server answered upsert_users with a body that is not JSON",
                status=response.status_code,
                request_id=response.headers.get("x-request-id"),
            ) from exc
        return UpsertResult.from_json(body)
