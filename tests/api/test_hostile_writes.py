"""Generated hostile input through every write route, then every read must still answer.

For each example hypothesis draws one external id (sometimes one no URL can name), one
JSON value (deep, wide, odd numbers, odd strings) and one timestamp (calendar edges,
offsets, fractions, garbage), and sends them through every write route: the client API
(events, identify, alias, devices, PATCH users, users/batch), the Segment API (track,
identify, group, batch with a context, skew-corrected timestamps) and list membership.
Each write answers 2xx, or 4xx in the problem envelope: never 5xx. Once the worker has
applied everything, every read of that user, its list and the project answers 2xx (a
user no write was accepted for answers 404: nothing of it was stored). A value that
cannot be stored and read back would stall the worker (the drain fails) or fail a read.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Project
from tidings.api.app import TidingsApp
from tidings.bootstrap import Services

EXAMPLES = 30


@dataclass(frozen=True)
class Deep:
    """A value nested ``depth`` levels (rendered as text: no encoder would recurse so)."""

    depth: int
    kind: str


def dumps(value: Any) -> str:
    if isinstance(value, Deep):
        if value.kind == "array":
            return "[" * value.depth + "1" + "]" * value.depth
        return '{"a":' * value.depth + "1" + "}" * value.depth
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    return json.dumps(value)


odd_text = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ["", " ", "\x00", "a\x00b", "/", "a/b", ".", "..", "%2F", "é" * 300, "x" * 256, "\u202e"]
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([1e308, -1e-308, 5e-324, 2**63, -(2**63) - 1, 0.1])
    | odd_text
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner, max_size=4),
    max_leaves=20,
)
deep = st.builds(
    Deep,
    st.sampled_from([30, 31, 32, 33, 40, 300, 950, 999, 3000]),
    st.sampled_from(["array", "object"]),
)
wide = st.integers(min_value=0, max_value=3000).map(lambda n: {f"k{i}": i for i in range(n)})
objects = (
    st.dictionaries(odd_text, json_values | deep, max_size=5)
    | wide
    | deep.filter(lambda d: d.kind == "object")
)

edges = st.sampled_from(
    [
        "0001-01-01T00:00:00",
        "0001-01-01T00:00:00+01:00",
        "0001-01-01T00:59:59-01:00",
        "0001-01-01T00:00:00.0000001Z",
        "9999-12-31T23:59:59.999999",
        "9999-12-31T23:59:59.9999999Z",
        "9999-12-31T23:00:00-01:00",
        "9999-12-31T23:59:59+00:00",
        "9999-12-31",
        "2026-02-30T00:00:00Z",
        "2026-04-28T10:00:00+24:00",
        "not a time",
        "",
    ]
)
offsets = st.integers(min_value=-1439, max_value=1439).map(
    lambda m: f"{'+' if m >= 0 else '-'}{abs(m) // 60:02d}:{abs(m) % 60:02d}"
)
near_edge_times = st.builds(
    lambda moment, offset: moment.isoformat() + offset,
    st.datetimes(min_value=__import__("datetime").datetime(1, 1, 1)).filter(
        lambda d: d.year in (1, 9999)
    )
    | st.datetimes(),
    offsets | st.just(""),
)
timestamps = edges | near_edge_times | odd_text
external_ids = st.integers(min_value=0, max_value=10**9).map(lambda n: f"u_{n}") | odd_text


async def _drained(services: Services, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while services.log.pending() > 0:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the worker did not apply {services.log.pending()} accepted entries: "
                "something was accepted that cannot be stored"
            )
        if services.consumer is not None:
            services.consumer.wake.set()
        await asyncio.sleep(0.01)


def _check_answer(response: Any, what: str) -> None:
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/problem+json"), what
        body = response.json()
        assert body["status"] == "error" and body["request_id"], what


def _writes(
    project: Project, list_id: int, external_id: Any, value: Any, when: Any
) -> list[tuple[str, str, str, str]]:
    """(method, path, key, body text) of every write route for one example."""
    ext = dumps(external_id)
    val = dumps(value)
    ts = dumps(when)
    pk, sk = project.pk, project.sk
    return [
        (
            "POST",
            "/api/client/events",
            pk,
            f'[{{"name":"E","external_id":{ext},"data":{val},"created_at":{ts},'
            f'"user":{{"data":{val}}}}}]',
        ),
        ("POST", "/api/client/identify", pk, f'{{"external_id":{ext},"data":{val}}}'),
        ("POST", "/api/client/alias", pk, f'{{"anonymous_id":"anon_h","external_id":{ext}}}'),
        (
            "POST",
            "/api/client/devices",
            pk,
            f'{{"external_id":{ext},"device_id":{ext},"os":{ext},"model":"m",'
            f'"app_build":"1","app_version":{ext},"token":{ext}}}',
        ),
        ("PATCH", "/api/client/users", sk, f'[{{"external_id":{ext},"data":{val}}}]'),
        ("POST", "/api/client/users/batch", sk, f'[{{"external_id":{ext},"data":{val}}}]'),
        (
            "POST",
            "/v1/track",
            pk,
            f'{{"userId":{ext},"event":"T","properties":{val},"timestamp":{ts},'
            f'"sentAt":"0001-01-01T00:00:00Z","context":{val}}}',
        ),
        (
            "POST",
            "/v1/track",
            pk,
            f'{{"userId":{ext},"event":"T","originalTimestamp":{ts},'
            f'"sentAt":"9999-12-31T23:59:59Z"}}',
        ),
        ("POST", "/v1/identify", pk, f'{{"userId":{ext},"traits":{val}}}'),
        ("POST", "/v1/group", pk, f'{{"userId":{ext},"groupId":{ext},"traits":{val}}}'),
        (
            "POST",
            "/v1/batch",
            pk,
            f'{{"batch":[{{"type":"page","userId":{ext},"name":{ext},"properties":{val}}}],'
            f'"context":{val},"sentAt":{ts}}}',
        ),
        ("POST", f"/api/client/lists/{list_id}/users", sk, f'{{"external_ids":[{ext}]}}'),
    ]


def _allowed(path: str, external_id: Any, accepted: bool) -> set[int]:
    """The statuses a read may answer after the example's writes."""
    if "%00" in path:
        return {400}  # no URL may hold NUL
    if path.startswith("/api/client/users/"):
        if accepted:
            return {200}
        return {404}  # nothing was stored for it (or no URL can name it)
    return {200}


