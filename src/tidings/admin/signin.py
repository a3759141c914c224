"""Signing in and out.

The sign-in form has its own CSRF token (there is no session yet): a random value in a
cookie that the form repeats; a POST whose field does not match is refused. Failed
sign-ins are recorded in the database per email and per client address
(``domain.admin.LoginLimits``), so every API node refuses the same ones; while an email
or an address is over its limit, the password is not even checked.

The session cookie is HttpOnly, SameSite=Lax, limited to ``/admin``, and Secure when the
request came over https (see docs/admin.md for running behind a TLS proxy).
"""

from __future__ import annotations

import math
import urllib.parse

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from tidings.admin.web import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    Admin,
    Page,
    Refusal,
    refused,
    route,
)
from tidings.domain.admin import (
    MAX_PASSWORD_LENGTH,
    SESSION_LIFETIME,
    login_wait,
    new_token,
    same_token,
    token_hash,
)

__all__ = ["open_session", "signin_routes"]

MAX_LOGIN_FORM = 8 * 1024


def _next(raw: str | None) -> str:
    """Where to go after signing in: an admin path of this site only."""
    if raw and raw.startswith("/admin/") and not raw.startswith("//") and "\\" not in raw:
        return raw
    return "/admin/"


def open_session(
    admin: Admin, request: Request, response: Response, account_id: int, now: int
) -> None:
    """A new session for the account, its cookie set on ``response``."""
    token = new_token()
    admin.store.create_session(
        account_id, token_hash(token), new_token(), now=now, expires_at=now + SESSION_LIFETIME
    )
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=SESSION_LIFETIME // 1_000_000,
        path="/admin",
        secure=admin.secure(request),
        httponly=True,
        samesite="lax",
    )


def signin_routes(admin: Admin) -> list[Route]:
    def form(request: Request, *, status: int = 200, error: str = "", email: str = "") -> Response:
        token = request.cookies.get(LOGIN_CSRF_COOKIE) or new_token()
        page = Page(admin, request, None)
        html = admin.templates.render(
            "login.html",
            **page.context(),
            login_csrf=token,
            error=error,
            email=email,
            next=_next(request.query_params.get("next")),
        )
        response = Response(html, status_code=status, media_type="text/html; charset=utf-8")
        response.set_cookie(
            LOGIN_CSRF_COOKIE,
            token,
            max_age=3600,
            path="/admin",
            secure=admin.secure(request),
            httponly=True,
            samesite="strict",
        )
        return response

    async def show(request: Request) -> Response:
        return await run_in_threadpool(form, request)

    async def submit(request: Request) -> Response:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_LOGIN_FORM:
                return await run_in_threadpool(
                    refused, admin, request, Refusal(413, "Too large", "The form is too large.")
                )
        fields = dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace")))
        expected = request.cookies.get(LOGIN_CSRF_COOKIE)
        if not expected or not same_token(fields.get("csrf"), expected):
            refusal = Refusal(
                403,
                "Form refused",
                "The sign-in form was not sent by this site's sign-in page (its CSRF token is "
                "missing or out of date). Reload the sign-in page and try again.",
            )
            return await run_in_threadpool(refused, admin, request, refusal)
        return await run_in_threadpool(check, request, fields)

    def check(request: Request, fields: dict[str, str]) -> Response:
        email = fields.get("email", "").strip().lower()[:320]
        password = fields.get("password", "")[: MAX_PASSWORD_LENGTH + 1]
        if not email or not password:
            return form(request, status=400, error="Enter your email and password.", email=email)
        now = admin.clock()
        limits = admin.limits
        by_email, by_address = f"email:{email}", f"ip:{admin.address(request)}"
        failures = admin.store.failures([by_email, by_address], since=now - limits.window)
        wait = login_wait(failures[by_email], failures[by_address], limits, now)
        if wait > 0:
            minutes = max(1, math.ceil(wait / 60_000_000))
            message = (
                f"Too many failed sign-ins. Try again in {minutes} minute"
                f"{'s' if minutes != 1 else ''}."
            )
            response = form(request, status=429, error=message, email=email)
            response.headers["Retry-After"] = str(math.ceil(wait / 1_000_000))
            return response
        found = admin.store.credentials(email)
        stored = found[1] if found else None
        if found is None or not admin.passwords.verify(stored, password):
            admin.store.record_failure(
                [by_email, by_address], now=now, forget_before=now - limits.window
            )
            return form(request, status=401, error="Wrong email or password.", email=email)
        account_id, stored_hash = found
        if admin.passwords.needs_rehash(stored_hash):
            admin.store.rehash(account_id, admin.passwords.hash(password), now=now)
        admin.store.clear_failures(by_email)
        response = RedirectResponse(_next(fields.get("next")), status_code=303)
        open_session(admin, request, response, account_id, now)
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/admin")
        return response

    def sign_out(page: Page) -> Response:
        token = page.request.cookies.get(SESSION_COOKIE, "")
        page.admin.store.delete_session(token_hash(token))
        response = page.redirect("/admin/login")
        response.delete_cookie(SESSION_COOKIE, path="/admin")
        return response

    return [
        Route("/login", show, methods=["GET"]),
        Route("/login", submit, methods=["POST"]),
        route("/logout", sign_out, admin, role=None, methods=["POST"]),
    ]
