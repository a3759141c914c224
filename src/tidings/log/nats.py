"""The ingest log on NATS JetStream (``TIDINGS_LOG_URL=nats://host:4222``).

One stream (``TIDINGS_LOG`` by default) with one subject per partition,
``<prefix>.<partition>`` (``tidings.log.0`` …), file storage and a duplicate window. A log
position is the stream sequence: it grows across every partition, like the database log's.

- ``append`` publishes every entry of the batch without waiting in between, then waits
  for all the acknowledgements; nothing is reported appended before its ack. Each message
  carries ``Nats-Msg-Id`` (a hash of project and ``message_id`` for events, else a fresh
  ULID), so the server drops a second copy within the duplicate window.
- Idempotency records stay in the database, where the API reads them: a request with an
  ``Idempotency-Key`` first claims its record without an answer (in flight: ``INSERT …
  ON CONFLICT DO NOTHING``, own transaction), then publishes, then stores the answer. If
  publishing fails the claim is deleted again. If the process dies in between (or the
  answer cannot be stored), the record stays in flight: a retry after the in-flight
  window publishes the entries again (``AppendRequest.resume``) and answers. The entries
  of a keyed request carry message ids derived from the key, so the server drops a
  second copy within the duplicate window (events are deduplicated by ``message_id``
  beyond it). A claim stored with its answer before publishing would let a retry replay
  ``204`` for entries that never reached the log. Requests without a key never touch
  the database here.
- Reads go through one cached pull consumer per filter (one per partition for ``read``,
  one unfiltered for ``read_all``): ephemeral, no acks, positioned by stream sequence and
  re-created whenever the caller asks for another position than the one it stands at, or
  a delivery gap shows it skipped something.
- ``trim`` compacts the stream below its oldest unprocessed entry (by ``log_positions``),
  never purges by subject: on nats-server 2.9 that moves the unfiltered consumers past
  other partitions' unprocessed entries.
- nats-py is asyncio; Tidings calls the log from threads. The log runs its own event loop
  in a daemon thread, and every call waits a bounded time for it.

See docs/jetstream.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import msgspec
import sqlalchemy as sa
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamInfo,
)
from nats.js.errors import APIError, NotFoundError
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from tidings.domain.ids import new_ulid
from tidings.domain.ingest import (
    AppendOutcome,
    AppendRequest,
    EntryKind,
    IdempotencyRecord,
    LogEntry,
    LogRecord,
)
from tidings.store.database import Writer
from tidings.store.idempotency import store_answer
from tidings.store.tables import idempotency_keys, log_positions

__all__ = ["LogUnavailable", "NatsLog", "NatsOptions", "StreamMismatch"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# The envelope: (project_id, kind, accepted_at, payload), JSON like the database log's
# payloads (JSON integers have no size limit). The partition is the subject's last token.
_Envelope = tuple[int, EntryKind, int, dict[str, Any]]
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(_Envelope).decode
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_PREFIX = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_CONSUMER_IDLE = 300.0  # seconds before the server drops a read consumer nobody pulls from


class LogUnavailable(RuntimeError):
    """JetStream did not answer in time, or answered with an error."""


class StreamMismatch(RuntimeError):
    """The stream on the server does not fit this configuration."""


@dataclass(frozen=True)
class NatsOptions:
    """``nats://host:4222[,nats://other:4222][?stream=…&prefix=…&replicas=…&duplicate_window=…&timeout=…]``."""

    servers: list[str]
    stream: str = "TIDINGS_LOG"
    prefix: str = "tidings.log"
    replicas: int = 1
    duplicate_window: float = 120.0  # seconds
    timeout: float = 5.0  # seconds any call waits for the server

    @classmethod
    def from_url(cls, url: str) -> NatsOptions:
        base, _, query = url.partition("?")
        servers = [s.strip() for s in base.split(",") if s.strip()]
        if not servers or not all(s.startswith(("nats://", "tls://")) for s in servers):
            raise ValueError(f"TIDINGS_LOG_URL: expected nats://host:port, got {base!r}")
        values: dict[str, Any] = {}
        for name, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
            if name in ("stream", "prefix"):
                values[name] = value
            elif name == "replicas":
                values[name] = int(value)
            elif name in ("duplicate_window", "timeout"):
                values[name] = float(value)
            else:
                raise ValueError(f"TIDINGS_LOG_URL: unknown option {name!r}")
        options = cls(servers=servers, **values)
        if not _NAME.match(options.stream):
            raise ValueError(f"TIDINGS_LOG_URL: invalid stream name {options.stream!r}")
        if not _PREFIX.match(options.prefix):
            raise ValueError(f"TIDINGS_LOG_URL: invalid subject prefix {options.prefix!r}")
        if options.timeout <= 0 or options.duplicate_window <= 0 or options.replicas < 1:
            raise ValueError("TIDINGS_LOG_URL: timeout, duplicate_window, replicas must be > 0")
        return options


