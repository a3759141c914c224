"""The ``tidings`` command line: serve, migrate, projects, keys and list imports."""

from __future__ import annotations

import gc
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from tidings.domain import fields
from tidings.domain.auth import Role, Scope
from tidings.domain.errors import NotFound
from tidings.settings import Settings

__all__ = ["app", "main"]

app = typer.Typer(help="Tidings: a self-hosted customer engagement platform.", no_args_is_help=True)
project_app = typer.Typer(help="Create projects.", no_args_is_help=True)
key_app = typer.Typer(help="Create and revoke API keys.", no_args_is_help=True)
app.add_typer(project_app, name="project")
app.add_typer(key_app, name="key")

console = Console(stderr=True)
DatabaseOption = Annotated[
    str | None,
    typer.Option("--database-url", help="Overrides TIDINGS_DATABASE_URL.", show_default=False),
]


def _settings(database_url: str | None = None) -> Settings:
    overrides = {"database_url": database_url} if database_url else {}
    return Settings(**overrides)  # type: ignore[arg-type]


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=1)


def _open(settings: Settings, *, migrate_if_needed: bool):  # type: ignore[no-untyped-def]
    from tidings.bootstrap import SchemaError, ensure_schema
    from tidings.store.database import open_database

    db = open_database(settings.database_url_value, sqlite_synchronous=settings.sqlite_synchronous)
    try:
        ensure_schema(db, auto_migrate=migrate_if_needed)
    except SchemaError as exc:
        db.dispose()
        raise _fail(str(exc)) from None
    return db


def _tune_runtime() -> None:
    """Interpreter settings for a long-running server process (measured in
    docs/benchmarks.md):

    - The committer and consumer threads hand the GIL back and forth with the event loop
      many times a second; with the default 5 ms switch interval each hand-over waits
      behind a busy loop.
    - A full (generation 2) garbage collection walks every long-lived object: with the
      framework and driver objects that was a 30-70 ms pause every few seconds. Freezing
      what exists after start-up takes those out of every collection. (Raising the
      thresholds instead made each young collection an 80 ms pause: requests leave
      cyclic garbage behind, best collected often and in small amounts.)
    """
    sys.setswitchinterval(0.0005)
    gc.collect()
    gc.freeze()


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    database_url: DatabaseOption = None,
) -> None:
    """Run the API, the worker and everything else in one process."""
    from tidings.store.projects import ProjectStore

    _logging()
    settings = _settings(database_url)
    db = _open(settings, migrate_if_needed=settings.auto_migrate and settings.is_sqlite)
    store = ProjectStore(db.writer, db.reader)
    if settings.demo_project and store.count_projects() == 0:
        project = store.create_project("Demo", locale="en-US", timezone="UTC")
        public = store.create_key(project.id, Scope.PUBLIC, name="demo public")
        secret = store.create_key(project.id, Scope.SECRET, role=Role.ADMIN, name="demo secret")
        console.print(f"[bold]Created the demo project[/bold] (id {project.id}). Keys, shown once:")
        console.print(f"  public key: [green]{public.key}[/green]")
        console.print(f"  secret key: [green]{secret.key}[/green]")
    db.dispose()
    _run_http(settings, host, port)


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    database_url: DatabaseOption = None,
) -> None:
    """Run a stateless API node: no worker, no migrations (run `tidings migrate` first).

    Run as many as you like behind a load balancer, with `tidings worker` processes
    applying the ingest log (see docs/operations.md)."""
    _logging()
    settings = _settings(database_url).model_copy(update={"run_worker": False})
    _open(settings, migrate_if_needed=False).dispose()
    _run_http(settings, host, port)


def _logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per migration is noise


