"""Webhooks stay off the server's own network (SSRF): loopback, private, link-local
(cloud metadata) and other non-global addresses are refused, at save time (422) when the
endpoint names one, and at send time for every address a name resolves to, unless the
operator allows them (TIDINGS_WEBHOOK_ALLOW_PRIVATE)."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from tests.api.test_validation import assert_problem
from tests.conftest import Project, bearer, create_project, make_services, make_settings
from tests.messaging.helpers import API, post
from tests.messaging.servers import HttpServer, Reply
from tidings.bootstrap import Services
from tidings.domain.addresses import blocked_address, blocked_url_reason
from tidings.domain.channels import Outcome, WebhookMessage
from tidings.messaging.providers import build_adapter


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "::1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "not an address",
    ],
)
def test_non_global_addresses_are_blocked(address: str) -> None:
    assert blocked_address(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_global_addresses_are_not(address: str) -> None:
    assert not blocked_address(address)


def test_urls_naming_this_machine_are_refused_as_written() -> None:
    for url in (
        "http://localhost:8000/x",
        "http://LOCALHOST./x",
        "http://api.localhost/x",
        "http://[::1]/x",
        "http://169.254.169.254/latest/meta-data/",
        "https://10.0.0.5:8443/hook",
    ):
        assert blocked_url_reason(url) is not None, url
    assert blocked_url_reason("https://hooks.example.com/x") is None  # checked when resolved


async def test_the_adapter_refuses_private_addresses_without_a_request() -> None:
    async with HttpServer(lambda r: Reply(200)) as server:
        adapter = build_adapter("webhook", {})
        results = [
            await adapter.send(WebhookMessage(method="POST", url=url))
            for url in (
                f"{server.url}/h",  # http://127.0.0.1:<port>
                f"http://localhost:{server.url.rsplit(':', 1)[1]}/h",
                "http://169.254.169.254/latest/meta-data/",
            )
        ]
        await adapter.aclose()
    assert server.requests == []
    for result in results:
        assert result.outcome is Outcome.PERMANENT
        assert result.reason is not None and "TIDINGS_WEBHOOK_ALLOW_PRIVATE" in result.reason


async def test_a_name_resolving_to_a_private_address_is_refused_when_connecting() -> None:
    name = socket.gethostname()  # this machine's name: /etc/hosts maps it to itself
    try:
        addresses = {a[4][0] for a in socket.getaddrinfo(name, 80)}
    except OSError:
        pytest.skip("this machine's name does not resolve")
    if not addresses or not all(blocked_address(a) for a in addresses):
        pytest.skip("this machine's name resolves to a global address")
    async with HttpServer(lambda r: Reply(200)) as server:
        port = server.url.rsplit(":", 1)[1]
        adapter = build_adapter("webhook", {})
        result = await adapter.send(WebhookMessage(method="POST", url=f"http://{name}:{port}/h"))
        await adapter.aclose()
        allowed = build_adapter("webhook", {}, allow_private=True)
        reached = await allowed.send(WebhookMessage(method="POST", url=f"http://{name}:{port}/h"))
        await allowed.aclose()
    assert result.outcome is Outcome.PERMANENT
    assert result.reason is not None and "resolves to" in result.reason
    assert reached.outcome is Outcome.ACCEPTED
    assert len(server.requests) == 1  # only the allowed adapter's


async def _webhook_campaign(client: httpx.AsyncClient, project: Project) -> int:
    campaign = await post(
        client, project, "/campaigns", {"type": "trigger", "name": "Hook", "channel": "webhook"}
    )
    return int(campaign["id"])


async def test_saving_a_template_for_a_private_endpoint_is_a_422(
    services: Services, client: httpx.AsyncClient, project: Project
) -> None:
    campaign_id = await _webhook_campaign(client, project)
    for endpoint in ("http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:9/x"):
        response = await client.post(
            API + "/templates",
            json={
                "campaign_id": campaign_id,
                "locale": "en",
                "data": {"method": "POST", "endpoint": endpoint},
            },
            headers=bearer(project.sk),
        )
        body = assert_problem(response, 422, "validation_failed")
        assert body["param"] == "data.endpoint"
        assert "TIDINGS_WEBHOOK_ALLOW_PRIVATE" in body["message"]
    listed = await client.get(API + "/templates", headers=bearer(project.sk))
    assert listed.json()["results"] == []  # nothing half-written
    # A public endpoint, and one whose host Liquid fills in (checked when sending), save.
    for endpoint in ("https://hooks.example.com/x", "https://{{ user.data.host }}/x"):
        await post(
            client,
            project,
            "/templates",
            {
                "campaign_id": campaign_id,
                "locale": "en" if "hooks" in endpoint else "de",
                "data": {"method": "POST", "endpoint": endpoint},
            },
        )
    # A change to a private endpoint is refused too.
    [template] = [
        t
        for t in (await client.get(API + "/templates", headers=bearer(project.sk))).json()[
            "results"
        ]
        if t["locale"] == "en"
    ]
    changed = await client.patch(
        API + f"/templates/{template['id']}",
        json={"data": {"method": "POST", "endpoint": "http://[::1]/x"}},
        headers=bearer(project.sk),
    )
    assert assert_problem(changed, 422, "validation_failed")["param"] == "data.endpoint"


async def test_the_operator_setting_allows_private_addresses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TIDINGS_WEBHOOK_ALLOW_PRIVATE=1: a template may name 127.0.0.1, and the worker's
    webhook adapter sends there."""
    monkeypatch.setenv("TIDINGS_WEBHOOK_ALLOW_PRIVATE", "1")
    services = make_services(make_settings(tmp_path, run_worker=False))
    try:
        assert services.messaging is not None
        project = create_project(services)
        store = services.messaging.campaigns
        campaign = store.create_campaign(
            project.id,
            {
                "type": "trigger",
                "name": "Hook",
                "channel": "webhook",
                "subscription_id": services.messaging.subscriptions.default_for(
                    project.id, "webhook"
                ).id,
            },
        )
        store.create_template(
            project.id, campaign["id"], "en", {"method": "POST", "endpoint": "http://127.0.0.1:9/"}
        )
        async with HttpServer(lambda r: Reply(200)) as server:
            adapter = services.messaging.delivery.adapter_factory("webhook", {})
            result = await adapter.send(WebhookMessage(method="POST", url=f"{server.url}/h"))
            await adapter.aclose()
        assert result.outcome is Outcome.ACCEPTED and len(server.requests) == 1
    finally:
        services.close()
    monkeypatch.delenv("TIDINGS_WEBHOOK_ALLOW_PRIVATE")
    (tmp_path / "strict").mkdir()
    strict = make_services(make_settings(tmp_path / "strict", run_worker=False))
    try:
        assert strict.messaging is not None
        adapter = strict.messaging.delivery.adapter_factory("webhook", {})
        refused = await adapter.send(WebhookMessage(method="POST", url="http://127.0.0.1:9/h"))
        await adapter.aclose()
        assert refused.outcome is Outcome.PERMANENT
    finally:
        strict.close()
