"""Property-based fuzzing of every operation in the served OpenAPI document (schemathesis).

schemathesis loads ``/openapi.json`` from the in-process ASGI app, generates requests from
it (valid ones, and invalid ones in negative mode) and checks every answer:

- never a 5xx (``not_a_server_error``);
- the status code, the ``Content-Type`` and the body are the ones the document gives for
  that status (``status_code_conformance``, ``content_type_conformance``,
  ``response_schema_conformance``);
- every non-2xx answer is the problem envelope: ``Content-Type: application/problem+json``,
  ``status == "error"``, a ``code``, a ``message`` and ``request_id`` equal to the
  ``X-Request-Id`` header (``problem_envelope`` below).

Each operation is fuzzed once with the project's secret key (role admin) and once with its
public key, in each generation mode, on a fresh database (so DELETE's effects do not matter)
holding one seeded user, whom half of the ``{external_id}`` cases name, in one seeded static
list, which half of the ``{id}`` cases name.
The run is bounded (``MAX_EXAMPLES`` per operation and mode) and derandomized, so CI sees
the same requests every time.

Not fuzzed: ``GET /docs`` and ``GET /openapi.json`` themselves, which the document does not
describe (FastAPI leaves them out of it); ``test_the_fuzzed_operations_are_the_documented_ones``
fails when an operation is added to or removed from the document without updating
``OPERATIONS``.

Besides what the document's schemas generate, paged operations get forged cursors
(oversized numbers, NUL, wrong shapes, deep JSON), ``{external_id}`` gets ids with ``/``,
``..``, 256 characters, and ``{id}`` gets ids past every integer type (issue 18); and
``test_v1_hostile_bodies`` sends /v1 generated deep, wide and odd JSON.

``test_segment_outcomes_match_the_document`` pins a defect the fuzzing found (the /v1 ``200``
schema once matched ``?outcomes=1`` answers twice, breaking its ``oneOf``).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import Project
from tidings.api.app import TidingsApp
from tidings.bootstrap import Services

MAX_EXAMPLES = 25

# schemathesis's negative-mode strategies call `random` inside; nothing to act on here.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)

# Every operation of /openapi.json, as (method, path).
OPERATIONS: list[tuple[str, str]] = [
    ("GET", "/api/health"),
    ("POST", "/api/client/events"),
    ("GET", "/api/client/notifications"),
    ("PUT", "/api/client/notifications/{notification_id}"),
    ("POST", "/api/inbound/sms/{provider_id}"),
    ("POST", "/api/client/identify"),
    ("POST", "/api/client/alias"),
    ("POST", "/api/client/devices"),
    ("PATCH", "/api/client/users"),
    ("POST", "/api/client/users/batch"),
    ("GET", "/api/client/users"),
    ("DELETE", "/api/client/users"),
    ("GET", "/api/client/users/{external_id}"),
    ("DELETE", "/api/client/users/{external_id}"),
    ("GET", "/api/client/users/{external_id}/events"),
    ("GET", "/api/client/schema"),
    ("GET", "/api/client/lists"),
    ("POST", "/api/client/lists"),
    ("GET", "/api/client/lists/{id}"),
    ("PATCH", "/api/client/lists/{id}"),
    ("DELETE", "/api/client/lists/{id}"),
    ("GET", "/api/client/lists/{id}/users"),
    ("POST", "/api/client/lists/{id}/users"),
    ("DELETE", "/api/client/lists/{id}/users"),
    ("GET", "/api/client/journeys"),
    ("POST", "/api/client/journeys"),
    ("GET", "/api/client/journeys/{id}"),
    ("PATCH", "/api/client/journeys/{id}"),
    ("DELETE", "/api/client/journeys/{id}"),
    ("GET", "/api/client/journeys/{id}/steps"),
    ("PUT", "/api/client/journeys/{id}/steps"),
    ("POST", "/api/client/journeys/{id}/trigger"),
    ("GET", "/api/client/journeys/{id}/users/{external_id}"),
    ("POST", "/api/client/journeys/{id}/simulate"),
    ("GET", "/api/client/providers"),
    ("POST", "/api/client/providers"),
    ("GET", "/api/client/providers/{id}"),
    ("PATCH", "/api/client/providers/{id}"),
    ("DELETE", "/api/client/providers/{id}"),
    ("GET", "/api/client/subscriptions"),
    ("POST", "/api/client/subscriptions"),
    ("POST", "/api/client/subscriptions/batch"),
    ("GET", "/api/client/subscriptions/{id}"),
    ("PATCH", "/api/client/subscriptions/{id}"),
    ("PATCH", "/api/client/subscriptions/me"),
    ("GET", "/api/client/users/me"),
    ("GET", "/api/client/users/{external_id}/subscriptions"),
    ("PATCH", "/api/client/users/{external_id}/subscriptions"),
    ("POST", "/api/client/users/{external_id}/sessions"),
    ("GET", "/api/client/campaigns"),
    ("POST", "/api/client/campaigns"),
    ("GET", "/api/client/campaigns/{id}"),
    ("PATCH", "/api/client/campaigns/{id}"),
    ("DELETE", "/api/client/campaigns/{id}"),
    ("POST", "/api/client/campaigns/{id}/duplicate"),
    ("POST", "/api/client/campaigns/{id}/trigger"),
    ("GET", "/api/client/campaigns/{id}/sends"),
    ("GET", "/api/client/templates"),
    ("POST", "/api/client/templates"),
    ("GET", "/api/client/templates/{id}"),
    ("PATCH", "/api/client/templates/{id}"),
    ("DELETE", "/api/client/templates/{id}"),
    ("POST", "/api/client/templates/{id}/preview"),
    ("POST", "/api/client/templates/{id}/proof"),
    ("GET", "/api/client/events"),
    ("GET", "/api/client/events/aggregations"),
    ("GET", "/api/client/events/export"),
    ("GET", "/api/client/users/export"),
    ("GET", "/api/client/lists/{id}/history"),
    ("POST", "/v1/track"),
    ("POST", "/v1/identify"),
    ("POST", "/v1/alias"),
    ("POST", "/v1/page"),
    ("POST", "/v1/screen"),
    ("POST", "/v1/group"),
    ("POST", "/v1/batch"),
    ("POST", "/v1/import"),
    ("GET", "/v1/projects/{write_key}/settings"),
    ("GET", "/sourceConfig/"),
]


def problem_envelope(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> None:
    """Every non-2xx answer is ``application/problem+json`` with the documented envelope."""
    if 200 <= response.status_code < 300:
        return
    content_type = (response.headers.get("content-type") or [""])[0]
    assert content_type.split(";")[0].strip() == "application/problem+json", (
        f"{response.status_code} with Content-Type {content_type!r}, not application/problem+json"
    )
    body = response.json()
    assert isinstance(body, dict), f"the error body is not an object: {body!r}"
    assert body.get("status") == "error", f"status is {body.get('status')!r}, not 'error'"
    assert isinstance(body.get("code"), str) and body["code"], f"no code: {body!r}"
    assert isinstance(body.get("message"), str) and body["message"], f"no message: {body!r}"
    request_ids = response.headers.get("x-request-id") or []
    assert len(request_ids) == 1, f"X-Request-Id headers: {request_ids!r}"
    assert body.get("request_id") == request_ids[0], (
        f"request_id {body.get('request_id')!r} != X-Request-Id {request_ids[0]!r}"
    )


@pytest.fixture
def api_schema(app: TidingsApp) -> Iterator[schemathesis.BaseSchema]:
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    # schemathesis keeps each app's (no-op here) lifespan alive for the whole process.
    schemathesis.python.asgi.shutdown_lifespans()


def _authorization(key: str, security: list[dict[str, list[str]]]) -> str:
    """The key as the operation's security scheme wants it: bearer, or Segment's writeKey."""
    schemes = {name for requirement in security for name in requirement}
    if schemes == {"writeKey"}:
        return "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    return f"Bearer {key}"


SEEDED_USER = "u_fuzz"


def _seed(app: TidingsApp, services: Services, project: Project) -> int:
    """A user with an anonymous id, a device and events, so that the reads answer 200 with
    bodies to check against the document, not only empty pages and 404s; and a static list
    with that user in it, whose id this returns."""
    auth = {"Authorization": f"Bearer {project.sk}"}
    writes = [
        (
            "/api/client/identify",
            {
                "external_id": SEEDED_USER,
                "anonymous_id": "anon_fuzz",
                "email": "Fuzz@Example.com",
                "phone": "+61491570006",
                "timezone": "Australia/Sydney",
                "locale": "en-AU",
                "data": {"plan": "pro", "seats": 3, "nested": {"a": [1, "b", None]}},
            },
        ),
        (
            "/api/client/devices",
            {
                "external_id": SEEDED_USER,
                "device_id": "dev_fuzz",
                "token": "tok",
                "os": "iOS",
                "os_version": "18.1",
                "model": "iPhone15,2",
                "app_build": "1",
                "app_version": "1.0.0",
            },
        ),
        (
            "/api/client/events",
            [
                {"name": "Signed up", "external_id": SEEDED_USER, "data": {"via": "web"}},
                {"name": "Order placed", "anonymous_id": "anon_fuzz", "data": {"total": 4.5}},
                {"name": "Order placed", "external_id": SEEDED_USER, "created_at": "2026-01-01"},
            ],
        ),
    ]
    with schemathesis.python.asgi.get_client(app) as client:
        for path, body in writes:
            response = client.post(path, json=body, headers=auth)
            assert response.status_code == 204, response.text
    deadline = time.monotonic() + 20
    while services.log.pending() > 0:
        assert time.monotonic() < deadline, "the seed writes were not processed"
        time.sleep(0.01)
    with schemathesis.python.asgi.get_client(app) as client:
        created = client.post(
            "/api/client/lists", json={"name": "fuzz", "type": "static"}, headers=auth
        )
        assert created.status_code == 201, created.text
        list_id = int(created.json()["id"])
        members = {"external_ids": [SEEDED_USER]}
        added = client.post(f"/api/client/lists/{list_id}/users", json=members, headers=auth)
        assert added.status_code == 200, added.text
    return list_id


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# Values a client may put where the server expects a cursor it issued, an external id or a
# resource id: forged, oversized, wrongly typed, out of every column's range (issue 18).
HOSTILE_CURSORS = st.sampled_from(
    [
        _b64(b'["n", 99999999999999999999999, "a"]'),
        _b64(b'[-99999999999999999999999, "a"]'),
        _b64(b'["n", 1, "a\\u0000"]'),
        _b64(b'["p", 1]'),
        _b64(b'["n", "1", 1]'),
        _b64(b'["trait", "", "p", "string"]'),
        _b64(b"[" * 3000 + b"]" * 3000),
        "A" * 511,
        "!!",
    ]
) | st.text(max_size=40)
HOSTILE_IDS = st.sampled_from(
    ["a/b", "%2F", "..", ".", "x" * 256, "é" * 255, "u_fuzz", "\u202e", " "]
) | st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=20)
HOSTILE_LIST_IDS = st.sampled_from(
    ["0", "-1", "2147483648", "9223372036854775808", "1e3", "1.5", "0x10", "99999999999999999999"]
)


def _with_hostile_inputs(
    operation: schemathesis.APIOperation, strategy: st.SearchStrategy, mode: GenerationMode
) -> st.SearchStrategy:
    """The operation's cases, plus cases with a hostile cursor, external id or list id."""
    names = {p.name for p in operation.query}
    extra = []
    if "cursor" in names:
        extra.append(
            HOSTILE_CURSORS.flatmap(
                lambda c: operation.as_strategy(generation_mode=mode, query={"cursor": c})
            )
        )
    if "{external_id}" in operation.path:
        extra.append(
            HOSTILE_IDS.flatmap(
                lambda x: operation.as_strategy(
                    generation_mode=mode, path_parameters={"external_id": x}
                )
            )
        )
    if "{id}" in operation.path:
        extra.append(
            HOSTILE_LIST_IDS.flatmap(
                lambda x: operation.as_strategy(generation_mode=mode, path_parameters={"id": x})
            )
        )
    return st.one_of(strategy, *extra) if extra else strategy


