"""The admin UI's request plumbing: who is signed in, in which project, with which role;
CSRF checks; rendering; security headers.

Each page is a plain function ``(Page) -> Response`` run in a worker thread (the stores
are synchronous), declared with ``route(path, handler, role=…)``. The wrapper, on the
event loop, reads the session cookie, the project of the path (``/p/{pid}/…``) and, for a
POST, the body and its CSRF token, and refuses before the handler runs:

- no session: a GET goes to the sign-in page (and back after), anything else gets 401;
- a project the account has no role in: 404, whether or not the project exists;
- a role below the page's: 403;
- a POST without the session's CSRF token (form field ``csrf`` or header
  ``X-CSRF-Token``): 403, nothing done.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidings.admin.passwords import Passwords
from tidings.admin.render import Templates
from tidings.api.ratelimit import client_address
from tidings.bootstrap import Services
from tidings.domain.admin import LoginLimits, role_in, same_token, token_hash
from tidings.domain.auth import Role
from tidings.domain.errors import NotFound
from tidings.store.admin import AdminStore, Session
from tidings.store.admin_views import AdminViews
from tidings.store.lists import ListStore
from tidings.store.projects import Project
from tidings.store.users import UserQueries

__all__ = ["SESSION_COOKIE", "Admin", "Page", "Refusal", "route"]

SESSION_COOKIE = "tidings_admin"
LOGIN_CSRF_COOKIE = "tidings_admin_login"
MAX_BODY = 1024 * 1024 + 64 * 1024  # a 1 MB CSV pasted or uploaded, plus the form around it

# No inline script or style anywhere: what an escaping mistake let through would not run.
# Frames: only the admin's own template previews (which set their own, stricter policy and
# are always shown in ``<iframe sandbox="">``).
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; frame-src 'self'; form-action 'self'; frame-ancestors 'none'; "
        b"base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


def _now() -> int:
    return time.time_ns() // 1000


@dataclass
class Admin:
    """The admin area's services; ``clock`` (microseconds) is replaceable in tests."""

    services: Services
    store: AdminStore
    views: AdminViews
    lists: ListStore
    users: UserQueries
    templates: Templates
    passwords: Passwords
    limits: LoginLimits = field(default_factory=LoginLimits)
    clock: Callable[[], int] = _now

    @classmethod
    def build(cls, services: Services) -> Admin:
        db = services.db
        return cls(
            services=services,
            store=AdminStore(db.writer, db.reader),
            views=AdminViews(db.writer, db.reader),
            lists=ListStore(db.writer, db.reader),
            users=UserQueries(db.reader),
            templates=Templates(),
            passwords=Passwords(),
        )

    def address(self, request: Request) -> str:
        trust = self.services.settings.trust_forwarded_for
        return client_address(request.scope, trust_forwarded_for=trust)

    def secure(self, request: Request) -> bool:
        """Whether cookies get the Secure flag: the request came over https (as the
        server saw it, or as the proxy says when X-Forwarded-For is trusted)."""
        if request.url.scheme == "https":
            return True
        if self.services.settings.trust_forwarded_for:
            return request.headers.get("x-forwarded-proto", "").lower() == "https"
        return False


class Refusal(Exception):
    """Ends a request with an error page (or JSON for the small scripts' calls)."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


@dataclass
class Page:
    """One request to an admin page, as the handler sees it."""

    admin: Admin
    request: Request
    session: Session | None
    project: Project | None = None
    role: Role | None = None
    form: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def pid(self) -> int:
        assert self.project is not None
        return self.project.id

    def param(self, name: str) -> str:
        return str(self.request.path_params[name])

    def query(self, name: str, default: str = "") -> str:
        return self.request.query_params.get(name, default)[:512]

    def url(self, path: str = "", **query: str | None) -> str:
        """An admin URL; in a project's pages, relative to the project."""
        base = f"/admin/p/{self.pid}" if self.project is not None else "/admin"
        kept = {k: v for k, v in query.items() if v}
        return base + path + ("?" + urllib.parse.urlencode(kept) if kept else "")

    def may(self, role: Role) -> bool:
        return self.role is not None and self.role >= role

    def require(self, role: Role) -> None:
        if not self.may(role):
            raise Refusal(
                403,
                "Not allowed",
                f"This needs the {role.name.lower()} role in this project; yours is "
                f"{self.role.name.lower() if self.role else 'none'}. An owner can change it "
                "with `tidings admin grant`.",
            )

    def render(self, template: str, status: int = 200, **context: Any) -> Response:
        html = self.admin.templates.render(template, **self.context(), **context)
        return Response(html, status_code=status, media_type="text/html; charset=utf-8")

    def context(self) -> dict[str, Any]:
        account = self.session.account if self.session else None
        switcher: list[tuple[int, str]] = []
        if account is not None:
            ids = None if account.owner else list(account.roles)
            switcher = self.admin.views.projects(ids)
        return {
            "account": account,
            "csrf": self.session.csrf_token if self.session else "",
            "project": self.project,
            "projects": switcher,
            "role": self.role.name.lower() if self.role else None,
            "page": self,
            "timezone": (self.project.timezone if self.project else None) or "UTC",
        }

    def redirect(self, url: str) -> Response:
        return RedirectResponse(url, status_code=303)