def _run_http(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    from tidings.api.app import create_app
    from tidings.bootstrap import build

    if settings.public_url is None:  # links in messages point at this server
        public_url = _public_url(host, port)
        settings = settings.model_copy(update={"public_url": public_url})
        os.environ["TIDINGS_PUBLIC_URL"] = public_url  # and the worker child's links too
    if settings.log_writer == "auto":
        writer = "process" if _cores() >= 2 else "thread"
        settings = settings.model_copy(update={"log_writer": writer})
    child = None
    if settings.run_worker and _worker_mode(settings) == "process":
        child = _WorkerChild(settings.database_url_value)
        settings = settings.model_copy(update={"run_worker": False})
    services = build(settings)
    app_ = create_app(services)
    _tune_runtime()
    console.print(f"Tidings listening on http://{host}:{port} (API docs at /docs)")
    if child is not None:
        child.start()
        services.on_stop.append(child.stop)  # uvicorn re-raises SIGTERM after the lifespan
        services.worker_child = child.running
    try:
        uvicorn.run(
            app_,
            host=host,
            port=port,
            loop="uvloop",
            http="httptools",
            access_log=False,
            # The client address is the peer unless TIDINGS_TRUST_FORWARDED_FOR says
            # otherwise (rate limits); uvicorn would otherwise rewrite it for local peers.
            proxy_headers=False,
            log_level="warning",
            timeout_graceful_shutdown=10,
        )
    finally:
        if child is not None:
            child.stop()


def _public_url(host: str, port: int) -> str:
    """The address ``serve``/``api`` listen on, as a URL (a wildcard: this machine)."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _worker_mode(settings: Settings) -> str:
    """``auto``: the consumer in a child process when it can have a core of its own
    (Python runs one thread at a time per process; see docs/benchmarks.md)."""
    if settings.worker_mode != "auto":
        return settings.worker_mode
    return "process" if _cores() >= 2 else "thread"


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@app.command()
def worker(
    database_url: DatabaseOption = None,
    parent: Annotated[
        int | None, typer.Option(hidden=True, help="Exit when this process is gone.")
    ] = None,
) -> None:
    """Apply the ingest log: beside `tidings api` nodes, or `tidings serve`.

    On PostgreSQL, run several: they share the log's partitions and take over those of a
    worker that stops or dies. On SQLite one worker applies the log; another waits."""
    from tidings.bootstrap import build

    _logging()
    settings = _settings(database_url).model_copy(update={"run_worker": True})
    _open(settings, migrate_if_needed=False).dispose()
    services = build(settings, standalone_worker=True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    _tune_runtime()
    if settings.worker_nice:
        # Below the API in the CPU scheduler's eyes (only when they compete): measured
        # with `serve`'s child worker, single-event ingest +9-16% (docs/benchmarks.md).
        os.nice(settings.worker_nice)
    services.start()
    console.print("Tidings worker consuming the ingest log")
    try:
        while not stop.wait(0.5):
            if parent is not None and os.getppid() != parent:
                break  # the serve process that started us is gone
    finally:
        services.stop()


class _WorkerChild:
    """`tidings worker` as a child of `tidings serve`, restarted if it dies."""

    def __init__(self, database_url: str) -> None:
        self.env = {**os.environ, "TIDINGS_DATABASE_URL": database_url}
        self.process: subprocess.Popen[bytes] | None = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._supervise, daemon=True, name="worker-child")

    def start(self) -> None:
        self.thread.start()

    def _supervise(self) -> None:
        while not self.stopping.is_set():
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tidings", "worker", "--parent", str(os.getpid())],
                env=self.env,
            )
            code = self.process.wait()
            # A clean exit first waits to see whether serve is stopping too: a Ctrl-C (or
            # a signal to the process group) reaches the child a moment before the parent.
            if code == 0 and self.stopping.wait(1.0):
                break
            if not self.stopping.is_set():
                logging.getLogger("tidings").error("worker exited with %s; restarting", code)
                self.stopping.wait(1.0)

    def running(self) -> bool:
        process = self.process
        return process is not None and process.poll() is None

    def stop(self) -> None:
        self.stopping.set()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()


@app.command()
def migrate(
    revision: Annotated[str, typer.Option(help="Target revision ('head' by default).")] = "head",
    down: Annotated[bool, typer.Option("--down", help="Downgrade to --revision.")] = False,
    database_url: DatabaseOption = None,
) -> None:
    """Bring the database schema up to date (safe to run any number of times)."""
    from tidings.store import migrate as migrations
    from tidings.store.database import open_database

    settings = _settings(database_url)
    db = open_database(settings.database_url_value, sqlite_synchronous=settings.sqlite_synchronous)
    try:
        if down:
            migrations.downgrade(db.writer, "base" if revision == "head" else revision)
        else:
            migrations.upgrade(db.writer, revision)
        current = migrations.current_revision(db.writer)
    finally:
        db.dispose()
    console.print(f"schema at revision {current or 'base (empty)'}")


@project_app.command("create")
def project_create(
    name: Annotated[str, typer.Option(help="Project name.")],
    locale: Annotated[str | None, typer.Option(help="Default BCP-47 locale, e.g. en-AU.")] = None,
    timezone: Annotated[str | None, typer.Option(help="IANA time zone.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one line of JSON.")] = False,
    database_url: DatabaseOption = None,
) -> None:
    """Create a project with a public and a secret (admin) key."""
    from tidings.store.projects import ProjectStore

    try:
        locale = fields.normalise_locale(locale) if locale else None
        timezone = fields.normalise_timezone(timezone) if timezone else None
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if not name.strip():
        raise _fail("the name must not be empty")
    settings = _settings(database_url)
    db = _open(settings, migrate_if_needed=False)
    try:
        store = ProjectStore(db.writer, db.reader)
        project = store.create_project(name, locale=locale, timezone=timezone)
        public = store.create_key(project.id, Scope.PUBLIC)
        secret = store.create_key(project.id, Scope.SECRET, role=Role.ADMIN)
    finally:
        db.dispose()
    result = {"project_id": project.id, "public_key": public.key, "secret_key": secret.key}
    if as_json:
        print(json.dumps(result))
    else:
        print(f"project {project.id} '{name}'\npublic key: {public.key}\nsecret key: {secret.key}")


@key_app.command("create")
def key_create(
    project: Annotated[int, typer.Option(help="Project id.")],
    scope: Annotated[Scope, typer.Option(help="public (pk_) or secret (sk_).")] = Scope.SECRET,
    role: Annotated[
        str | None, typer.Option(help="support, editor, publisher or admin (secret keys).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="A label for the key.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one line of JSON.")] = False,
    database_url: DatabaseOption = None,
) -> None:
    """Create an API key; it is shown once and stored only as a hash."""
    from tidings.store.projects import ProjectStore

    try:
        parsed_role = Role.parse(role) if role else None
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if scope is Scope.PUBLIC and parsed_role is not None:
        raise _fail("public keys have no role")
    settings = _settings(database_url)
    db = _open(settings, migrate_if_needed=False)
    try:
        created = ProjectStore(db.writer, db.reader).create_key(
            project, scope, role=parsed_role, name=name
        )
    except NotFound as exc:
        raise _fail(exc.message) from None
    finally:
        db.dispose()
    result = {
        "key_id": created.id,
        "project_id": project,
        "scope": created.scope.value,
        "role": created.role.name.lower() if created.role else None,
        "key": created.key,
    }
    print(json.dumps(result) if as_json else f"key {created.id}: {created.key}")


@key_app.command("revoke")
def key_revoke(
    key_id: Annotated[int | None, typer.Option("--id", help="The key's id.")] = None,
    key: Annotated[str | None, typer.Option("--key", help="The key itself.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one line of JSON.")] = False,
    database_url: DatabaseOption = None,
) -> None:
    """Revoke a key at once (servers notice within TIDINGS_KEY_CACHE_TTL seconds)."""
    from tidings.store.projects import ProjectStore

    if (key_id is None) == (key is None):
        raise _fail("give exactly one of --id or --key")
    settings = _settings(database_url)
    db = _open(settings, migrate_if_needed=False)
    try:
        revoked = ProjectStore(db.writer, db.reader).revoke_key(key_id=key_id, key=key)
    except NotFound as exc:
        raise _fail(exc.message) from None
    finally:
        db.dispose()
    print(json.dumps({"key_id": revoked, "revoked": True}) if as_json else f"key {revoked} revoked")


IMPORT_CHUNK = 5_000  # rows a transaction: short enough not to hold up the other writers


@app.command("import")
def import_csv(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            readable=True,
            help="A CSV file: a header row naming an external_id or email column, then one "
            "user a row.",
        ),
    ],
    project: Annotated[int, typer.Option(help="Project id.")],
    list_id: Annotated[int, typer.Option("--list", help="The static list's id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one line of JSON.")] = False,
    database_url: DatabaseOption = None,
) -> None:
    """Add the users of a CSV file to a static list (users Tidings does not know are
    reported, not created). The file is checked whole first; then every 5,000 rows are
    one transaction, so an interrupted import can simply be run again."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from tidings.domain.errors import InvalidRequest, TidingsError
    from tidings.domain.membership import Tally, read_member_csv
    from tidings.store.lists import ListStore

    settings = _settings(database_url)
    db = _open(settings, migrate_if_needed=False)
    try:
        store = ListStore(db.writer, db.reader)
        target = store.get(project, list_id)
        if target is None:
            raise _fail(f"project {project} has no list {list_id}")
        if target.type != "static":
            raise _fail(f"list {list_id} is dynamic: its members follow its rule")
        try:  # first pass: a broken file is refused before anything is written
            with file.open("rb") as lines:
                parsed = read_member_csv(lines)
                total = sum(1 for _ in parsed.rows)
        except InvalidRequest as exc:
            raise _fail(f"{file}: {exc.message}") from None
        tally = Tally()
        progress = Progress(
            *Progress.get_default_columns()[:1],
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not console.is_terminal,
        )
        with progress, file.open("rb") as lines:
            task = progress.add_task(f"list {list_id}", total=total)
            parsed = read_member_csv(lines)
            while chunk := list(itertools.islice(parsed.rows, IMPORT_CHUNK)):
                try:
                    done = store.add_members(
                        project, list_id, parsed.kind, chunk, now=time.time_ns() // 1000
                    )
                except TidingsError as exc:  # the list was deleted or retyped meanwhile
                    raise _fail(exc.message) from None
                tally.merge(done)
                progress.advance(task, len(chunk))
    finally:
        db.dispose()
    result = {"list_id": list_id, "rows": total, **tally.summary(added=True)}
    if as_json:
        print(json.dumps(result))
        return
    print(
        f"list {list_id}: {result['added']} added, {result['already_member']} already members, "
        f"{result['not_found']} not found, {result['invalid']} invalid ({total} rows)"
    )
    for number in tally.not_found_rows:
        print(f"  row {number}: no such user")
    for bad in tally.invalid_rows:
        print(f"  row {bad.row}: {bad.error.message if bad.error else 'invalid'}")


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)
