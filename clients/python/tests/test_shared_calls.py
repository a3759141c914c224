"""Every client offers the same calls, defined once: same signatures and docs, same bytes, and
checks that run when the call runs (at ``await`` or at the first page), not before."""

import asyncio
import datetime as dt
import inspect
import json
import threading
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

import tidings_client as tc
from tidings_client.testing import RecordingTransport

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
END = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)

WRITES = [
    "track",
    "identify",
    "alias",
    "register_device",
    "upsert_users",
    "trigger_campaign",
    "trigger_journey",
]
READS = ["events_page", "events", "aggregations"]


def parameters(method):
    return list(inspect.signature(method).parameters.values())


@pytest.mark.parametrize("name", WRITES + READS)
def test_client_and_async_client_have_the_same_call(name):
    sync, awaited = getattr(tc.Client, name), getattr(tc.AsyncClient, name)
    assert parameters(sync) == parameters(awaited)
    assert parameters(sync)[0].name == "self"
    assert sync.__doc__ == awaited.__doc__ and sync.__doc__.strip()
    assert (sync.__name__, sync.__qualname__) == (name, f"Client.{name}")
    assert awaited.__qualname__ == f"AsyncClient.{name}"
    if name == "events":
        assert inspect.isgeneratorfunction(sync) and inspect.isasyncgenfunction(awaited)
        assert inspect.signature(sync).return_annotation == "Iterator[Event]"
        assert inspect.signature(awaited).return_annotation == "AsyncIterator[Event]"
    else:
        assert inspect.iscoroutinefunction(awaited) and not inspect.iscoroutinefunction(sync)
        returns = inspect.signature(sync).return_annotation
        assert inspect.signature(awaited).return_annotation == returns


@pytest.mark.parametrize("name", WRITES)
def test_the_batching_clients_have_the_same_calls(name):
    expected = parameters(getattr(tc.Client, name))
    assert parameters(getattr(tc.BatchingClient, name)) == expected
    assert parameters(getattr(tc.AsyncBatchingClient, name)) == expected
    assert inspect.iscoroutinefunction(getattr(tc.AsyncBatchingClient, name))
    assert getattr(tc.AsyncBatchingClient, name).__qualname__ == f"AsyncBatchingClient.{name}"


def test_help_shows_the_calls_parameters():
    assert str(inspect.signature(tc.Client.track)) == (
        "(self, event: 'str', properties: 'Mapping[str, Any] | None' = None, *, "
        "external_id: 'str | None' = None, anonymous_id: 'str | None' = None, "
        "user: 'Mapping[str, Any] | None' = None, "
        "created_at: 'dt.datetime | str | None' = None, message_id: 'str | None' = None) -> 'str'"
    )
    assert inspect.signature(tc.AsyncClient.upsert_users).return_annotation == "UpsertResult"
    assert inspect.signature(tc.Client.identify).return_annotation == "None"
    assert tc.BatchingClient.track.__doc__.startswith("Queue an event")


async def test_async_checks_run_when_awaited():
    transport = RecordingTransport()
    async with tc.AsyncClient("sk", base_url="http://t", transport=transport) as client:
        pending = client.identify()  # no id: refused, but only once awaited
        with pytest.raises(ValueError, match="identify"):
            await pending
        pages = client.events(dt.datetime(2026, 1, 1), END)  # naive start
        with pytest.raises(ValueError, match="timezone-aware"):
            await anext(pages)
    assert transport.requests == []


def test_events_checks_run_at_the_first_page():
    transport = RecordingTransport()
    with tc.Client("sk", base_url="http://t", transport=transport) as client:
        pages = client.events(START, END, direction="sideways")
        with pytest.raises(ValueError, match="direction"):
            next(pages)
    assert transport.requests == []


@pytest.mark.parametrize("kind", ["campaign", "journey"])
def test_triggers_send_every_field_where_it_belongs(kind):
    transport = RecordingTransport()
    client = tc.Client("sk", base_url="http://t", transport=transport)
    getattr(client, f"trigger_{kind}")(
        3,
        external_id="u",
        email="e@example.com",
        phone="+61400000000",
        timezone="Australia/Melbourne",
        locale="en-AU",
        traits={"planName": "pro"},
        event={"orderId": "o1"},
    )
    assert json.loads(transport.requests[0].content) == {
        "user": {
            "external_id": "u",
            "email": "e@example.com",
            "phone": "+61400000000",
            "timezone": "Australia/Melbourne",
            "locale": "en-AU",
            "data": {"plan_name": "pro"},
        },
        "event": {"order_id": "o1"},
    }


def test_reporting_filters_land_in_their_own_parameters():
    def answer(request):
        return httpx.Response(200, json={"results": []})

    transport = RecordingTransport(answer)
    client = tc.Client("sk", base_url="http://t", transport=transport)
    filters = {
        "event_names": ["Opened"],
        "external_ids": ["u1"],
        "anonymous_ids": ["a1"],
        "campaign_ids": [7],
    }
    client.aggregations(START, END, group_by=["user"], limit=5, **filters)
    client.events_page(START, END, limit=5, **filters)
    expected = [
        ("from", "2026-01-01T00:00:00+00:00"),
        ("to", "2026-01-02T00:00:00+00:00"),
        ("event_name[]", "Opened"),
        ("external_id[]", "u1"),
        ("anonymous_id[]", "a1"),
        ("campaign_id[]", "7"),
    ]
    aggregations, page = (parse_qsl(urlsplit(str(r.url)).query) for r in transport.requests)
    assert aggregations == [*expected, ("group_by[]", "user"), ("limit", "5")]
    assert page[: len(expected)] == expected


def not_json(request):
    return httpx.Response(200, content=b"<html>proxy</html>", headers={"X-Request-Id": "r1"})


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda c: c.upsert_users([{"external_id": "u"}]),
            "the server answered upsert_users with a body that is not JSON",
        ),
        (lambda c: c.events_page(START, END), "the server answered with a body that is not JSON"),
        (lambda c: c.aggregations(START, END), "the server answered with a body that is not JSON"),
    ],
)
async def test_an_answer_that_is_not_json_raises_on_every_client(call, message):
    sync = tc.Client("sk", base_url="http://t", transport=RecordingTransport(not_json))
    with pytest.raises(tc.TidingsError) as raised:
        call(sync)
    assert (raised.value.message, raised.value.status, raised.value.request_id) == (
        message,
        200,
        "r1",
    )
    awaited = tc.AsyncClient("sk", base_url="http://t", transport=RecordingTransport(not_json))
    with pytest.raises(tc.TidingsError) as raised:
        await call(awaited)
    assert (raised.value.message, raised.value.status, raised.value.request_id) == (
        message,
        200,
        "r1",
    )


async def test_async_batching_calls_that_wait_run_in_a_worker_thread():
    threads = []

    def record(request):
        threads.append(threading.get_ident())

    transport = RecordingTransport(record)
    async with tc.AsyncBatchingClient("sk", base_url="http://t", transport=transport) as client:
        await client.identify(external_id="u")
        await client.trigger_journey(2, external_id="u")
        loop_thread = threading.get_ident()
        assert asyncio.get_running_loop().is_running()
    assert len(threads) == 2 and loop_thread not in threads