@dataclass
class _Cursor:
    """A read consumer and where it stands: the stream and consumer sequences of the
    last message it delivered (``after`` is the start - 1 before the first)."""

    name: str
    after: int
    delivered: int = 0


class _CursorLost(Exception):
    """The read consumer is gone or skipped a delivery: position a new one."""


@dataclass
class _Pull:
    limit: int
    done: asyncio.Future[None]
    messages: list[Msg] = field(default_factory=list)
    status: str | None = None

    async def add(self, msg: Msg) -> None:
        if self.done.done():
            return
        status = msg.headers.get("Status") if msg.headers else None
        if status:
            self.status = status
            self.done.set_result(None)
            return
        self.messages.append(msg)
        if len(self.messages) >= self.limit:
            self.done.set_result(None)


def _delivery(reply: str) -> tuple[int, int]:
    """(stream sequence, consumer sequence) from a JetStream delivery's reply subject."""
    tokens = reply.split(".")
    if len(tokens) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
        return int(tokens[5]), int(tokens[6])
    if len(tokens) >= 11:  # with domain and account hash (newer servers)
        return int(tokens[7]), int(tokens[8])
    raise _CursorLost(f"unexpected delivery subject {reply!r}")


def _msg_id(entry: LogEntry, record: IdempotencyRecord | None, index: int) -> str:
    """The ``Nats-Msg-Id``: from the event's ``message_id``, else from the request's
    idempotency key and the entry's place in it (the same again when the request is
    retried), else new."""
    message_id = entry.payload.get("message_id")
    if message_id is not None:
        source = f"{entry.project_id}\x1f{message_id}"
    elif record is not None:
        source = f"{record.project_id}\x1e{record.key}\x1e{record.request_hash}\x1e{index}"
    else:
        return new_ulid()
    # Hashed: message ids and keys come from clients (any characters, up to 255 of them).
    return hashlib.blake2b(source.encode(), digest_size=16).hexdigest()


