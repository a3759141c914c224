"""The ``tidings`` command line: serve, migrate, projects, keys and list imports."""

from __future__ import annotations

import contextlib
import errno
import gc
import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from tidings.domain import fields
from tidings.domain.auth import Role, Scope
from tidings.domain.errors import NotFound
from tidings.settings import Settings

if TYPE_CHECKING:  # imported lazily at run time: the CLI starts fast
    from tidings.store.database import Database

__all__ = ["app", "main"]

# Plain help: the rich panels print `<bool>` after every flag (--json, --help).
app = typer.Typer(
    help="Tidings: a self-hosted customer engagement platform.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
project_app = typer.Typer(
    help="Create and change projects.", no_args_is_help=True, rich_markup_mode=None
)
key_app = typer.Typer(
    help="Create and revoke API keys.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(project_app, name="project")
app.add_typer(key_app, name="key")
admin_app = typer.Typer(
    help="Accounts of the admin web UI (/admin).", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(admin_app, name="admin")

console = Console(stderr=True)
DatabaseOption = Annotated[
    str | None,
    typer.Option("--database-url", help="Overrides TIDINGS_DATABASE_URL.", show_default=False),
]


def _settings(database_url: str | None = None) -> Settings:
    overrides = {"database_url": database_url} if database_url else {}
    return Settings(**overrides)  # type: ignore[arg-type]


def _fail(message: str) -> typer.Exit:
    # One line, however narrow the terminal: rich would wrap it at its width.
    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True, highlight=False)
    return typer.Exit(code=1)


def _open(settings: Settings, *, migrate_if_needed: bool, create: bool = False):  # type: ignore[no-untyped-def]
    """The database, its schema checked (and brought up to date if asked). Whatever a user
    can get wrong (a missing folder or file, no permission, a server that is down, a
    schema newer than this code) ends the command with one line naming cause and fix.
    ``create``: a SQLite file that does not exist yet may be made (serve, migrate)."""
    from tidings.bootstrap import SchemaError, ensure_schema
    from tidings.store.database import open_database

    _check_sqlite(settings, create=create)
    db = open_database(settings.database_url_value, sqlite_synchronous=settings.sqlite_synchronous)
    try:
        ensure_schema(db, auto_migrate=migrate_if_needed)
    except SchemaError as exc:
        db.dispose()
        raise _fail(str(exc)) from None
    except Exception as exc:
        db.dispose()
        problem = _database_problem(settings, exc)
        if problem is None:
            raise
        raise _fail(problem) from None
    return db


def _sqlite_path(settings: Settings) -> str | None:
    from tidings.store.database import sqlite_file

    return sqlite_file(settings.database_url_value)


def _check_sqlite(settings: Settings, *, create: bool) -> None:
    """Refuse, before SQLite touches anything, a database file this command cannot use.
    Only ``serve`` and ``migrate`` make a new file: a typo in TIDINGS_DATABASE_URL (or a
    command run in another folder) must not leave an empty database behind."""
    path = _sqlite_path(settings)
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.stat(folder)
        found = os.path.isdir(folder)
    except FileNotFoundError:
        found = False
    except PermissionError:
        raise _fail(
            f"cannot open the database folder {folder}: permission denied; run as a user "
            "who may enter it, or set TIDINGS_DATABASE_URL elsewhere"
        ) from None
    if not found:
        raise _fail(
            f"the database folder {folder} does not exist: create it (mkdir -p {folder}) "
            "or set TIDINGS_DATABASE_URL to a file in an existing folder"
        )
    if not os.path.exists(path):
        if not create:
            raise _fail(
                f"there is no database at {os.path.abspath(path)}: start `tidings serve` "
                "(or run `tidings migrate`) there first, or set TIDINGS_DATABASE_URL to "
                "your database"
            )
        if not os.access(folder, os.W_OK):
            raise _fail(
                f"cannot create the database in {folder}: permission denied; run as a user "
                "who may write there, or set TIDINGS_DATABASE_URL to a writable folder"
            )
        return
    if not os.access(path, os.R_OK | os.W_OK) or not os.access(folder, os.W_OK):
        raise _fail(
            f"cannot write the database {os.path.abspath(path)} (or its folder, which holds "
            "its journal and lock files): permission denied; run as the user who owns it, "
            "or fix the permissions"
        )


def _database_problem(settings: Settings, exc: BaseException) -> str | None:
    """One line for a database that cannot be used, or None for anything else."""
    import sqlalchemy as sa

    if isinstance(exc, PermissionError):
        return (
            f"cannot write {exc.filename or 'the database'}: permission denied; run as the "
            "user who owns the database, or fix the permissions"
        )
    if not isinstance(exc, sa.exc.DBAPIError):
        return None
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
    if "readonly database" in reason:
        return (
            f"cannot write the database {_sqlite_path(settings)}: {reason}; run as the "
            "user who owns it, or fix the permissions"
        )
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        url = sa.engine.make_url(settings.database_url_value).render_as_string(hide_password=True)
        return (
            f"cannot reach the database {url}: {reason}; check that it is running and that "
            "TIDINGS_DATABASE_URL names it"
        )
    return None


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
    listener = _listen(host, port)  # a busy port fails here, before anything is printed
    db = _open(
        settings, migrate_if_needed=settings.auto_migrate and settings.is_sqlite, create=True
    )
    store = ProjectStore(db.writer, db.reader)
    if settings.demo_project and store.count_projects() == 0:
        project = store.create_project("Demo", locale="en-US", timezone="UTC")
        public = store.create_key(project.id, Scope.PUBLIC, name="demo public")
        secret = store.create_key(project.id, Scope.SECRET, role=Role.ADMIN, name="demo secret")
        console.print(f"[bold]Created the demo project[/bold] (id {project.id}). Keys, shown once:")
        console.print(f"  public key: [green]{public.key}[/green]")
        console.print(f"  secret key: [green]{secret.key}[/green]")
    elif settings.demo_project and (demo := store.demo_project_id()) is not None:
        console.print(
            "The demo project's keys were shown on the first start. Lost them? Make new "
            f"ones: scripts/tidings key create --project {demo} --scope public (and "
            "--scope secret --role admin)"
        )
    _admin_hint(db)
    db.dispose()
    _run_http(settings, listener)


def _admin_hint(db: Database) -> None:
    from tidings.store.admin import AdminStore

    if AdminStore(db.writer, db.reader).count_accounts() == 0:
        console.print(
            "No admin account yet: make one with [bold]scripts/tidings admin create --email "
            "you@example.com[/bold], then sign in at /admin."
        )


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
    _run_http(settings, _listen(host, port))


def _logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per migration is noise


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything else starts: a port in use ends the
    command at once, with one line, instead of after "listening on"."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise _fail(
            f"cannot listen on {host}: {exc.strerror}; pass --host with a local address"
        ) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise _fail(
                f"port {port} on {host} is in use (another Tidings, or another program): "
                "stop it, or pass --port with a free port"
            ) from None
        raise _fail(
            f"cannot listen on {host}:{port}: {exc.strerror}; pass --host/--port that this "
            "machine can listen on"
        ) from None
    sock.set_inheritable(False)
    return sock


def _run_http(settings: Settings, listener: socket.socket) -> None:
    import uvicorn

    from tidings.api.app import create_app
    from tidings.api.protocol import with_header_timeout
    from tidings.bootstrap import build

    bound, port = listener.getsockname()[:2]
    host = f"[{bound}]" if ":" in bound else bound
    if settings.public_url is None:  # links in messages point at this server
        public_url = _public_url(bound, port)
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
    if child is not None:  # wakes the child once it dozes (pipeline/doorbell.py)
        services.committer.on_commit = child.doorbell.ring
    app_ = create_app(services)
    _tune_runtime()
    console.print(f"Tidings listening on http://{host}:{port} (API docs at /docs)")
    if child is not None:
        child.start()
        services.on_stop.append(child.stop)  # uvicorn re-raises SIGTERM after the lifespan
        services.worker_child = child.running
    # Closes connections whose request headers are too slow (TIDINGS_HEADER_TIMEOUT).
    http = with_header_timeout(settings.header_timeout) if settings.header_timeout else "httptools"
    try:
        config = uvicorn.Config(
            app_,
            loop="uvloop",
            http=http,
            access_log=False,
            # The client address is the peer unless TIDINGS_TRUST_FORWARDED_FOR says
            # otherwise (rate limits); uvicorn would otherwise rewrite it for local peers.
            proxy_headers=False,
            log_level="warning",
            timeout_graceful_shutdown=10,
        )
        # uvicorn re-raises a SIGINT it captured once it has shut down (as uvicorn.run,
        # which would bind the port itself, swallows it): a Ctrl-C is a clean stop.
        with contextlib.suppress(KeyboardInterrupt):
            uvicorn.Server(config).run(sockets=[listener])
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
    doorbell: Annotated[
        str | None, typer.Option(hidden=True, help="PIPE,FLAG descriptors from serve.")
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
    if doorbell is not None and services.consumer is not None:
        from tidings.pipeline.doorbell import Doorbell

        pipe_fd, flag_fd = (int(fd) for fd in doorbell.split(","))
        bell = Doorbell.attach(pipe_fd, flag_fd)
        bell.listen(services.consumer.wake)
        services.consumer.idle_after = settings.worker_idle_after
        services.consumer.dozing = bell.dozing
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
        from tidings.pipeline.doorbell import Doorbell

        self.env = {**os.environ, "TIDINGS_DATABASE_URL": database_url}
        self.doorbell = Doorbell.create()
        self.process: subprocess.Popen[bytes] | None = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._supervise, daemon=True, name="worker-child")

    def start(self) -> None:
        self.thread.start()

    def _supervise(self) -> None:
        while not self.stopping.is_set():
            fds = self.doorbell.child_fds
            self.process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "tidings", "worker", "--parent", str(os.getpid())),
                    *("--doorbell", ",".join(map(str, fds))),
                ],
                env=self.env,
                pass_fds=fds,
                # A group of its own: a Ctrl-C reaches serve, which stops the child; the
                # child itself would be interrupted mid-import in its first half second.
                process_group=0,
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
    _check_sqlite(settings, create=True)
    db = open_database(settings.database_url_value, sqlite_synchronous=settings.sqlite_synchronous)
    try:
        if migrations.check(db.writer) == migrations.SchemaState.AHEAD:
            raise _fail(
                "the database schema is newer than this version of Tidings: upgrade Tidings "
                "(a newer version's migrations brought it there)"
            )
        if down:
            migrations.downgrade(db.writer, "base" if revision == "head" else revision)
        else:
            migrations.upgrade(db.writer, revision)
        current = migrations.current_revision(db.writer)
    except typer.Exit:
        raise
    except Exception as exc:
        problem = _database_problem(settings, exc)
        if problem is None:
            raise
        raise _fail(problem) from None
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


