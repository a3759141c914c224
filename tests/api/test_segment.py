"""The Segment tracking API (``/v1``): mapping, auth, encodings, limits, skew, dedup."""

from __future__ import annotations

import base64
import gzip
import json
import time
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.api.test_validation import assert_nothing_written, assert_problem
from tests.conftest import Project, bearer, drain
from tidings.api.app import TidingsApp
from tidings.api.segment import MAX_BATCH_BYTES, MAX_MESSAGE_BYTES
from tidings.bootstrap import Services
from tidings.store.tables import events


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


async def post(
    client: httpx.AsyncClient,
    path: str,
    key: str | None,
    body: Any,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    all_headers = {"Content-Type": "application/json", **(basic(key) if key else {})}
    all_headers.update(headers or {})
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.post(f"/v1/{path}", content=content, headers=all_headers, params=params)


def assert_success(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True}


def stored(services: Services) -> list[dict[str, Any]]:
    with services.db.reader.connect() as conn:
        rows = conn.execute(sa.select(events).order_by(events.c.created_at)).mappings().all()
    return [dict(row) for row in rows]


async def profile(client: httpx.AsyncClient, project: Project, external_id: str) -> dict:
    response = await client.get(f"/api/client/users/{external_id}", headers=bearer(project.sk))
    assert response.status_code == 200, response.text
    return response.json()


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def micros(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


# -- every message type ---------------------------------------------------------------------


async def test_track_becomes_an_event_with_properties_message_id_and_context(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    body = {
        "userId": "u_1",
        "event": "Order Completed",
        "properties": {"total": 12.5, "currency": "AUD"},
        "messageId": "m-1",
        "timestamp": "2026-04-30T08:15:00.000Z",
        "context": {"library": {"name": "analytics-python"}, "traits": {"plan": "pro"}},
        "integrations": {"All": True},  # unknown fields are ignored
        "_metadata": {"bundled": []},
    }
    assert_success(await post(client, "track", project.pk, body))
    await drain(services)
    [row] = stored(services)
    assert row["name"] == "Order Completed"
    assert row["external_id"] == "u_1" and row["anonymous_id"] is None
    assert row["data"] == {"total": 12.5, "currency": "AUD"}
    assert row["message_id"] == "m-1"
    assert row["created_at"] == micros(datetime(2026, 4, 30, 8, 15, tzinfo=UTC))
    assert row["context"] == body["context"]
    # context.traits are kept with the event but do not change the profile
    assert (await profile(client, project, "u_1"))["data"] == {}


async def test_identify_maps_email_phone_context_timezone_and_locale(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    body = {
        "userId": "u_id",
        "anonymousId": "anon-id",
        "traits": {
            "email": "Sam@Example.com",
            "phone": "030 901820",  # a national number: read with the context's locale
            "firstName": "Sam",
            "plan": "pro",
        },
        "context": {"timezone": "Europe/Berlin", "locale": "de_DE"},
    }
    assert_success(await post(client, "identify", project.pk, body))
    await drain(services)
    user = await profile(client, project, "u_id")
    assert user["email"] == "Sam@example.com"
    assert user["phone"] == "+4930901820"
    assert user["timezone"] == "Europe/Berlin"
    assert user["locale"] == "de-DE"
    assert user["data"] == {"firstName": "Sam", "plan": "pro"}
    assert user["anonymous_ids"] == ["anon-id"]
    assert stored(services) == []  # identify stores no event


async def test_identify_reads_a_national_phone_with_the_projects_locale(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    body = {"userId": "u_au", "traits": {"phone": "0491 570 006"}}  # project locale en-AU
    assert_success(await post(client, "identify", project.pk, body))
    await drain(services)
    assert (await profile(client, project, "u_au"))["phone"] == "+61491570006"


async def test_identify_ignores_context_values_it_cannot_read(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    body = {
        "userId": "u_ctx",
        "traits": {"plan": "free"},
        "context": {"timezone": "Etc/Unknown", "locale": 42},
    }
    assert_success(await post(client, "identify", project.pk, body))
    await drain(services)
    user = await profile(client, project, "u_ctx")
    assert user["timezone"] is None and user["locale"] is None
    assert user["data"] == {"plan": "free"}


async def test_trait_set_to_null_clears_it_and_absent_traits_are_kept(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    first = {"userId": "u_n", "traits": {"plan": "pro", "seats": 3}}
    second = {"userId": "u_n", "traits": {"seats": None}}
    assert_success(await post(client, "identify", project.pk, first))
    assert_success(await post(client, "identify", project.pk, second))
    await drain(services)
    assert (await profile(client, project, "u_n"))["data"] == {"plan": "pro"}


async def test_page_and_screen_become_named_events(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    page = {
        "anonymousId": "anon-p",
        "name": "Pricing",
        "category": "Docs",
        "properties": {"url": "https://example.com/pricing", "title": "Pricing"},
    }
    screen = {"anonymousId": "anon-p", "name": "Home", "properties": {"tab": 1}}
    assert_success(await post(client, "page", project.pk, page))
    assert_success(await post(client, "screen", project.pk, screen))
    await drain(services)
    rows = stored(services)
    assert [(r["name"], r["data"]) for r in rows] == [
        (
            "Page viewed",
            {
                "url": "https://example.com/pricing",
                "title": "Pricing",
                "name": "Pricing",
                "category": "Docs",
            },
        ),
        ("Screen viewed", {"tab": 1, "name": "Home"}),
    ]


async def test_group_sets_one_trait_per_group_so_several_groups_survive(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    acme = {"userId": "u_g", "groupId": "acme", "traits": {"name": "Acme", "plan": "pro"}}
    globex = {"userId": "u_g", "groupId": 42, "traits": {"name": "Globex"}}
    again = {"userId": "u_g", "groupId": "acme", "traits": {"name": "Acme Inc"}}
    for body in (acme, globex, again):
        assert_success(await post(client, "group", project.pk, body))
    await drain(services)
    assert (await profile(client, project, "u_g"))["data"] == {
        "group_acme": {"name": "Acme Inc"},  # a later call replaces that group's traits
        "group_42": {"name": "Globex"},
    }


async def test_identify_reads_rudderstacks_context_traits_and_top_level_traits_win(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    """RudderStack's SDKs send identify's traits in ``context.traits``."""
    rudder = {
        "type": "identify",
        "userId": "u_rs",
        "context": {"traits": {"email": "Rudder@Example.com", "plan": "pro", "seats": 3}},
    }
    both = {
        "userId": "u_both",
        "traits": {"plan": "team", "email": "top@example.com"},
        "context": {"traits": {"plan": "free", "email": "ctx@example.com", "seats": 5}},
    }
    assert_success(await post(client, "identify", project.pk, rudder))
    assert_success(await post(client, "identify", project.pk, both))
    await drain(services)
    user = await profile(client, project, "u_rs")
    assert user["email"] == "Rudder@example.com"
    assert user["data"] == {"plan": "pro", "seats": 3}
    other = await profile(client, project, "u_both")
    assert other["email"] == "top@example.com"
    assert other["data"] == {"plan": "team", "seats": 5}


async def test_a_bad_email_in_context_traits_is_named_where_it_was(
    client: httpx.AsyncClient, project: Project
) -> None:
    body = {"userId": "u_bad", "context": {"traits": {"email": "not an email"}}}
    response = await post(client, "identify", project.pk, body)
    assert response.status_code == 422, response.text
    assert [e["param"] for e in response.json()["errors"]] == ["context.traits.email"]


async def test_group_traits_are_the_top_level_ones_and_context_traits_stay_the_users(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    """In a group call (RudderStack's SDKs too) ``traits`` are the group's; the user's
    cached traits that RudderStack adds as ``context.traits`` to every call are not applied,
    as on track: a late call must not undo a newer identify."""
    identify = {"userId": "u_grs", "context": {"traits": {"plan": "team"}}}
    group = {
        "userId": "u_grs",
        "groupId": "acme",
        "traits": {"name": "Acme"},
        "context": {"traits": {"plan": "free"}},
    }
    assert_success(await post(client, "identify", project.pk, identify))
    assert_success(await post(client, "group", project.pk, group))
    await drain(services)
    user = await profile(client, project, "u_grs")
    assert user["data"] == {"plan": "team", "group_acme": {"name": "Acme"}}


async def test_alias_merges_the_anonymous_profile_into_the_known_one(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    viewed = {"anonymousId": "anon-m", "event": "Product Viewed", "properties": {"sku": "A1"}}
    known = {"userId": "u_merge", "traits": {"email": "m@example.com"}}
    assert_success(await post(client, "track", project.pk, viewed))
    assert_success(await post(client, "identify", project.pk, known))
    await drain(services)
    alias = {"previousId": "anon-m", "userId": "u_merge", "anonymousId": "ignored"}
    assert_success(await post(client, "alias", project.pk, alias))
    await drain(services)
    user = await profile(client, project, "u_merge")
    assert user["anonymous_ids"] == ["anon-m"]
    assert user["email"] == "m@example.com"
    timeline = await client.get("/api/client/users/u_merge/events", headers=bearer(project.sk))
    assert [e["name"] for e in timeline.json()["results"]] == ["Product Viewed"]
    [row] = stored(services)
    assert row["profile_id"] == user["id"]


async def test_numeric_ids_become_strings(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    body = {"userId": 42, "anonymousId": 7.0, "event": "E", "messageId": 99}
    assert_success(await post(client, "track", project.pk, body))
    await drain(services)
    [row] = stored(services)
    assert (row["external_id"], row["anonymous_id"], row["message_id"]) == ("42", "7", "99")


async def test_batch_applies_in_order_and_import_is_the_same(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    batch = {
        "batch": [
            {"type": "track", "anonymousId": "anon-b", "event": "Signed Up"},
            {"type": "identify", "anonymousId": "anon-b", "userId": "u_b", "traits": {"n": 1}},
            {"type": "page", "userId": "u_b", "name": "Welcome"},
            {"type": "group", "userId": "u_b", "groupId": "g1"},
            {"type": "alias", "previousId": "anon-b2", "userId": "u_b"},
            {"type": "screen", "userId": "u_b"},
        ],
        "context": {"library": {"name": "test"}},
    }
    assert_success(await post(client, "batch", project.pk, batch))
    imported = {"batch": [{"type": "track", "userId": "u_b", "event": "Imported"}]}
    assert_success(await post(client, "import", project.pk, imported))
    await drain(services)
    user = await profile(client, project, "u_b")
    assert sorted(user["anonymous_ids"]) == ["anon-b", "anon-b2"]
    assert user["data"] == {"n": 1, "group_g1": {}}
    rows = stored(services)
    assert sorted(r["name"] for r in rows) == [
        "Imported",
        "Page viewed",
        "Screen viewed",
        "Signed Up",
    ]
    assert {r["profile_id"] for r in rows} == {user["id"]}
    signed_up = next(r for r in rows if r["name"] == "Signed Up")
    assert signed_up["context"] == {"library": {"name": "test"}}  # the batch's context


async def test_batch_context_is_merged_under_each_messages_context(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    batch = {
        "batch": [{"type": "track", "userId": "u", "event": "E", "context": {"ip": "1.2.3.4"}}],
        "context": {"ip": "9.9.9.9", "library": {"name": "x"}},
    }
    assert_success(await post(client, "batch", project.pk, batch))
    await drain(services)
    assert stored(services)[0]["context"] == {"ip": "1.2.3.4", "library": {"name": "x"}}


async def test_analytics_js_one_letter_paths_and_text_plain(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    headers = {"Content-Type": "text/plain"}
    track = {"anonymousId": "a-js", "event": "Clicked", "writeKey": project.pk}
    page = {"anonymousId": "a-js", "name": "Home", "writeKey": project.pk}
    assert_success(await post(client, "t", None, track, headers=headers))
    assert_success(await post(client, "p", None, page, headers=headers))
    batch = {"writeKey": project.pk, "batch": [{"type": "track", **track}]}
    assert_success(await post(client, "b", None, batch, headers=headers))
    await drain(services)
    assert sorted(r["name"] for r in stored(services)) == ["Clicked", "Clicked", "Page viewed"]


# -- auth -----------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["pk", "sk"])
async def test_any_project_key_is_a_write_key_as_basic_user_or_in_the_body(
    client: httpx.AsyncClient, services: Services, project: Project, which: str
) -> None:
    key = project.pk if which == "pk" else project.sk
    assert_success(await post(client, "track", key, {"userId": "u", "event": "Basic"}))
    in_body = {"userId": "u", "event": "Body", "writeKey": key}
    assert_success(await post(client, "track", None, in_body))
    batch = {"writeKey": key, "batch": [{"type": "track", "userId": "u", "event": "Batch"}]}
    assert_success(await post(client, "batch", None, batch))
    bearer_auth = await post(
        client, "track", None, {"userId": "u", "event": "Bearer"}, headers=bearer(key)
    )
    assert_success(bearer_auth)
    await drain(services)
    assert sorted(r["name"] for r in stored(services)) == ["Basic", "Batch", "Bearer", "Body"]


async def test_a_password_after_the_key_is_ignored(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    token = base64.b64encode(f"{project.pk}:anything".encode()).decode()
    response = await post(
        client,
        "track",
        None,
        {"userId": "u", "event": "E"},
        headers={"Authorization": f"Basic {token}"},
    )
    assert_success(response)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic("pk_not_a_key"),
        basic(""),
        {"Authorization": "Basic %%%"},
        {"Authorization": "Token abc"},
    ],
    ids=["none", "unknown", "empty", "not-base64", "other-scheme"],
)
async def test_missing_or_bad_write_key_is_refused(
    client: httpx.AsyncClient, services: Services, project: Project, headers: dict[str, str]
) -> None:
    response = await post(client, "track", None, {"userId": "u", "event": "E"}, headers=headers)
    body = assert_problem(response, 401, "authentication_required")
    assert "writeKey" in body["message"]
    await assert_nothing_written(services)


async def test_a_revoked_key_and_a_wrong_body_key_are_refused(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    from tidings.domain.auth import Scope

    revoked = services.projects.create_key(project.id, Scope.PUBLIC).key
    services.projects.revoke_key(key=revoked)
    response = await post(client, "track", revoked, {"userId": "u", "event": "E"})
    assert_problem(response, 401, "authentication_required")
    body = {"userId": "u", "event": "E", "writeKey": "sk_wrong"}
    assert_problem(await post(client, "track", None, body), 401, "authentication_required")
    # the header wins over the body
    body["writeKey"] = project.pk
    response = await post(client, "track", "pk_wrong", body)
    assert_problem(response, 401, "authentication_required")
    await assert_nothing_written(services)


# -- encodings ------------------------------------------------------------------------------


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", _raw_deflate),
        ("gzip", lambda data: gzip.compress(data[:10]) + gzip.compress(data[10:])),
    ],
    ids=["gzip", "x-gzip", "deflate-zlib", "deflate-raw", "gzip-two-members"],
)
async def test_compressed_bodies_are_inflated(
    client: httpx.AsyncClient,
    services: Services,
    project: Project,
    encoding: str,
    compress: Any,
) -> None:
    batch = {"batch": [{"type": "track", "userId": "u_z", "event": f"E{i}"} for i in range(50)]}
    content = compress(json.dumps(batch).encode())
    response = await post(
        client, "batch", project.pk, content, headers={"Content-Encoding": encoding}
    )
    assert_success(response)
    await drain(services)
    assert len(stored(services)) == 50


async def test_corrupt_or_unsupported_encodings_are_refused(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    body = json.dumps({"userId": "u", "event": "E"}).encode()
    truncated = gzip.compress(body)[:-12]
    for content, encoding, status, code in [
        (body, "gzip", 400, "parameter_invalid_format"),  # not gzip at all
        (truncated, "gzip", 400, "parameter_invalid_format"),
        (zlib.compress(body) + b"junk", "deflate", 400, "parameter_invalid_format"),
        (body, "br", 415, "parameter_invalid_format"),
    ]:
        response = await post(
            client, "track", project.pk, content, headers={"Content-Encoding": encoding}
        )
        problem = assert_problem(response, status, code)
        assert problem["param"] == "Content-Encoding"
    await assert_nothing_written(services)


async def test_a_json_content_type_other_than_text_plain_is_required(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    response = await post(
        client,
        "track",
        project.pk,
        {"userId": "u", "event": "E"},
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_problem(response, 415, "parameter_invalid_format")
    await assert_nothing_written(services)


# -- limits ---------------------------------------------------------------------------------


async def test_a_message_over_32_kb_is_refused_whole(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    big = {"type": "track", "userId": "u", "event": "Big", "properties": {"x": "y" * 33_000}}
    small = {"type": "track", "userId": "u", "event": "Small"}
    response = await post(client, "batch", project.pk, {"batch": [small, big]})
    problem = assert_problem(response, 413, "payload_too_large")
    assert problem["param"] == "batch[1]"
    response = await post(client, "track", project.pk, big)
    assert_problem(response, 413, "payload_too_large")
    await assert_nothing_written(services)


async def test_a_message_of_exactly_32_kb_is_accepted_one_byte_more_is_not(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    message: dict[str, Any] = {"type": "track", "userId": "u", "event": "E", "properties": {}}
    overhead = len(json.dumps(message, separators=(",", ":"))) + len('"x":""')
    message["properties"] = {"x": "y" * (MAX_MESSAGE_BYTES - overhead)}
    assert len(json.dumps(message, separators=(",", ":"))) == MAX_MESSAGE_BYTES
    assert_success(await post(client, "batch", project.pk, {"batch": [message, message]}))
    message["properties"]["x"] += "y"
    response = await post(client, "batch", project.pk, {"batch": [message, message]})
    assert_problem(response, 413, "payload_too_large")


def _batch_of_size(size: int) -> bytes:
    messages = []
    message = {"type": "track", "userId": "u", "event": "E", "properties": {"x": "y" * 20_000}}
    while len(json.dumps({"batch": messages})) < size:
        messages.append(message)
    return json.dumps({"batch": messages}).encode()


async def test_a_batch_over_500_kb_is_refused(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    content = _batch_of_size(MAX_BATCH_BYTES + 1)
    assert len(content) > MAX_BATCH_BYTES
    response = await post(client, "batch", project.pk, content)
    assert_problem(response, 413, "payload_too_large")
    await assert_nothing_written(services)


async def test_the_batch_limit_applies_after_inflating(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    content = gzip.compress(_batch_of_size(MAX_BATCH_BYTES + 1))
    assert len(content) < 10_000
    response = await post(
        client, "batch", project.pk, content, headers={"Content-Encoding": "gzip"}
    )
    assert_problem(response, 413, "payload_too_large")
    await assert_nothing_written(services)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_decompression_bomb_stops_at_the_limit(
    client: httpx.AsyncClient, services: Services, project: Project, encoding: str
) -> None:
    # 128 MB of zeros in about 128 KB: inflating stops just past 500 KB.
    compressor = zlib.compressobj(9, wbits=31 if encoding == "gzip" else 15)
    zeros = b"\0" * (1 << 20)
    bomb = b"".join(compressor.compress(zeros) for _ in range(128)) + compressor.flush()
    assert len(bomb) < MAX_BATCH_BYTES / 2
    started = time.monotonic()
    response = await post(client, "batch", project.pk, bomb, headers={"Content-Encoding": encoding})
    assert_problem(response, 413, "payload_too_large")
    assert time.monotonic() - started < 2
    await assert_nothing_written(services)


def test_inflating_a_bomb_never_holds_more_than_the_limit() -> None:
    import tracemalloc

    from tidings.api import segment

    compressor = zlib.compressobj(9, wbits=31)
    zeros = b"\0" * (1 << 20)
    bomb = b"".join(compressor.compress(zeros) for _ in range(64)) + compressor.flush()
    tracemalloc.start()
    try:
        with pytest.raises(segment.PayloadTooLarge):
            segment._inflate(bomb, (31,), MAX_BATCH_BYTES, "gzip")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * MAX_BATCH_BYTES  # not the 64 MB it would inflate to


async def test_a_declared_content_length_over_the_limit_is_refused_unread(
    app: TidingsApp, services: Services, project: Project
) -> None:
    sent: list[dict[str, Any]] = []
    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        received = True
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/batch",
        "raw_path": b"/v1/batch",
        "query_string": b"",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(MAX_BATCH_BYTES + 1).encode()),
            (b"authorization", basic(project.pk)["Authorization"].encode()),
        ],
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 413
    assert not received


# -- timestamps -----------------------------------------------------------------------------


async def test_clock_skew_is_corrected_with_sent_at(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    # The device's clock is three days fast; the event happened an hour before sending.
    skewed_now = datetime.now(UTC) + timedelta(days=3)
    happened = skewed_now - timedelta(hours=1)
    body = {
        "userId": "u_skew",
        "event": "Offline",
        "originalTimestamp": iso(happened),
        "timestamp": "2000-01-01T00:00:00Z",  # originalTimestamp wins
        "sentAt": iso(skewed_now),
    }
    before = time.time()
    assert_success(await post(client, "track", project.pk, body))
    after = time.time()
    await drain(services)
    [row] = stored(services)
    expected_low = (before - 3600) * 1_000_000 - 1000
    expected_high = (after - 3600) * 1_000_000 + 1000
    assert expected_low <= row["created_at"] <= expected_high


async def test_the_batch_sent_at_applies_to_its_messages_and_timestamp_is_corrected_too(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    skewed_now = datetime.now(UTC) - timedelta(days=10)
    batch = {
        "sentAt": iso(skewed_now),
        "batch": [
            {
                "type": "track",
                "userId": "u",
                "event": "A",
                "timestamp": iso(skewed_now - timedelta(minutes=5)),
                "sentAt": "1990-01-01T00:00:00Z",  # the batch's sentAt wins
            },
        ],
    }
    before = time.time()
    assert_success(await post(client, "batch", project.pk, batch))
    after = time.time()
    await drain(services)
    [row] = stored(services)
    assert (before - 300) * 1e6 - 1000 <= row["created_at"] <= (after - 300) * 1e6 + 1000


async def test_without_sent_at_the_timestamp_is_kept_else_the_receive_time(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    historical = datetime(2024, 2, 29, 12, 0, tzinfo=UTC)
    batch = {
        "batch": [
            {"type": "track", "userId": "u", "event": "Old", "timestamp": iso(historical)},
            {"type": "track", "userId": "u", "event": "Now"},
        ]
    }
    before = time.time_ns() // 1000
    assert_success(await post(client, "batch", project.pk, batch))
    after = time.time_ns() // 1000
    await drain(services)
    old, now = stored(services)
    assert old["created_at"] == micros(historical)
    assert before <= now["created_at"] <= after


async def test_a_correction_outside_the_calendar_keeps_the_client_time(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    body = {
        "userId": "u",
        "event": "Absurd",
        "timestamp": "9999-06-01T00:00:00Z",
        "sentAt": "0001-06-01T00:00:00Z",
    }
    assert_success(await post(client, "track", project.pk, body))
    await drain(services)
    [row] = stored(services)
    assert row["created_at"] == micros(datetime(9999, 6, 1, tzinfo=UTC))
    timeline = await client.get("/api/client/users/u/events", headers=bearer(project.sk))
    assert timeline.status_code == 200


# -- duplicates -----------------------------------------------------------------------------


async def test_a_message_id_is_stored_once(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    message = {"type": "track", "userId": "u_d", "event": "Paid", "messageId": "dup-1"}
    batch = {"batch": [message, message, {**message, "messageId": "dup-2"}]}
    assert_success(await post(client, "batch", project.pk, batch))
    assert_success(await post(client, "batch", project.pk, batch))  # an SDK retry
    assert_success(await post(client, "track", project.pk, message))
    await drain(services)
    assert sorted(r["message_id"] for r in stored(services)) == ["dup-1", "dup-2"]


async def test_messages_without_a_message_id_get_distinct_ones(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    message = {"type": "track", "userId": "u", "event": "E"}
    assert_success(await post(client, "batch", project.pk, {"batch": [message, message]}))
    assert_success(await post(client, "batch", project.pk, {"batch": [message]}))
    await drain(services)
    ids = [r["message_id"] for r in stored(services)]
    assert len(ids) == len(set(ids)) == 3


# -- invalid input --------------------------------------------------------------------------


async def test_every_problem_of_a_batch_is_listed_and_nothing_is_written(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    batch = {
        "batch": [
            {"type": "track", "userId": "u", "event": "Fine"},
            {"type": "track", "event": "No ids"},
            {"type": "identify", "userId": "u", "traits": {"email": "sam@"}},
            {"type": "alias", "userId": "u"},
            {"type": "jump", "userId": "u"},
            {"type": "track", "userId": True, "event": ""},
            {"type": "group", "userId": "u"},
            "not an object",
            {"type": "track", "userId": "u", "event": "E", "properties": [1], "context": 3},
            {"type": "track", "userId": "u", "event": "E", "timestamp": "yesterday"},
        ]
    }
    response = await post(client, "batch", project.pk, batch)
    problem = assert_problem(response, 400, "parameter_missing")
    assert problem["param"] == "batch[1].userId"
    listed = {(e["param"], e["code"]) for e in problem["errors"]}
    assert listed == {
        ("batch[1].userId", "parameter_missing"),
        ("batch[2].traits.email", "parameter_invalid_format"),
        ("batch[3].previousId", "parameter_missing"),
        ("batch[4].type", "parameter_invalid_format"),
        ("batch[5].userId", "parameter_invalid_format"),
        ("batch[5].event", "parameter_invalid_empty"),
        ("batch[6].groupId", "parameter_missing"),
        ("batch[7]", "parameter_invalid_format"),
        ("batch[8].properties", "parameter_invalid_format"),
        ("batch[8].context", "parameter_invalid_format"),
        ("batch[9].timestamp", "parameter_invalid_format"),
    }
    await assert_nothing_written(services)


async def test_content_problems_alone_answer_422(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    body = {"userId": "u", "traits": {"email": "sam@", "phone": "12"}}
    problem = assert_problem(
        await post(client, "identify", project.pk, body), 422, "validation_failed"
    )
    assert [e["param"] for e in problem["errors"]] == ["traits.email", "traits.phone"]
    await assert_nothing_written(services)


@pytest.mark.parametrize(
    ("path", "body", "status", "code", "param"),
    [
        ("batch", {}, 400, "parameter_missing", "batch"),
        ("batch", {"batch": []}, 400, "parameter_invalid_empty", "batch"),
        ("batch", {"batch": {}}, 400, "parameter_invalid_format", "batch"),
        ("batch", {"batch": [], "sentAt": "soon"}, 400, "parameter_invalid_empty", "batch"),
        ("batch", [{"type": "track"}], 400, "parameter_invalid_format", "body"),
        ("batch", b"{not json", 400, "parameter_invalid_format", "body"),
        ("batch", b"", 400, "parameter_missing", "body"),
        ("track", {"type": "identify", "userId": "u"}, 400, "parameter_invalid_format", "type"),
        ("track", {"userId": "u"}, 400, "parameter_missing", "event"),
        ("track", {"userId": "u", "event": "x" * 256}, 400, "parameter_invalid_format", "event"),
        ("track", {"userId": "x" * 256, "event": "E"}, 400, "parameter_invalid_format", "userId"),
        ("alias", {"previousId": "a"}, 400, "parameter_missing", "userId"),
        ("page", {"userId": "u", "name": 5}, 400, "parameter_invalid_format", "name"),
    ],
)
async def test_invalid_requests(
    client: httpx.AsyncClient,
    services: Services,
    project: Project,
    path: str,
    body: Any,
    status: int,
    code: str,
    param: str,
) -> None:
    problem = assert_problem(await post(client, path, project.pk, body), status, code)
    assert problem["param"] == param
    await assert_nothing_written(services)


# -- per-item outcomes ----------------------------------------------------------------------


async def test_per_item_outcomes_store_the_valid_messages_and_report_the_others(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    batch = {
        "batch": [
            {"type": "track", "userId": "u_o", "event": "Good", "messageId": "good-1"},
            {"type": "track", "event": "No ids", "messageId": "bad-1"},
            {"type": "identify", "userId": "u_o", "traits": {"email": "sam@"}},
            {"type": "track", "userId": "u_o", "event": "Big", "properties": {"x": "y" * 33_000}},
            {"type": "track", "userId": "u_o", "event": "No id"},
            {"type": "identify", "userId": "u_o", "traits": {"plan": "pro"}, "messageId": "i-1"},
        ]
    }
    response = await post(client, "batch", project.pk, batch, params={"outcomes": "1"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (3, 3)
    results = body["results"]
    assert [r["index"] for r in results] == list(range(6))
    assert results[0] == {"index": 0, "messageId": "good-1", "accepted": True}
    assert results[1]["messageId"] == "bad-1"
    assert results[1]["error"]["code"] == "parameter_missing"
    assert results[1]["error"]["param"] == "batch[1].userId"
    assert results[2]["messageId"] is None
    assert results[2]["error"]["code"] == "validation_failed"
    assert results[2]["error"]["errors"][0]["param"] == "batch[2].traits.email"
    assert results[3]["error"]["code"] == "payload_too_large"
    assert results[4]["accepted"] is True and results[4]["messageId"]  # generated
    assert results[5] == {"index": 5, "messageId": "i-1", "accepted": True}
    await drain(services)
    rows = stored(services)
    assert sorted(r["name"] for r in rows) == ["Good", "No id"]
    assert results[4]["messageId"] in {r["message_id"] for r in rows}
    assert (await profile(client, project, "u_o"))["data"] == {"plan": "pro"}


async def test_per_item_outcomes_on_a_single_message_endpoint(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    response = await post(client, "track", project.pk, {"event": "E"}, params={"outcomes": "1"})
    assert response.status_code == 200
    assert response.json()["rejected"] == 1
    await assert_nothing_written(services)


async def test_an_empty_user_id_is_no_id_as_rudderstack_sends_it(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    body = {"userId": "", "anonymousId": "rs-anon", "event": "E", "messageId": "rs-1"}
    assert_success(await post(client, "track", project.pk, body))
    refused = await post(client, "track", project.pk, {"userId": "", "event": "E"})
    assert assert_problem(refused, 400, "parameter_missing")["param"] == "userId"
    blank = await post(
        client, "track", project.pk, {"userId": " ", "anonymousId": "a", "event": "E"}
    )
    assert_problem(blank, 400, "parameter_invalid_empty")
    await drain(services)
    assert [(e["anonymous_id"], e["external_id"]) for e in stored(services)] == [("rs-anon", None)]


async def test_identify_traits_sent_only_in_context_as_rudderstack_sends_them(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    rudder = {
        "userId": "rs-u",
        "anonymousId": "",
        "context": {"traits": {"email": "Sam@Example.com", "plan": "pro"}},
    }
    assert_success(await post(client, "identify", project.pk, rudder))
    both = {
        "userId": "seg-u",
        "traits": {"plan": "team"},
        "context": {"traits": {"email": "old@example.com", "plan": "cached"}},
    }
    assert_success(await post(client, "identify", project.pk, both))
    bad = {"userId": "rs-u", "context": {"traits": {"email": "nope"}}}
    problem = assert_problem(
        await post(client, "identify", project.pk, bad), 422, "validation_failed"
    )
    assert problem["param"] == "context.traits.email"
    await drain(services)
    rs = await profile(client, project, "rs-u")
    assert rs["email"] == "Sam@example.com" and rs["data"] == {"plan": "pro"}
    seg = await profile(client, project, "seg-u")  # both: a top-level trait wins its key
    assert seg["email"] == "old@example.com" and seg["data"] == {"plan": "team"}


async def test_request_level_problems_stay_errors_with_outcomes(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    params = {"outcomes": "1"}
    response = await post(client, "batch", project.pk, {"batch": []}, params=params)
    assert_problem(response, 400, "parameter_invalid_empty")
    response = await post(client, "batch", project.pk, {"batch": []}, params={"outcomes": "x"})
    assert_problem(response, 400, "parameter_invalid_format")
    response = await post(client, "batch", None, {"batch": [{}]}, params=params)
    assert_problem(response, 401, "authentication_required")
    await assert_nothing_written(services)


async def test_the_openapi_document_describes_v1(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    for path in ("/v1/track", "/v1/identify", "/v1/alias", "/v1/page", "/v1/screen"):
        assert schema["paths"][path]["post"]["security"] == [{"writeKey": []}]
    assert "/v1/group" in schema["paths"] and "/v1/import" in schema["paths"]
    batch = schema["paths"]["/v1/batch"]["post"]
    assert batch["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SegmentBatch"
    }
    assert "/v1/t" not in schema["paths"]
    assert schema["components"]["securitySchemes"]["writeKey"]["scheme"] == "basic"