class NatsLog:
    """The ingest log as a JetStream stream; implements ``tidings.log.port.IngestLog``."""

    def __init__(self, url: str, engine: Writer, reader: Engine, partitions: int) -> None:
        options = NatsOptions.from_url(url)
        self.options = options
        self.partitions = partitions
        self.engine = engine
        self.reader = reader
        self.stream = options.stream
        self._timeout = options.timeout
        self._subjects = [f"{options.prefix}.{p}" for p in range(partitions)]
        self._prefix_len = len(options.prefix) + 1
        insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        # RETURNING tells whether the claim went in: psycopg under SQLAlchemy 2.1 reports
        # no rowcount for an INSERT (-1), which read as "lost" refused every fresh key.
        self._insert_claim = (
            insert(idempotency_keys).on_conflict_do_nothing().returning(idempotency_keys.c.key)
        )
        self._cursors: dict[str | None, _Cursor] = {}
        self._highest = 0  # the highest last_seq seen: it must never go down
        self._last_error = ""
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tidings-nats", daemon=True
        )
        self._thread.start()
        self._nc = Client()
        self._read_lock = asyncio.Lock()  # only used on self._loop
        try:
            self._run(self._open(), 3 * self._timeout)
        except BaseException:
            self.close()
            raise

    # -- the event loop thread ---------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self._closed:
            coro.close()
            raise LogUnavailable("the NATS log is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout or self._timeout + 1)
        except TimeoutError:
            if future.done():
                raise  # the coroutine's own error
            future.cancel()
            raise LogUnavailable("NATS did not answer in time") from None

    async def _open(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._nc.connect(
                    servers=self.options.servers,
                    name="tidings",
                    connect_timeout=max(1, min(2, int(self._timeout))),
                    reconnect_time_wait=1,
                    max_reconnect_attempts=-1,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
        except TimeoutError:
            raise LogUnavailable(
                f"could not connect to NATS at {', '.join(self.options.servers)} "
                f"within {self._timeout:g} s"
            ) from None
        if self._nc.max_payload < 1_100_000:  # the API accepts bodies of 1 MB
            logger.warning(
                "NATS max_payload is %d bytes: an item near the API's 1 MB limit would fail "
                "its whole append; set max_payload: 2MB on the server",
                self._nc.max_payload,
            )
        self._js = self._nc.jetstream(timeout=self._timeout, publish_async_max_pending=20_000)
        await self._ensure_stream()

    async def _on_error(self, error: Exception) -> None:
        text = f"{type(error).__name__}: {error}"
        if text != self._last_error:  # one line per kind of trouble, not per retry
            self._last_error = text
            logger.warning("NATS: %s", text)

    async def _on_disconnected(self) -> None:
        if not self._closed:
            logger.warning("NATS: disconnected; reconnecting")

    async def _on_reconnected(self) -> None:
        self._last_error = ""
        url = self._nc.connected_url
        logger.warning("NATS: reconnected to %s", url.netloc if url else "?")

    def close(self) -> None:
        """Drop the read consumers, close the connection, stop the loop thread."""
        if self._closed:
            return
        self._closed = True
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(self._timeout)
        except Exception:
            logger.warning("closing the NATS connection failed", exc_info=True)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(self._timeout)
            if not self._thread.is_alive():
                self._loop.close()

    async def _shutdown(self) -> None:
        try:
            if self._nc.is_connected:
                names = [cursor.name for cursor in self._cursors.values()]
                await asyncio.gather(*(self._delete_consumer(n) for n in names))
            self._cursors.clear()
            await self._nc.close()
        except Exception:  # e.g. the connection was lost meanwhile: nothing to flush
            logger.debug("closing the NATS connection", exc_info=True)
        finally:  # let what nats-py started finish before the loop stops
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- the stream --------------------------------------------------------------------

    async def _ensure_stream(self) -> None:
        try:
            info = await self._js.stream_info(self.stream)
        except NotFoundError:
            config = StreamConfig(
                name=self.stream,
                description=f"Tidings ingest log, {self.partitions} partitions",
                subjects=self._subjects,
                storage=StorageType.FILE,
                retention=RetentionPolicy.LIMITS,
                discard=DiscardPolicy.NEW,  # a full stream refuses appends, never drops
                duplicate_window=self.options.duplicate_window,
                num_replicas=self.options.replicas,
            )
            try:
                info = await self._js.add_stream(config)
            except APIError:  # created meanwhile by another process: check what it made
                info = await self._js.stream_info(self.stream)
        self._check_stream(info)
        await self._start_after_positions(info)

    def _check_stream(self, info: StreamInfo) -> None:
        subjects = set(info.config.subjects or [])
        if subjects == set(self._subjects):
            if info.config.storage != StorageType.FILE:
                logger.warning("NATS stream %s does not use file storage", self.stream)
            return
        prefix = self.options.prefix + "."
        ours = [s for s in subjects if s.startswith(prefix) and s[len(prefix) :].isdigit()]
        if len(ours) == len(subjects):
            raise StreamMismatch(
                f"NATS stream {self.stream} has {len(subjects)} partitions but "
                f"TIDINGS_LOG_PARTITIONS is {self.partitions}. Set it back to "
                f"{len(subjects)}, or drain the log and use a new stream (?stream=NAME)."
            )
        raise StreamMismatch(
            f"NATS stream {self.stream} has subjects {sorted(subjects)[:5]}, expected "
            f"{self._subjects[0]} … {self._subjects[-1]}: is it another application's?"
        )

    async def _start_after_positions(self, info: StreamInfo) -> None:
        """Stream sequences must stay above the positions the database already stores (a
        consumer skips entries at or below its position): a new or emptied stream starts
        after them; a stream behind them is refused."""
        stored = await asyncio.to_thread(self._stored_positions)
        highest = max(stored.values(), default=0)
        last = info.state.last_seq
        if highest <= last:
            return
        if info.state.messages == 0:
            # Purging an empty stream up to N makes N its next sequence.
            await self._purge({"seq": highest + 1})
            logger.info("NATS stream %s starts at %d", self.stream, highest + 1)
            return
        raise StreamMismatch(
            f"NATS stream {self.stream} ends at sequence {last} but the database has "
            f"processed log positions up to {highest}: was the stream replaced? Restore "
            "it, or process what it holds and reset log_positions."
        )

    def _stored_positions(self) -> dict[int, int]:
        if not sa.inspect(self.reader).has_table(log_positions.name):
            return {}  # not migrated yet: nothing processed
        with self.reader.connect() as conn:
            rows = conn.execute(sa.select(log_positions.c.partition, log_positions.c.seq))
            return {int(p): int(s) for p, s in rows}

    async def _purge(self, request: dict[str, Any]) -> int:
        reply = await self._nc.request(
            f"$JS.API.STREAM.PURGE.{self.stream}", json.dumps(request).encode(), self._timeout
        )
        answer = json.loads(reply.data)
        if "error" in answer:
            raise APIError.from_error(answer["error"])
        return int(answer.get("purged", 0))

    # -- append ------------------------------------------------------------------------

    def append(self, requests: list[AppendRequest]) -> list[AppendOutcome]:
        outcomes = [AppendOutcome(appended=True) for _ in requests]
        claimed = self._claim(requests, outcomes)
        entries: list[tuple[int, LogEntry]] = []
        messages: list[tuple[str, bytes, str]] = []
        for index, request in enumerate(requests):
            if not outcomes[index].appended:
                continue
            for position, e in enumerate(request.entries):
                entries.append((index, e))
                messages.append(
                    (
                        self._subjects[e.partition],
                        _encode((e.project_id, e.kind, e.accepted_at, e.payload)),
                        _msg_id(e, request.idempotency, position),
                    )
                )
        try:
            seqs = self._run(self._publish(messages), 2 * self._timeout) if messages else []
        except BaseException:
            self._release(claimed)
            raise
        for (index, entry), seq in zip(entries, seqs, strict=True):
            if requests[index].want_positions:
                outcomes[index].positions.append((entry.partition, seq))
        self._answer(
            [
                request.idempotency
                for request, outcome in zip(requests, outcomes, strict=True)
                if outcome.appended
                and request.idempotency is not None
                and request.idempotency.status is not None
            ]
        )
        return outcomes

    def _claim(
        self, requests: list[AppendRequest], outcomes: list[AppendOutcome]
    ) -> list[IdempotencyRecord]:
        """Record every key of the batch in flight, without its answer (one transaction);
        losers are not appended. A resumed request's record is stored already."""
        keyed = [
            (i, r.idempotency)
            for i, r in enumerate(requests)
            if r.idempotency is not None and not r.resume
        ]
        if not keyed:
            return []
        won: list[IdempotencyRecord] = []
        with self.engine.begin() as conn:
            for index, record in keyed:
                result = conn.execute(
                    self._insert_claim,
                    {
                        "project_id": record.project_id,
                        "key": record.key,
                        "request_hash": record.request_hash,
                        "status": None,
                        "body": None,
                        "created_at": record.created_at,
                    },
                )
                if result.first() is not None:
                    won.append(record)
                else:
                    outcomes[index].appended = False
        return won

    def _answer(self, records: list[IdempotencyRecord]) -> None:
        """Store the answers of requests whose entries were published (one transaction).
        If that fails the entries are in the log all the same: the records stay in
        flight, and a retry after the in-flight window appends again (dropped as
        duplicates) and answers."""
        if not records:
            return
        try:
            with self.engine.begin() as conn:
                for r in records:
                    assert r.status is not None
                    store_answer(conn, r.project_id, r.key, r.status, r.body or b"")
        except Exception:
            logger.exception(
                "could not store the answers of %d requests whose entries were appended; "
                "their retries will append again (dropped as duplicates) and answer: %s",
                len(records),
                [(r.project_id, r.key) for r in records],
            )

    def _release(self, claimed: list[IdempotencyRecord]) -> None:
        """Forget the claims of a batch that was not published, so a retry can run."""
        if not claimed:
            return
        table = idempotency_keys
        try:
            with self.engine.begin() as conn:
                for record in claimed:
                    conn.execute(
                        sa.delete(table).where(
                            table.c.project_id == record.project_id,
                            table.c.key == record.key,
                            table.c.request_hash == record.request_hash,
                            table.c.created_at == record.created_at,
                        )
                    )
        except Exception:
            logger.exception(
                "could not delete %d idempotency records whose entries were not appended; "
                "retries with these keys will be answered without effect: %s",
                len(claimed),
                [(r.project_id, r.key) for r in claimed],
            )

    async def _publish(self, messages: list[tuple[str, bytes, str]]) -> list[int]:
        if not self._nc.is_connected:
            raise LogUnavailable("not connected to NATS")
        futures: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout(self._timeout):
                for subject, data, msg_id in messages:
                    futures.append(
                        await self._js.publish_async(subject, data, headers={"Nats-Msg-Id": msg_id})
                    )
                acks = await asyncio.gather(*futures)
        except TimeoutError:
            done = sum(1 for f in futures if f.done() and not f.cancelled())
            raise LogUnavailable(
                f"JetStream acknowledged {done} of {len(messages)} entries "
                f"within {self._timeout:g} s"
            ) from None
        finally:
            for future in futures:
                future.cancel()  # no-op when done; otherwise stop waiting for its ack
        for ack in acks:
            if ack.stream != self.stream:
                raise LogUnavailable(f"subject of stream {self.stream} stored in {ack.stream}")
        return [int(ack.seq) for ack in acks]

    # -- read --------------------------------------------------------------------------

    def read(self, partition: int, after: int, limit: int) -> list[LogRecord]:
        return self._run(
            self._read(self._subjects[partition], after, limit), self._read_wait(limit)
        )

    def read_all(self, after: int, limit: int) -> list[LogRecord]:
        """Entries of every partition above ``after``, in stream order."""
        return self._run(self._read(None, after, limit), self._read_wait(limit))

    def _read_wait(self, limit: int) -> float:
        return self._timeout + limit / 5_000 + 1  # at least 5,000 messages a second

    async def _read(self, subject: str | None, after: int, limit: int) -> list[LogRecord]:
        async with self._read_lock:
            for _attempt in range(2):
                cursor = self._cursors.get(subject)
                if cursor is None or cursor.after != after:
                    cursor = await self._position(subject, after)
                try:
                    return await self._pull(cursor, limit)
                except _CursorLost as lost:
                    logger.info("NATS read consumer re-created: %s", lost)
                    self._cursors.pop(subject, None)
            raise LogUnavailable(f"could not read stream {self.stream} after {after}")

    async def _position(self, subject: str | None, after: int) -> _Cursor:
        old = self._cursors.pop(subject, None)
        if old is not None:
            await self._delete_consumer(old.name)
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=after + 1,
            ack_policy=AckPolicy.NONE,
            filter_subject=subject,
            inactive_threshold=_CONSUMER_IDLE,
            mem_storage=True,
        )
        info = await self._js.add_consumer(self.stream, config)
        assert info.name is not None
        cursor = self._cursors[subject] = _Cursor(info.name, after)
        return cursor

    async def _delete_consumer(self, name: str) -> None:
        try:
            await self._js.delete_consumer(self.stream, name)
        except Exception:  # gone already, or the server expires it when idle
            logger.debug("deleting NATS consumer %s failed", name, exc_info=True)

    async def _pull(self, cursor: _Cursor, limit: int) -> list[LogRecord]:
        # A subscription per pull: JetStream delivers to the pull's reply subject, and
        # anything arriving after the pull gave up finds nobody listening.
        pull = _Pull(limit, self._loop.create_future())
        inbox = self._nc.new_inbox()
        subscription = await self._nc.subscribe(inbox, cb=pull.add)
        try:
            await self._nc.publish(
                f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{cursor.name}",
                json.dumps({"batch": limit, "no_wait": True}).encode(),
                reply=inbox,
            )
            async with asyncio.timeout(self._read_wait(limit) - 1):
                await pull.done
        except TimeoutError:
            # Deliveries may still arrive (and be lost): never reuse this consumer.
            self._cursors = {k: v for k, v in self._cursors.items() if v is not cursor}
            raise LogUnavailable(f"NATS did not answer a read within {self._timeout:g} s") from None
        except asyncio.CancelledError:  # the caller stopped waiting (``_run``): the same
            self._cursors = {k: v for k, v in self._cursors.items() if v is not cursor}
            raise
        finally:
            await subscription.unsubscribe()
        if pull.status not in (None, "404", "408"):  # 404/408: no more messages now
            raise _CursorLost(f"pull answered {pull.status}")  # 503: consumer gone, 409 …
        records = []
        for msg in pull.messages:
            seq, delivered = _delivery(msg.reply)
            if delivered != cursor.delivered + 1 or seq <= cursor.after:
                raise _CursorLost(f"delivery {delivered} after {cursor.delivered}")
            cursor.after, cursor.delivered = seq, delivered
            project_id, kind, accepted_at, payload = _decode(msg.data)
            records.append(
                LogRecord(
                    seq=seq,
                    partition=int(msg.subject[self._prefix_len :]),
                    project_id=project_id,
                    kind=kind,
                    payload=payload,
                    accepted_at=accepted_at,
                )
            )
        return records

    # -- positions and housekeeping ----------------------------------------------------

    def trim_through(self, conn: Any, upto: int) -> None:
        """Nothing: the stream cannot be trimmed inside a database transaction (a rollback
        would leave unprocessed entries deleted). Processed entries go with ``trim``."""

    def trim(self, partition: int, upto: int) -> int:
        """Forget processed entries: compact the stream below its oldest entry that
        ``log_positions`` does not cover yet. Returns how many went (of any partition).

        Never a purge by subject: nats-server 2.9 moves every consumer whose filter covers
        the purged subject (an unfiltered one too) to the first entry of that subject left
        in the stream, or past the stream's end, even when the purge removes nothing. A
        reader of the whole stream (``read_all``, in this process or in any other) would
        then skip other partitions' unprocessed entries. A purge of the stream's beginning
        only moves consumers to its new first entry, over nothing but removed entries.
        """
        if upto <= 0:
            return 0
        return self._run(self._compact(upto))

    async def _compact(self, upto: int) -> int:
        state = (await self._js.stream_info(self.stream)).state
        first, last = int(state.first_seq or 0), int(state.last_seq or 0)
        if state.messages == 0 or upto < first:
            return 0  # the partition's entries up to there are gone already
        # Every entry up to ``last`` is stored before the heads are read: a partition whose
        # head is at or below its stored position has processed all of its entries up to
        # there, and one whose head is above holds the floor at its stored position.
        # Positions only grow: read before the heads, they are at worst too low (keep more).
        stored = await asyncio.to_thread(self._stored_positions)
        heads = await self._heads()
        floor = min(
            [last] + [stored.get(p, 0) for p, head in heads.items() if head > stored.get(p, 0)]
        )
        if floor < first:
            return 0
        return await self._purge({"seq": floor + 1})

    def last_seq(self) -> int:
        info = self._run(self._js.stream_info(self.stream))
        last = int(info.state.last_seq)
        if last < self._highest:
            raise LogUnavailable(
                f"NATS stream {self.stream} went back from sequence {self._highest} to "
                f"{last}: it was deleted or replaced; entries would be skipped"
            )
        self._highest = last
        return last

    def heads(self) -> dict[int, int]:
        """The newest position of each partition that has entries."""
        return self._run(self._heads())

    async def _heads(self) -> dict[int, int]:
        async def head(subject: str) -> int:
            try:
                message = await self._js.get_last_msg(self.stream, subject)
            except NotFoundError:
                return 0
            return int(message.seq or 0)

        seqs = await asyncio.gather(*(head(s) for s in self._subjects))
        return {p: seq for p, seq in enumerate(seqs) if seq}

    def pending(self) -> int:
        """Entries after the positions the consumer stored in the database."""
        stored = self._stored_positions()
        return self._run(self._pending(stored))

    async def _pending(self, stored: dict[int, int]) -> int:
        state = (await self._js.stream_info(self.stream)).state
        if state.messages == 0 or state.last_seq <= min(
            (stored.get(p, 0) for p in range(self.partitions)), default=0
        ):
            return 0

        async def count(partition: int) -> int:
            after = stored.get(partition, 0)
            if after >= state.last_seq:
                return 0
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=after + 1,
                ack_policy=AckPolicy.NONE,
                filter_subject=self._subjects[partition],
                inactive_threshold=_CONSUMER_IDLE,
                mem_storage=True,
            )
            info = await self._js.add_consumer(self.stream, config)
            assert info.name is not None
            await self._delete_consumer(info.name)
            return int(info.num_pending or 0)

        return sum(await asyncio.gather(*(count(p) for p in range(self.partitions))))