@project_app.command("update")
def project_update(
    project_id: Annotated[int, typer.Option("--id", help="Project id.")],
    allowed_origins: Annotated[
        str | None,
        typer.Option(
            help="Web origins its public key may be used from, comma-separated "
            "(https://shop.example.com,https://*.example.com), or '*' for any origin.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one line of JSON.")] = False,
    database_url: DatabaseOption = None,
) -> None:
    """Change a project's settings: the web origins its public key may be used from."""
    from tidings.domain.errors import InvalidRequest
    from tidings.domain.origins import normalise_origins
    from tidings.store.projects import ProjectStore

    if allowed_origins is None:
        raise _fail("nothing to change: give --allowed-origins")
    items = [item for item in allowed_origins.replace(" ", ",").split(",") if item.strip()]
    try:
        origins = None if items == ["*"] else normalise_origins(items)
    except InvalidRequest as exc:
        raise _fail(exc.message) from None
    if origins == ():
        raise _fail("--allowed-origins is empty: list origins, or '*' for any origin")
    db = _open(_settings(database_url), migrate_if_needed=False)
    try:
        project = ProjectStore(db.writer, db.reader).set_allowed_origins(project_id, origins)
    except NotFound:
        raise _fail(f"no project {project_id}") from None
    finally:
        db.dispose()
    shown = list(project.allowed_origins) if project.allowed_origins is not None else None
    if as_json:
        print(json.dumps({"project_id": project.id, "allowed_origins": shown}))
    else:
        print(f"project {project.id}: allowed origins: {', '.join(shown) if shown else 'any'}")


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


