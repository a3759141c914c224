"""The composition root: Settings → adapters → services. Only here and the entry points
read ``Settings``."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from tidings.domain.ingest import AppendRequest, LogEntry
from tidings.domain.sending import Sends
from tidings.journeys.engine import Clock, JourneyEngine
from tidings.journeys.hook import JourneyHook
from tidings.journeys.store import JourneyStore
from tidings.journeys.unwired import UnwiredSends
from tidings.journeys.worker import JourneyWorker
from tidings.log.committer import GroupCommitter, storage_full
from tidings.log.database import DatabaseLog, open_log_file
from tidings.log.nats import NatsLog
from tidings.log.port import IngestLog
from tidings.log.writer import LogWriterProcess
from tidings.messaging.delivery import DeliveryConfig
from tidings.messaging.hooks import MessagingBatchHook
from tidings.messaging.notifications import NotificationsHook
from tidings.messaging.secrets import InstallationSecrets
from tidings.messaging.service import Messaging, build_messaging
from tidings.messaging.tracking import TokenTracker
from tidings.pipeline.consumer import Consumer, ProcessedWatch
from tidings.pipeline.priority import IdlePriority
from tidings.pipeline.processor import BatchProcessor
from tidings.reporting.rollups import RollupHook
from tidings.segments.backfill import SegmentWorker
from tidings.segments.realtime import RealtimeSegments
from tidings.settings import Settings
from tidings.store import migrate
from tidings.store.database import Database, open_database
from tidings.store.idempotency import IdempotencyStore
from tidings.store.leases import open_leases
from tidings.store.notifications import NotificationStore
from tidings.store.profiles import ProfileStore
from tidings.store.projects import ProjectStore
from tidings.store.retention import EventUpkeep
from tidings.store.schema import SchemaStore

__all__ = ["SchemaError", "Services", "build", "ensure_schema", "tracker_for"]

logger = logging.getLogger(__name__)


class SchemaError(RuntimeError):
    """The database schema does not match this version of Tidings."""


def ensure_schema(db: Database, *, auto_migrate: bool) -> None:
    state = migrate.check(db.writer)
    if state == migrate.SchemaState.CURRENT:
        return
    if state == migrate.SchemaState.AHEAD:
        raise SchemaError(
            "The database schema is newer than this version of Tidings: upgrade Tidings."
        )
    if auto_migrate:
        migrate.upgrade(db.writer)
        return
    raise SchemaError("The database schema is not up to date: run `tidings migrate` first.")


@dataclass
class Services:
    settings: Settings
    db: Database
    projects: ProjectStore
    profiles: ProfileStore
    idempotency: IdempotencyStore  # ingest requests' records: where the log keeps them
    # Records written in the transaction of a change in the database (list members).
    change_idempotency: IdempotencyStore
    schema: SchemaStore
    log: IngestLog
    committer: GroupCommitter
    watch: ProcessedWatch
    consumer: Consumer | None = None
    segments: SegmentWorker | None = None  # timers and back-fills of dynamic lists
    journeys: JourneyEngine | None = None  # entrances, steps, timers (docs/journeys.md)
    journey_store: JourneyStore | None = None
    journey_worker: JourneyWorker | None = None  # with the log consumer: timers, outbox
    messaging: Messaging | None = None  # campaigns, subscriptions, the delivery worker
    tracker: TokenTracker | None = None  # signs and reads tracking and unsubscribe links
    notifications: NotificationStore | None = None  # in-app messages
    started: bool = field(default=False)
    on_stop: list[Callable[[], None]] = field(default_factory=list)
    # Set when the consumer runs in a supervised child process (`serve` in process
    # mode): whether that process is alive now.
    worker_child: Callable[[], bool] | None = None
    log_db: Database | None = None  # SQLite: the ingest log's own file
    _checkpoints: threading.Event | None = None
    _checkpointer_thread: threading.Thread | None = None
    _event_upkeep: EventUpkeep | None = None

    def _checkpointer(self, stop: threading.Event) -> None:
        full_logged_at = float("-inf")
        while not stop.wait(1.0):
            try:
                for db in self._databases():
                    db.checkpoint()
            except Exception as exc:  # the next round retries; a busy database is no emergency
                if storage_full(exc):
                    now = time.monotonic()
                    if now - full_logged_at >= 60.0:  # it retries every second
                        logger.warning("WAL checkpoint failed: the disk is full")
                        full_logged_at = now
                else:
                    logger.warning("WAL checkpoint failed", exc_info=True)

    def _databases(self) -> list[Database]:
        return [self.db] if self.log_db is None else [self.db, self.log_db]

    def start(self) -> None:
        if self.started:
            return
        if self.db.is_sqlite:
            self._checkpoints = threading.Event()
            self._checkpointer_thread = threading.Thread(
                target=self._checkpointer,
                args=(self._checkpoints,),
                daemon=True,
                name="tidings-checkpointer",
            )
            self._checkpointer_thread.start()
        self.committer.start()
        if self.consumer is not None:
            self.consumer.start()
        if self.journey_worker is not None:
            self.journey_worker.start()
        if self.messaging is not None:
            self.messaging.start()
        self.started = True

    def stop(self) -> None:
        if not self.started:
            return
        if self.journey_worker is not None:
            self.journey_worker.stop()
        if self.messaging is not None:
            self.messaging.stop()  # before the log: its last round appends its events
        self.committer.stop()
        if self.consumer is not None:
            self.consumer.stop()
        self.started = False
        if self._checkpoints is not None:
            self._checkpoints.set()
            self._checkpoints = None
        if self._checkpointer_thread is not None:
            # A checkpoint under way finishes before the engines and lock files close
            # (one started after would reopen the writer lock file, or fail on it).
            self._checkpointer_thread.join(10.0)
            self._checkpointer_thread = None
        for hook in self.on_stop:
            hook()
        self.close()

    def close(self) -> None:
        """Close the databases (``stop`` does it; for services that were never started)."""
        if isinstance(self.log, DatabaseLog):
            self.log.close()  # the committer's own connection, if it opened one
        for db in self._databases():
            db.dispose()

    async def wait_accepted(self, partitions: Iterable[int], seconds: float) -> bool:
        """True once every entry already accepted into these partitions is applied (then a
        profile that is missing is really missing), False after ``seconds``. The heads come
        from the log itself, whichever it is (a table, or a JetStream stream)."""
        wanted = set(partitions)
        heads = await asyncio.to_thread(self.log.heads)
        return await self.wait_processed(
            sorted((p, seq) for p, seq in heads.items() if p in wanted), seconds
        )

    async def wait_processed(self, targets: list[tuple[int, int]], seconds: float) -> bool:
        """True once the worker applied every (partition, position), False after ``seconds``.

        With the worker in this process it tells us; otherwise poll its stored positions.
        """
        if self.consumer is not None and self.consumer.holds(p for p, _ in targets):
            return await self.watch.wait(targets, seconds)
        deadline = time.monotonic() + seconds
        while True:
            positions = await asyncio.to_thread(self.profiles.positions)
            if all(positions.get(p, 0) >= seq for p, seq in targets):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)

    def maintenance(self) -> None:
        cutoff = time.time_ns() // 1000 - self.settings.idempotency_ttl_hours * 3_600_000_000
        self.idempotency.purge(cutoff)
        if self.change_idempotency.writer is not self.idempotency.writer:
            self.change_idempotency.purge(cutoff)
        if self.notifications is not None:
            self.notifications.purge_expired(time.time_ns() // 1000)
        if self._event_upkeep is None:  # partitions ahead (PostgreSQL), retention
            days = self.settings.event_retention_days
            self._event_upkeep = EventUpkeep(self.db.processing_writer, days)
        self._event_upkeep.run()  # rate-limited and bounded; logs its own failures


def _open_log(settings: Settings, db: Database) -> tuple[DatabaseLog | NatsLog, Database | None]:
    """The ingest log ``TIDINGS_LOG_URL`` names: ``db`` (a table in the database; on
    SQLite, in a file of its own beside it, returned too) or ``nats://…``."""
    url = settings.log_url
    partitions = settings.log_partitions
    if url == "db":
        if not db.is_sqlite:
            return DatabaseLog(db.writer, db.reader, partitions), None
        log_db = open_log_file(db, sqlite_synchronous=settings.sqlite_synchronous)
        log = DatabaseLog(
            log_db.writer, log_db.reader, partitions, positions=db.reader, sync_positions=db.sync
        )
        return log, log_db
    if url.startswith(("nats://", "tls://")):
        return NatsLog(url, db.writer, db.reader, partitions), None
    raise ValueError(f"TIDINGS_LOG_URL must be 'db' or nats://host:port, not {url!r}")


