"""Subscription types and users' states: defaults per channel, the API, the batch, the
preference centre's tokens, and the events a change records."""

from __future__ import annotations

import time

import httpx
from itsdangerous import URLSafeTimedSerializer

from tests.api.test_validation import assert_problem
from tests.conftest import Project, bearer, create_project, drain
from tests.messaging.helpers import API, event_names, manual, patch, post
from tidings.bootstrap import Services
from tidings.domain.auth import Role, Scope


async def _user(client: httpx.AsyncClient, project: Project, external_id: str) -> None:
    response = await client.post(
        f"{API}/users/batch",
        json=[{"external_id": external_id, "email": f"{external_id}@example.com"}],
        headers=bearer(project.sk),
    )
    assert response.status_code == 200 and response.json()["failed"] == 0


async def test_a_new_project_has_one_default_type_per_channel(
    services: Services, client: httpx.AsyncClient, project: Project
) -> None:
    listed = (await client.get(f"{API}/subscriptions", headers=bearer(project.sk))).json()
    defaults = {t["channel"]: t for t in listed["results"] if t["is_default"]}
    assert set(defaults) == {"email", "text", "push", "webhook", "in_app"}
    # Asked twice, still one each.
    again = (await client.get(f"{API}/subscriptions", headers=bearer(project.sk))).json()
    assert len(again["results"]) == 5

    created = await post(
        client,
        project,
        "/subscriptions",
        {"name": "Weekly", "channel": "email", "requires_opt_in": True},
    )
    assert created["requires_opt_in"] is True and created["is_public"] is True
    changed = await patch(client, project, f"/subscriptions/{created['id']}", {"is_public": False})
    assert changed["is_public"] is False and changed["name"] == "Weekly"
    bad = await client.post(
        f"{API}/subscriptions", json={"name": "X", "channel": "fax"}, headers=bearer(project.sk)
    )
    assert_problem(bad, 422, "validation_failed")
    unknown = await client.post(
        f"{API}/subscriptions",
        json={"name": "X", "channel": "email", "colour": 1},
        headers=bearer(project.sk),
    )
    assert_problem(unknown, 400, "parameter_unknown")
    editor = services.projects.create_key(project.id, Scope.SECRET, role=Role.EDITOR).key
    refused = await client.post(
        f"{API}/subscriptions", json={"name": "X", "channel": "email"}, headers=bearer(editor)
    )
    assert_problem(refused, 403, "permission_denied")
    other = create_project(services)
    hidden = await client.get(f"{API}/subscriptions/{created['id']}", headers=bearer(other.sk))
    assert_problem(hidden, 404, "resource_missing")


async def test_user_states_and_their_events(
    services: Services, client: httpx.AsyncClient, project: Project
) -> None:
    manual(services)
    await _user(client, project, "u1")
    weekly = await post(
        client,
        project,
        "/subscriptions",
        {"name": "Weekly", "channel": "email", "requires_opt_in": True},
    )
    states = (await client.get(f"{API}/users/u1/subscriptions", headers=bearer(project.sk))).json()
    by_id = {s["subscription_id"]: s["state"] for s in states["results"]}
    assert by_id[weekly["id"]] == 0  # needs an opt-in: nothing recorded counts as out
    email = next(
        s
        for s in states["results"]
        if s["channel"] == "email" and s["subscription_id"] != weekly["id"]
    )
    assert email["state"] == 1

    changed = await patch(
        client,
        project,
        "/users/u1/subscriptions",
        [
            {"subscription_id": email["subscription_id"], "state": 0},
            {"subscription_id": weekly["id"], "state": 2},
        ],
    )
    after = {s["subscription_id"]: s["state"] for s in changed["results"]}
    assert after[email["subscription_id"]] == 0 and after[weekly["id"]] == 2
    await drain(services)
    names = [
        (n, d) for n, d in event_names(services, project.id) if n in ("subscribed", "unsubscribed")
    ]
    assert sorted(n for n, _ in names) == ["subscribed", "unsubscribed"]
    unsub = next(d for n, d in names if n == "unsubscribed")
    assert unsub["subscription_id"] == email["subscription_id"] and unsub["channel"] == "email"

    # The same state again records nothing more.
    await patch(
        client,
        project,
        "/users/u1/subscriptions",
        [{"subscription_id": email["subscription_id"], "state": 0}],
    )
    await drain(services)
    assert len([n for n, _ in event_names(services, project.id) if n == "unsubscribed"]) == 1

    bad = await client.patch(
        f"{API}/users/u1/subscriptions",
        json=[{"subscription_id": email["subscription_id"], "state": 7}],
        headers=bearer(project.sk),
    )
    assert_problem(bad, 422, "validation_failed")
    missing = await client.get(f"{API}/users/nobody/subscriptions", headers=bearer(project.sk))
    assert_problem(missing, 404, "resource_missing")