def _admin_password(confirm: bool = True) -> str:
    from tidings.domain.admin import password_problem

    password = os.environ.get("TIDINGS_ADMIN_PASSWORD")
    if password is None:
        if not sys.stdin.isatty():
            raise _fail("set TIDINGS_ADMIN_PASSWORD, or run this in a terminal to be asked")
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=confirm)
    problem = password_problem(password)
    if problem is not None:
        raise _fail(problem)
    return password


@admin_app.command("create")
def admin_create(
    email: Annotated[str, typer.Option(help="The account's email; it signs in with it.")],
    owner: Annotated[
        bool,
        typer.Option(
            "--owner/--no-owner",
            help="Owners are admins of every project; others get roles with `admin grant`.",
        ),
    ] = True,
    database_url: DatabaseOption = None,
) -> None:
    """Make an admin UI account; the password comes from TIDINGS_ADMIN_PASSWORD or is asked
    for on the terminal."""
    from tidings.admin.passwords import Passwords
    from tidings.domain.errors import Conflict
    from tidings.store.admin import AdminStore

    try:
        address = fields.normalise_email(email).lower()
    except ValueError as exc:
        raise _fail(str(exc)) from None
    password = _admin_password()
    settings = _settings(database_url)
    db = _open(settings, migrate_if_needed=settings.is_sqlite and settings.auto_migrate)
    try:
        AdminStore(db.writer, db.reader).create_account(
            address, Passwords().hash(password), owner=owner, now=time.time_ns() // 1000
        )
    except Conflict as exc:
        raise _fail(exc.message) from None
    finally:
        db.dispose()
    kind = "owner (admin of every project)" if owner else "account with no project yet"
    print(f"admin {address}: {kind}; sign in at /admin")