def _has_inputs(operation: schemathesis.APIOperation) -> bool:
    parameters = (operation.path_parameters, operation.query, operation.headers, operation.cookies)
    return any(len(list(p)) for p in parameters) or bool(list(operation.body))


def test_the_fuzzed_operations_are_the_documented_ones(api_schema: schemathesis.BaseSchema) -> None:
    documented = {
        (result.ok().method.upper(), result.ok().path) for result in api_schema.get_all_operations()
    }
    assert documented == set(OPERATIONS)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize("scope", ["secret", "public"])
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_fuzz(
    api_schema: schemathesis.BaseSchema,
    app: TidingsApp,
    services: Services,
    project: Project,
    method: str,
    path: str,
    scope: str,
    mode: GenerationMode,
) -> None:
    operation = api_schema[path][method]
    if mode is GenerationMode.NEGATIVE and not _has_inputs(operation):
        pytest.skip("no parameter or body to make invalid")
    list_id = _seed(app, services, project)
    strategy = operation.as_strategy(generation_mode=mode)
    if "{external_id}" in path:
        # Random ids are all unknown (404); half of the cases name the seeded user instead.
        strategy = st.one_of(
            strategy,
            operation.as_strategy(
                generation_mode=mode, path_parameters={"external_id": SEEDED_USER}
            ),
        )
    if "{id}" in path:  # likewise: half of the cases name the seeded list
        strategy = st.one_of(
            strategy,
            operation.as_strategy(generation_mode=mode, path_parameters={"id": str(list_id)}),
        )
    strategy = _with_hostile_inputs(operation, strategy, mode)
    key = project.sk if scope == "secret" else project.pk
    if "{write_key}" in path:  # half of the cases name the key (a secret one is refused)
        strategy = st.one_of(
            strategy,
            operation.as_strategy(generation_mode=mode, path_parameters={"write_key": key}),
        )
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        problem_envelope,
    ]
    security = operation.definition.raw.get("security", [])
    headers = {"Authorization": _authorization(key, security)} if security else {}

    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def fuzz(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=headers, checks=checks)

    fuzz()


