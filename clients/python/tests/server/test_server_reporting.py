"""The reporting readers against a real Tidings server."""

import datetime as dt
import uuid

import pytest

import tidings_client as tc
from helpers import wait_until

pytestmark = pytest.mark.server


def test_events_and_aggregations_read_what_was_tracked(tidings_server):
    ext = f"u_{uuid.uuid4().hex[:12]}"
    name = f"Reported {uuid.uuid4().hex[:6]}"
    with tc.Client(tidings_server.public_key, base_url=tidings_server.url) as pk:
        for i in range(5):
            pk.track(name, {"i": i}, external_id=ext, created_at=f"2026-01-01T00:00:0{i}Z")
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    end = start + dt.timedelta(days=1)
    with tc.Client(tidings_server.secret_key, base_url=tidings_server.url) as sk:

        def all_there():
            return len(list(sk.events(start, end, event_names=[name], page_size=2))) == 5

        wait_until(all_there, 20.0)
        got = list(
            sk.events(
                start, end, event_names=[name], include_payload=True, direction="asc", page_size=2
            )
        )
        assert [e.data for e in got] == [{"i": i} for i in range(5)]
        assert {e.user.external_id for e in got} == {ext}
        (row,) = sk.aggregations(start, end, event_names=[name], group_by=["event_name", "day"])
        assert (row.event_name, row.day, row.count, row.unique_user_count) == (
            name,
            dt.date(2026, 1, 1),
            5,
            1,
        )
        with pytest.raises(tc.ValidationError):
            sk.aggregations(end, start)