async def test_batch_answers_per_item(
    services: Services, client: httpx.AsyncClient, project: Project
) -> None:
    manual(services)
    await _user(client, project, "u1")
    types = (await client.get(f"{API}/subscriptions", headers=bearer(project.sk))).json()["results"]
    email = next(t for t in types if t["channel"] == "email")
    response = await client.post(
        f"{API}/subscriptions/batch",
        json=[
            {"external_id": "u1", "subscription_id": email["id"], "state": 0},
            {"external_id": "ghost", "subscription_id": email["id"], "state": 0},
            {"external_id": "u1", "subscription_id": 999_999, "state": 0},
            {"subscription_id": email["id"], "state": 1},
        ],
        headers=bearer(project.sk),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["succeeded"] == 1 and body["failed"] == 3
    assert [("error" in r) for r in body["results"]] == [False, True, True, True]
    assert body["results"][1]["error"]["code"] == "resource_missing"
    states = (await client.get(f"{API}/users/u1/subscriptions", headers=bearer(project.sk))).json()
    assert next(s for s in states["results"] if s["subscription_id"] == email["id"])["state"] == 0


async def test_preference_centre_tokens(
    services: Services, client: httpx.AsyncClient, project: Project
) -> None:
    manual(services)
    await _user(client, project, "u1")
    weekly = await post(client, project, "/subscriptions", {"name": "Weekly", "channel": "email"})
    hidden = await post(
        client,
        project,
        "/subscriptions",
        {"name": "Internal", "channel": "email", "is_public": False},
    )
    session = await post(client, project, "/users/u1/sessions", {})
    assert session["token"] and session["expires_at"]
    user = {"X-Spotzee-User-Token": session["token"]}

    me = await client.get(f"{API}/users/me", headers=bearer(project.pk, **user))
    assert me.status_code == 200, me.text
    assert me.json()["external_id"] == "u1"
    ids = {s["subscription_id"] for s in me.json()["subscriptions"]}
    assert weekly["id"] in ids and hidden["id"] not in ids

    changed = await client.patch(
        f"{API}/subscriptions/me",
        json=[{"subscription_id": weekly["id"], "state": 0}],
        headers=bearer(project.pk, **{"X-Tidings-User-Token": session["token"]}),
    )
    assert changed.status_code == 200, changed.text
    assert {s["subscription_id"]: s["state"] for s in changed.json()["results"]}[weekly["id"]] == 0
    not_public = await client.patch(
        f"{API}/subscriptions/me",
        json=[{"subscription_id": hidden["id"], "state": 0}],
        headers=bearer(project.pk, **user),
    )
    assert_problem(not_public, 422, "validation_failed")

    no_token = await client.get(f"{API}/users/me", headers=bearer(project.pk))
    assert_problem(no_token, 401, "authentication_required")
    forged = URLSafeTimedSerializer("guessed", salt="tidings.preference-centre").dumps(
        {"p": project.id, "u": "anyone"}
    )
    bad = await client.get(
        f"{API}/users/me", headers=bearer(project.pk, **{"X-Spotzee-User-Token": forged})
    )
    assert_problem(bad, 401, "authentication_required")
    other = create_project(services)
    elsewhere = await client.get(f"{API}/users/me", headers=bearer(other.pk, **user))
    assert_problem(elsewhere, 403, "permission_denied")
    # A token is for the preference centre only: the secret-key surface does not take it.
    assert services.messaging is not None
    secret = services.messaging.secrets.get("preferences")
    expired = URLSafeTimedSerializer(secret, salt="tidings.preference-centre")
    old_token = expired.dumps({"p": project.id, "u": "x"})
    real_time = time.time
    try:
        time.time = lambda: real_time() + 16 * 60  # type: ignore[assignment]
        late = await client.get(
            f"{API}/users/me", headers=bearer(project.pk, **{"X-Spotzee-User-Token": old_token})
        )
    finally:
        time.time = real_time  # type: ignore[assignment]
    assert_problem(late, 401, "authentication_required")
    assert "expired" in late.json()["message"]


async def test_an_unsubscribe_survives_an_identity_merge(
    services: Services, client: httpx.AsyncClient, project: Project
) -> None:
    manual(services)
    await _user(client, project, "u1")
    response = await client.post(
        f"{API}/identify", json={"anonymous_id": "phone-1"}, headers=bearer(project.pk)
    )
    assert response.status_code == 204
    await drain(services)
    types = (await client.get(f"{API}/subscriptions", headers=bearer(project.sk))).json()["results"]
    email = next(t for t in types if t["channel"] == "email" and t["is_default"])
    batch = await post(
        client,
        project,
        "/subscriptions/batch",
        [{"anonymous_id": "phone-1", "subscription_id": email["id"], "state": 0}],
    )
    assert batch["succeeded"] == 1
    merged = await client.post(
        f"{API}/alias",
        json={"anonymous_id": "phone-1", "external_id": "u1"},
        headers=bearer(project.pk),
    )
    assert merged.status_code == 204
    await drain(services)
    states = (await client.get(f"{API}/users/u1/subscriptions", headers=bearer(project.sk))).json()
    assert next(s for s in states["results"] if s["subscription_id"] == email["id"])["state"] == 0


async def test_the_store_for_unsubscribe_pages_and_sms_stop(
    services: Services, client: httpx.AsyncClient, project: Project
) -> None:
    """What tracking's unsubscribe page and the SMS STOP webhook call."""
    manual(services)
    assert services.messaging is not None
    store = services.messaging.subscriptions
    for external_id, phone in (
        ("p1", "+61400000001"),
        ("p2", "+61400000001"),
        ("p3", "+61400000003"),
    ):
        response = await client.post(
            f"{API}/users/batch",
            json=[{"external_id": external_id, "phone": phone}],
            headers=bearer(project.sk),
        )
        assert response.json()["failed"] == 0
    campaign = await post(
        client, project, "/campaigns", {"type": "trigger", "name": "T", "channel": "email"}
    )
    p1 = services.profiles.profile_id_for(project.id, "external", "p1")
    assert p1 is not None
    change = store.set_state(
        None,
        project.id,
        p1,
        campaign["subscription_id"],
        0,
        time.time_ns() // 1000,
        source="unsubscribe_page",
        campaign_id=campaign["id"],
    )
    assert change.changed
    got = (await client.get(f"{API}/campaigns/{campaign['id']}", headers=bearer(project.sk))).json()
    assert got["delivery"]["unsubscribed"] == 1
    assert (
        store.unsubscribe_channel_by_phone(project.id, "+61400000001", now=time.time_ns() // 1000)
        == 2
    )
    await drain(services)
    events = [(n, d) for n, d in event_names(services, project.id) if n == "unsubscribed"]
    assert sorted(d["source"] for _, d in events) == ["sms_stop", "sms_stop", "unsubscribe_page"]
    assert (
        next(d for _, d in events if d["source"] == "unsubscribe_page")["campaign_id"]
        == campaign["id"]
    )
    for external_id, expected in (("p1", 0), ("p2", 0), ("p3", 1)):
        states = (
            await client.get(f"{API}/users/{external_id}/subscriptions", headers=bearer(project.sk))
        ).json()
        text = next(s for s in states["results"] if s["channel"] == "text")
        assert text["state"] == expected, external_id