@pytest.mark.parametrize("accepted", [True, False], ids=["valid-message", "invalid-message"])
def test_segment_outcomes_match_the_document(
    api_schema: schemathesis.BaseSchema, project: Project, accepted: bool
) -> None:
    operation = api_schema["/v1/track"]["POST"]
    body = {"type": "track", "userId": "u_1", "event": "E"} if accepted else {"userId": "u_1"}
    case = operation.Case(query={"outcomes": "1"}, body=body, media_type="application/json")
    response = case.call(headers={"Authorization": f"Bearer {project.sk}"})
    assert response.status_code == 200
    assert response.json()["accepted" if accepted else "rejected"] == 1
    case.validate_response(response, checks=[response_schema_conformance])


def _nest(value: object, depth: int) -> object:
    for _ in range(depth):
        value = {"a": value}
    return value


ODD_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=15,
)
HOSTILE_MESSAGES = st.fixed_dictionaries(
    {
        "userId": HOSTILE_IDS,
        "event": st.text(max_size=5) | st.just("E"),
        "properties": st.builds(_nest, ODD_JSON, st.sampled_from([0, 1, 31, 32, 33, 200])),
        "traits": st.builds(_nest, ODD_JSON, st.sampled_from([0, 32, 33, 300])),
        "context": ODD_JSON,
        "timestamp": st.sampled_from(
            ["9999-12-31T23:59:59.9999999Z", "0001-01-01T00:00:00+01:00", "2026-01-01", "x"]
        ),
        "sentAt": st.sampled_from(["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"]),
    }
)


@pytest.mark.parametrize("path", [p for m, p in OPERATIONS if m == "POST" and p.startswith("/v1/")])
def test_v1_hostile_bodies(
    api_schema: schemathesis.BaseSchema, project: Project, path: str
) -> None:
    operation = api_schema[path]["POST"]
    headers = {"Authorization": _authorization(project.pk, [{"writeKey": []}])}

    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(message=HOSTILE_MESSAGES)
    def fuzz(message: dict) -> None:
        body = {"batch": [message]} if path in ("/v1/batch", "/v1/import") else message
        case = operation.Case(body=body, media_type="application/json")
        response = case.call(headers=headers)
        case.validate_response(response, checks=[not_a_server_error, problem_envelope])

    fuzz()
