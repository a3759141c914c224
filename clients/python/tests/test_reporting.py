"""Reporting readers: exact requests, typed rows, cursor iteration (no network)."""

import datetime as dt
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

import tidings_client as tc
from tidings_client.testing import RecordingTransport, problem_response

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
END = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)


def row(i):
    return {
        "id": f"evt_{i}",
        "name": "Opened",
        "created_at": f"2026-01-01T00:00:0{i}.000Z",
        "user": {"external_id": "u1", "anonymous_id": None},
        "campaign_id": 7 if i % 2 else None,
    }


def paged(request):
    """Three events over two pages, as the server pages them."""
    if request.url.path.endswith("/events/aggregations"):
        body = {
            "results": [
                {
                    "event_name": "Opened",
                    "day": "2026-01-01",
                    "count": 3,
                    "unique_user_count": 2,
                    "first_seen_at": "2026-01-01T00:00:00.000Z",
                    "last_seen_at": "2026-01-01T10:00:00.000Z",
                }
            ],
            "truncated": False,
        }
        return httpx.Response(200, json=body)
    cursor = dict(parse_qsl(request.url.query.decode())).get("cursor")
    if cursor is None:
        body = {"results": [row(1), row(2)], "nextCursor": "c2", "prevCursor": None, "limit": 2}
    else:
        body = {"results": [row(3)], "nextCursor": None, "prevCursor": "c1", "limit": 2}
    return httpx.Response(200, json=body)


@pytest.fixture
def transport():
    return RecordingTransport(paged)


def query(request):
    return parse_qsl(urlsplit(str(request.url)).query)


def test_events_iterates_every_page_with_the_filters(transport):
    with tc.Client("sk_test", base_url="http://tidings.test", transport=transport) as client:
        got = list(
            client.events(
                START,
                END,
                event_names=["Opened", "Clicked"],
                external_ids=["u1"],
                campaign_ids=[7],
                direction="asc",
                page_size=2,
            )
        )
    assert [e.id for e in got] == ["evt_1", "evt_2", "evt_3"]
    first = got[0]
    assert first == tc.Event(
        id="evt_1",
        name="Opened",
        created_at=dt.datetime(2026, 1, 1, 0, 0, 1, tzinfo=dt.UTC),
        user=tc.EventUser(external_id="u1"),
        campaign_id=7,
    )
    one, two = transport.requests
    assert one.method == "GET" and one.url.path == "/api/client/events"
    assert one.headers["Authorization"] == "Bearer sk_test"
    assert query(one) == [
        ("from", "2026-01-01T00:00:00+00:00"),
        ("to", "2026-01-02T00:00:00+00:00"),
        ("event_name[]", "Opened"),
        ("event_name[]", "Clicked"),
        ("external_id[]", "u1"),
        ("campaign_id[]", "7"),
        ("include_payload", "false"),
        ("direction", "asc"),
        ("limit", "2"),
    ]
    assert query(two)[-1] == ("cursor", "c2")


async def test_async_events_and_aggregations(transport):
    async with tc.AsyncClient("sk_test", base_url="http://tidings.test", transport=transport) as c:
        got = [e.id async for e in c.events("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z")]
        rows = await c.aggregations(START, END, group_by=["event_name", "day"])
    assert got == ["evt_1", "evt_2", "evt_3"]
    assert rows == [
        tc.AggregationRow(
            count=3,
            unique_user_count=2,
            first_seen_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            last_seen_at=dt.datetime(2026, 1, 1, 10, tzinfo=dt.UTC),
            event_name="Opened",
            day=dt.date(2026, 1, 1),
        )
    ]
    assert ("group_by[]", "day") in query(transport.requests[-1])


def test_arguments_are_checked_before_sending(transport):
    with tc.Client("sk_test", base_url="http://tidings.test", transport=transport) as client:
        with pytest.raises(ValueError, match="timezone-aware"):
            client.events_page(dt.datetime(2026, 1, 1), END)
        with pytest.raises(ValueError, match="group_by"):
            client.aggregations(START, END, group_by=["week"])
        with pytest.raises(ValueError, match="limit"):
            client.events_page(START, END, limit=101)
    assert transport.requests == []


def test_a_bad_filter_raises_the_servers_error():
    def refuse(request):
        return problem_response(422, "validation_failed", "from is after to.")

    transport = RecordingTransport(refuse)
    client = tc.Client("sk_test", base_url="http://tidings.test", transport=transport)
    with client, pytest.raises(tc.ValidationError) as caught:
        client.aggregations(END, START)
    assert caught.value.code == "validation_failed"
    assert transport.requests[0].content == b""


async def test_async_batching_client_reads_events_and_aggregations(transport):
    client = tc.AsyncBatchingClient("sk_test", base_url="http://tidings.test", transport=transport)
    try:
        got = [e.id async for e in client.events(START, END, page_size=2)]
        page = await client.events_page(START, END, limit=2)
        rows = await client.aggregations(START, END, group_by=["event_name"])
    finally:
        await client.aclose()
    assert got == ["evt_1", "evt_2", "evt_3"]
    assert [e.id for e in page.results] == ["evt_1", "evt_2"] and page.next_cursor == "c2"
    assert rows[0].count == 3 and rows[0].event_name == "Opened"
    paths = [r.url.path for r in transport.requests]
    assert paths == ["/api/client/events"] * 3 + ["/api/client/events/aggregations"]
