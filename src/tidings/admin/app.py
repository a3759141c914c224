"""The admin UI as one ASGI app, mounted at ``/admin`` by ``tidings.api.app``.

Pages for journeys, campaigns and reports join as modules of their own with a
``<area>_routes(admin)`` function listed here and a navigation entry in
``templates/base.html`` (see docs/admin.md, "Adding a page").
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from tidings.admin.campaign_edit import campaign_edit_routes
from tidings.admin.campaigns import campaigns_routes
from tidings.admin.channels import channel_routes
from tidings.admin.journey_edit import journey_edit_routes
from tidings.admin.journeys import journeys_routes
from tidings.admin.lists import lists_routes
from tidings.admin.people import people_routes
from tidings.admin.project import project_routes
from tidings.admin.reports import reports_routes
from tidings.admin.signin import signin_routes
from tidings.admin.team import team_routes
from tidings.admin.template_edit import template_edit_routes
from tidings.admin.web import Admin, Refusal, SecurityHeaders, refused
from tidings.bootstrap import Services

__all__ = ["AdminApp", "admin_app"]


class AdminApp(SecurityHeaders):
    """The admin's ASGI app; ``admin`` holds its services (tests replace its clock)."""

    def __init__(self, app: Starlette, admin: Admin) -> None:
        super().__init__(app)
        self.admin = admin


def admin_app(services: Services) -> AdminApp:
    """The admin UI over ``services``."""
    admin = Admin.build(services)

    async def not_found(request: Request, _exc: Exception) -> Response:
        refusal = Refusal(404, "Not found", "There is no such page in the admin.")
        return refused(admin, request, refusal)

    static = StaticFiles(packages=[("tidings.admin", "static")])
    app = Starlette(
        routes=[
            *signin_routes(admin),
            *project_routes(admin),
            *people_routes(admin),
            *lists_routes(admin),
            # Before the pages they share a path with (``…/new`` is not an id).
            *journey_edit_routes(admin),
            *journeys_routes(admin),
            *campaign_edit_routes(admin),
            *template_edit_routes(admin),
            *campaigns_routes(admin),
            *reports_routes(admin),
            *team_routes(admin),
            *channel_routes(admin),
            Mount("/static", static, name="static"),
        ],
        exception_handlers={404: not_found},
    )
    return AdminApp(app, admin)
