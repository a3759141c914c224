"""Fuzzing the channel routes as the OpenAPI document describes them (schemathesis), with
the same checks as test_fuzz_openapi.py: no 5xx, answers as documented, every error in the
problem envelope. The app here includes the notifications and inbound SMS routers (the
tracking routes are links in messages, not in the document)."""

from __future__ import annotations

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
from tests.reliability.test_fuzz_openapi import problem_envelope
from tidings.api.app import TidingsApp
from tidings.api.auth import KeyCache
from tidings.api.inbound import inbound_router
from tidings.api.notifications import notifications_router
from tidings.bootstrap import Services
from tidings.store.notifications import NotificationStore

pytestmark = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)

MAX_EXAMPLES = 25
OPERATIONS = [
    ("GET", "/api/client/notifications"),
    ("PUT", "/api/client/notifications/{notification_id}"),
    ("POST", "/api/inbound/sms/{provider_id}"),
]
PROVIDERS = {
    1: (1, "twilio", {"account_sid": "AC1", "auth_token": "t", "from": "+61400000000"}),
    2: (1, "http_sms", {"url": "http://127.0.0.1:9/", "inbound_secret": "s"}),
}


@pytest.fixture
def channel_app(app: TidingsApp, services: Services) -> TidingsApp:
    store = NotificationStore(services.db.writer, services.db.reader)
    keys = KeyCache(services.projects, 0, lookup_timeout=services.settings.key_lookup_timeout)
    app.fastapi.include_router(notifications_router(services, keys, store))
    app.fastapi.include_router(inbound_router(PROVIDERS.get, lambda project, phone: None))
    return app


@pytest.fixture
def api_schema(channel_app: TidingsApp) -> Iterator[schemathesis.BaseSchema]:
    yield schemathesis.openapi.from_asgi("/openapi.json", channel_app)
    schemathesis.python.asgi.shutdown_lifespans()


def test_the_channel_operations_are_documented(api_schema: schemathesis.BaseSchema) -> None:
    documented = {
        (result.ok().method.upper(), result.ok().path) for result in api_schema.get_all_operations()
    }
    assert set(OPERATIONS) <= documented
    assert not any(path.startswith(("/t/", "/unsubscribe")) for _, path in documented)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_fuzz_channels(
    api_schema: schemathesis.BaseSchema,
    project: Project,
    method: str,
    path: str,
    mode: GenerationMode,
) -> None:
    operation = api_schema[path][method]
    strategy = operation.as_strategy(generation_mode=mode)
    if "{provider_id}" in path and mode is GenerationMode.POSITIVE:  # configured providers
        strategy = st.one_of(
            strategy,
            operation.as_strategy(generation_mode=mode, path_parameters={"provider_id": "1"}),
            operation.as_strategy(generation_mode=mode, path_parameters={"provider_id": "2"}),
        )
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        problem_envelope,
    ]
    headers = {"Authorization": f"Bearer {project.pk}"}

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