Handler = Callable[[Page], Response]


def route(
    path: str,
    handler: Handler,
    admin: Admin,
    *,
    role: Role | None = Role.SUPPORT,
    methods: Sequence[str] = ("GET",),
    json: bool = False,
) -> Route:
    """A route to ``handler``; ``role``: the least role it needs in the path's project
    (None: a page outside projects, for any signed-in account). ``json``: refusals are
    JSON (the small scripts' calls)."""

    async def endpoint(request: Request) -> Response:
        try:
            page = await _page(admin, request, role)
            if request.method == "POST":
                await _read_form(page)
            return await run_in_threadpool(handler, page)
        except Refusal as refusal:
            if json:
                body = {"error": refusal.title, "message": refusal.message}
                return JSONResponse(body, status_code=refusal.status)
            return await run_in_threadpool(refused, admin, request, refusal)
        except _SignIn:
            if request.method == "GET" and not json:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                query = urllib.parse.urlencode({"next": target})
                return RedirectResponse(f"/admin/login?{query}", status_code=303)
            message = "Your session has ended: sign in again."
            if json:
                return JSONResponse({"error": "Signed out", "message": message}, status_code=401)
            ended = Refusal(401, "Signed out", message)
            return await run_in_threadpool(refused, admin, request, ended)

    return Route(path, endpoint, methods=list(methods))


class _SignIn(Exception):
    """No live session: sign in first."""


async def _page(admin: Admin, request: Request, role: Role | None) -> Page:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise _SignIn
    session = await run_in_threadpool(admin.store.session, token_hash(token), now=admin.clock())
    if session is None:
        raise _SignIn
    page = Page(admin, request, session)
    raw = request.path_params.get("pid")
    if raw is None:
        return page
    missing = Refusal(
        404, "No such project", "There is no such project, or you have no access to it."
    )
    if not str(raw).isdigit() or len(str(raw)) > 12:
        raise missing
    pid = int(raw)
    page.role = role_in(session.account, pid)
    if page.role is None:
        raise missing
    try:
        page.project = await run_in_threadpool(admin.services.projects.get_project, pid)
    except NotFound:
        raise missing from None
    if role is not None:
        page.require(role)
    return page


async def _read_form(page: Page) -> None:
    request = page.request
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise Refusal(413, "Too large", "The form is larger than 1 MB.")
        chunks.append(chunk)
    page.body = b"".join(chunks)
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media == "application/x-www-form-urlencoded":
        try:
            text = page.body.decode()
        except UnicodeDecodeError:
            raise Refusal(400, "Bad form", "The form is not UTF-8.") from None
        page.form = dict(urllib.parse.parse_qsl(text, keep_blank_values=True))
    given = page.form.get("csrf") or request.headers.get("x-csrf-token")
    assert page.session is not None
    if not same_token(given, page.session.csrf_token):
        raise Refusal(
            403,
            "Form refused",
            "This form was not sent by a page of this admin session (its CSRF token is "
            "missing or out of date). Reload the page and try again.",
        )


def refused(admin: Admin, request: Request, refusal: Refusal) -> Response:
    page = Page(admin, request, None)
    html = admin.templates.render(
        "error.html", **page.context(), title=refusal.title, message=refusal.message
    )
    return Response(html, status_code=refusal.status, media_type="text/html; charset=utf-8")


def json_response(body: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(body), status_code=status, media_type="application/json")


class SecurityHeaders:
    """Adds the security headers to every admin response, and no-store to pages."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope.get("path", "").startswith("/admin/static/") or scope.get(
            "path", ""
        ).startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                own = {name.lower() for name, _ in headers}
                # A response with its own policy (a template preview) keeps it.
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in own)
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)