@admin_app.command("grant")
def admin_grant(
    email: Annotated[str, typer.Option(help="The account's email.")],
    project: Annotated[int, typer.Option(help="Project id.")],
    role: Annotated[
        str, typer.Option(help="support, editor, publisher, admin, or none to take access away.")
    ],
    database_url: DatabaseOption = None,
) -> None:
    """Give an account a role in one project (as API keys have: support < editor <
    publisher < admin)."""
    from tidings.store.admin import AdminStore
    from tidings.store.projects import ProjectStore

    try:
        parsed = None if role.lower() == "none" else Role.parse(role)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    settings = _settings(database_url)
    db = _open(settings, migrate_if_needed=False)
    try:
        ProjectStore(db.writer, db.reader).get_project(project)
        AdminStore(db.writer, db.reader).grant(email, project, parsed)
    except NotFound as exc:
        raise _fail(exc.message) from None
    finally:
        db.dispose()
    print(f"{email.lower()}: {role.lower()} in project {project}")


@admin_app.command("password")
def admin_password(
    email: Annotated[str, typer.Option(help="The account's email.")],
    database_url: DatabaseOption = None,
) -> None:
    """Set an account's password (TIDINGS_ADMIN_PASSWORD, or asked for); signs it out
    everywhere."""
    from tidings.admin.passwords import Passwords
    from tidings.store.admin import AdminStore

    password = _admin_password()
    settings = _settings(database_url)
    db = _open(settings, migrate_if_needed=False)
    try:
        AdminStore(db.writer, db.reader).set_password(
            email, Passwords().hash(password), now=time.time_ns() // 1000
        )
    except NotFound as exc:
        raise _fail(exc.message) from None
    finally:
        db.dispose()
    print(f"{email.lower()}: password changed; its sessions are signed out")


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