def _basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


async def _run_example(
    app: TidingsApp,
    services: Services,
    project: Project,
    list_id: int,
    external_id: str,
    value: Any,
    when: Any,
) -> None:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://tidings.test") as client:
        accepted = False
        for method, path, key, body in _writes(project, list_id, external_id, value, when):
            auth = _basic(key) if path.startswith("/v1") else f"Bearer {key}"
            response = await client.request(
                method,
                path,
                content=body.encode(),
                headers={"Authorization": auth, "Content-Type": "application/json"},
            )
            _check_answer(response, f"{method} {path}")
            if response.status_code < 300 and "lists" not in path:
                accepted = (
                    accepted
                    or path != "/api/client/users/batch"
                    or all("error" not in r for r in response.json()["results"])
                )
        await _drained(services)
        sk = {"Authorization": f"Bearer {project.sk}"}
        reads = ["/api/client/users", "/api/client/schema", f"/api/client/lists/{list_id}/users"]
        reads += ["/api/client/lists", f"/api/client/lists/{list_id}"]
        if external_id not in ("", ".", "..") and "/" not in external_id:  # else no URL names it
            user = f"/api/client/users/{quote(external_id, safe='')}"
            reads += [user, f"{user}/events"]
            reads.append(f"/api/client/users?q={quote(external_id[:255], safe='')}")
        for path in reads:
            response = await client.get(path, headers=sk)
            _check_answer(response, f"GET {path}")
            assert response.status_code in _allowed(path, external_id, accepted), (
                f"GET {path}: {response.status_code} {response.text[:300]}"
            )


def test_generated_writes_never_break_reads(
    app: TidingsApp, services: Services, project: Project
) -> None:
    sk = {"Authorization": f"Bearer {project.sk}"}

    async def make_list() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.post(
                "/api/client/lists", json={"name": "h", "type": "static"}, headers=sk
            )
            assert response.status_code == 201, response.text
            return int(response.json()["id"])

    list_id = asyncio.run(make_list())

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(external_id=external_ids, value=objects, when=timestamps)
    def example(external_id: str, value: Any, when: Any) -> None:
        asyncio.run(_run_example(app, services, project, list_id, external_id, value, when))

    example()
