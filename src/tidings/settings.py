"""Configuration: one ``Settings`` object read from ``TIDINGS_*`` variables (and ``.env``).

Built at the edge (``cli``) and passed down; nothing reads the environment at import time.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TIDINGS_", env_file=".env", extra="ignore")

    database_url: SecretStr = Field(
        default=SecretStr("sqlite:///./tidings.db"),
        description="sqlite:///path or postgresql://… (secret: may hold a password).",
    )
    log_url: str = Field(default="db", description="'db' keeps the ingest log in the database.")
    log_partitions: int = Field(default=8, ge=1, le=1024)
    sqlite_synchronous: Literal["FULL", "NORMAL", "EXTRA"] = Field(
        default="FULL",
        description="FULL survives power loss; NORMAL survives process crashes only.",
    )
    key_cache_ttl: float = Field(default=5.0, ge=0, description="Seconds an API key stays cached.")
    key_lookup_timeout: float = Field(
        default=2.0,
        gt=0,
        description="Seconds a request waits for its API key to be read before it is "
        "answered from the last known answer (or 503 for a key never seen).",
    )
    idempotency_ttl_hours: int = Field(default=24, ge=1)
    event_retention_days: int = Field(
        default=0,
        ge=0,
        description="Events older than this many days (by created_at) are deleted, and "
        "their message ids forgotten; 0 keeps them forever.",
    )
    worker_batch_size: int = Field(default=1000, ge=1, le=100_000)
    sync_timeout: float = Field(
        default=30.0, gt=0, description="Seconds a synchronous call waits for processing."
    )
    commit_max_items: int = Field(
        default=20_000, ge=1, description="Most log entries one group commit writes."
    )
    run_worker: bool = Field(default=True, description="Run the log consumer inside `serve`.")
    worker_mode: Literal["auto", "thread", "process"] = Field(
        default="auto",
        description="`serve` runs the consumer as a thread, or as a `tidings worker` child "
        "process (uses a second core; the API keeps its own). `auto`: a child process "
        "when the machine has two cores or more.",
    )
    log_writer: Literal["auto", "thread", "process"] = Field(
        default="auto",
        description="SQLite: plain appends to the ingest log file are committed by a "
        "thread of the API process, or by a log writer child process (the thread shares "
        "Python's interpreter lock with the event loop). `auto`: the process under "
        "`serve` and `api` when the machine has two cores or more, else the thread.",
    )
    worker_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="Niceness a `tidings worker` process adds to itself: when the API and "
        "the worker want the same cores, the API's acknowledgements go first and the "
        "worker catches up after the burst (0: same priority).",
    )
    worker_idle_lag: float = Field(
        default=2.0,
        ge=0,
        le=3600,
        description="`tidings worker` (also `serve`'s child) applies the log at the CPU "
        "scheduler's idle priority (Linux SCHED_IDLE) while the oldest entry it applies "
        "waited at most this many seconds, and at its normal priority when further behind. "
        "0: always at its normal priority.",
    )
    worker_poll_interval: float = Field(
        default=0.005, gt=0, le=5, description="Seconds an idle worker process waits."
    )
    delivery_batch_size: int = Field(
        default=500, ge=1, le=10_000, description="Sends one delivery round claims."
    )
    delivery_lease: float = Field(
        default=120.0,
        gt=0,
        description="Seconds a claimed send stays claimed; a send still unrecorded after "
        "that (its worker died) is failed as interrupted, never sent again.",
    )
    webhook_allow_private: bool = Field(
        default=False,
        description="Let webhook campaigns and the webhook provider call loopback, private "
        "and link-local addresses (169.254.169.254 among them); refused by default "
        "(docs/security.md).",
    )
    worker_idle_after: float = Field(
        default=0.25,
        ge=0,
        le=3600,
        description="`serve`'s worker child polls the log every TIDINGS_WORKER_POLL_INTERVAL "
        "until it has found nothing new for this many seconds; then it sleeps until `serve` "
        "commits to the log (or 0.5 s pass), so that an idle server costs next to no CPU.",
    )
    demo_project: bool = Field(default=True, description="Create a demo project on first start.")
    auto_migrate: bool = Field(
        default=True, description="`serve` on SQLite brings the schema up to date by itself."
    )

    rate_limit_per_key: float = Field(
        default=0,
        ge=0,
        description="Requests per second per Authorization header value; 0 turns it off.",
    )
    rate_limit_per_ip: float = Field(
        default=0, ge=0, description="Requests per second per client address; 0 turns it off."
    )
    rate_limit_burst: float = Field(
        default=2.0,
        ge=1,
        description="Bucket size, in seconds of the rate: a limit of r allows bursts of "
        "r * burst requests (at least 1).",
    )
    trust_forwarded_for: bool = Field(
        default=False,
        description="Take the client address from the first X-Forwarded-For entry (only "
        "behind a proxy that sets that header itself).",
    )

    body_timeout: float = Field(
        default=30.0,
        ge=0,
        description="Seconds a request may take to send its whole body (408 after that); "
        "0 turns it off.",
    )
    header_timeout: float = Field(
        default=10.0,
        ge=0,
        description="Seconds a connection may take to send a request's headers before it "
        "is closed (`serve` and `api`); 0 turns it off.",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        min_length=16,
        description="Signs tracking and unsubscribe links (at least 16 characters; changing "
        "it invalidates links already sent). Unset: a random key made on first start and "
        "kept in the database (table installation_secrets), so every node shares it.",
    )
    public_url: str | None = Field(
        default=None,
        description="The address links in messages start with (tracking, unsubscribe), "
        "e.g. https://tidings.example.com. Unset: the address `serve`/`api` listen on.",
    )

    @property
    def database_url_value(self) -> str:
        return self.database_url.get_secret_value()

    @property
    def is_sqlite(self) -> bool:
        return self.database_url_value.startswith("sqlite")