def _journeys(
    services: Services, sends: Sends | None, clock: Clock | None
) -> tuple[JourneyEngine, JourneyStore]:
    """The journey engine; its emitted events go to the ingest log (and wake the consumer)."""
    db, log = services.db, services.log

    def append(entries: list[LogEntry]) -> None:
        log.append([AppendRequest(entries)])
        if services.consumer is not None:
            services.consumer.wake.set()

    engine = JourneyEngine(
        db.writer,
        db.reader,
        sends if sends is not None else UnwiredSends(),
        partitions=log.partitions,
        append=append,
        clock=clock or (lambda: time.time_ns() // 1000),
    )
    store = JourneyStore(db.writer, db.reader)
    store.changed.append(engine.graphs.invalidate)
    return engine, store


def build(
    settings: Settings,
    *,
    standalone_worker: bool = False,
    sends: Sends | None = None,
    clock: Clock | None = None,
) -> Services:
    """Wire the services; ``standalone_worker`` is a worker polling a log others append to.
    ``sends`` is messaging's send interface (journeys' action steps); ``clock`` (µs) the
    journeys' clock, which tests move by hand."""
    db = open_database(settings.database_url_value, sqlite_synchronous=settings.sqlite_synchronous)
    log, log_db = _open_log(settings, db)
    profiles = ProfileStore(db.writer, db.reader)
    watch = ProcessedWatch()
    change_idempotency = IdempotencyStore(db.writer, db.reader)
    idempotency = change_idempotency
    if log_db is not None:
        in_log = IdempotencyStore(log_db.writer, log_db.reader)
        idempotency = in_log.with_fallback(change_idempotency)
        change_idempotency = change_idempotency.with_fallback(in_log)
    direct = None
    if log_db is not None and settings.log_writer == "process":
        direct = LogWriterProcess(log_db.url, sqlite_synchronous=settings.sqlite_synchronous)
    services = Services(
        settings=settings,
        db=db,
        projects=ProjectStore(db.writer, db.reader),
        profiles=profiles,
        idempotency=idempotency,
        change_idempotency=change_idempotency,
        schema=SchemaStore(db.writer, db.reader),
        log=log,
        committer=GroupCommitter(log, max_items=settings.commit_max_items, direct=direct),
        watch=watch,
        log_db=log_db,
    )
    if isinstance(log, NatsLog):
        services.on_stop.append(log.close)
    services.journeys, services.journey_store = _journeys(services, sends, clock)
    if settings.run_worker:
        database_path = db.file
        segments = RealtimeSegments()  # dynamic lists: with each batch, timers, back-fills
        segment_worker = SegmentWorker(db.processing_writer, db.reader, segments)
        consumer = Consumer(
            log,
            BatchProcessor(
                db.processing_writer,
                db.reader,
                profiles,
                services.schema,
                concurrent=not db.is_sqlite,
                segments=segments,
                # Journeys (entrances, waits), messaging (merges, erasures), reporting
                # rollups: each in the batch's transaction.
                hooks=[
                    JourneyHook(services.journeys),
                    MessagingBatchHook(),
                    NotificationsHook(),
                    RollupHook(),
                ],
            ),
            leases=open_leases(db.reader, database_path, settings.log_partitions),
            watch=watch,
            batch_size=settings.worker_batch_size,
            maintenance=services.maintenance,
            # SQLite's log file: trimmed often, since the delete holds the log's writer
            # and a short one keeps the appends behind it waiting milliseconds, not tens.
            trim_every=0.25 if log_db is not None else 2.0,
            timers=segment_worker.tick,
            clock=clock or (lambda: time.time_ns() // 1000),
            idle_wait=settings.worker_poll_interval if standalone_worker else 0.5,
            # Not in the API's process: a thread of idle priority holding the GIL there
            # would hold up the event loop.
            priority=IdlePriority(settings.worker_idle_lag)
            if standalone_worker and settings.worker_idle_lag > 0 and IdlePriority.supported()
            else None,
        )
        services.consumer = consumer
        services.segments = segment_worker
        services.journey_worker = JourneyWorker(services.journeys)
        services.committer = GroupCommitter(
            log, max_items=settings.commit_max_items, on_commit=consumer.wake.set, direct=direct
        )
    services.tracker = tracker_for(settings, InstallationSecrets(db.writer, db.reader).get)
    services.notifications = NotificationStore(db.writer, db.reader)
    services.messaging = build_messaging(
        db,
        log.append,
        settings.log_partitions,
        run_delivery=settings.run_worker,
        tracker=services.tracker,
        in_app=services.notifications,
        config=DeliveryConfig(
            batch_size=settings.delivery_batch_size, lease=settings.delivery_lease
        ),
        on_append=services.consumer.wake.set if services.consumer is not None else None,
        allow_private_webhooks=settings.webhook_allow_private,
    )
    if sends is None:  # journeys' action steps queue into messaging's outbox
        services.journeys.sends = services.messaging.sends
    return services


DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"


def tracker_for(settings: Settings, secrets: Callable[[str], str]) -> TokenTracker:
    """Signs and reads tracking links: with ``TIDINGS_SECRET_KEY``, else with the key this
    installation made on its first start (``secrets("tracking_key")``, kept in the
    database); links start with ``TIDINGS_PUBLIC_URL`` (``serve``/``api`` set it to their
    own address when unset)."""
    if settings.secret_key is not None:
        key: str | Callable[[], str] = settings.secret_key.get_secret_value()
    else:
        key = lambda: secrets("tracking_key")  # noqa: E731  read on first use
    return TokenTracker(key, settings.public_url or DEFAULT_PUBLIC_URL)
