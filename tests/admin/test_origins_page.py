"""Project settings: the browser origins a public key may be used from."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.admin.conftest import Clock, csrf_of, make_account, sign_in
from tests.admin.test_escaping import assert_inert
from tests.conftest import Project
from tidings.bootstrap import Services
from tidings.domain.auth import Role


async def test_origins_are_shown_saved_canonical_and_reset_to_any(
    owner: httpx.AsyncClient, services: Services, project: Project
) -> None:
    url = f"/admin/p/{project.id}/settings"
    page = await owner.get(url)
    assert "<strong>any origin</strong>" in page.text
    token = csrf_of(page.text)
    saved = await owner.post(
        f"{url}/origins",
        data={
            "csrf": token,
            "mode": "list",
            "origins": "HTTPS://Shop.Example.com:443\nhttp://localhost:3000, https://*.example.org",
        },
    )
    assert saved.status_code == 303
    assert saved.headers["location"] == f"{url}?saved=origins"
    assert services.projects.get_project(project.id).allowed_origins == (
        "https://shop.example.com",
        "http://localhost:3000",
        "https://*.example.org",
    )
    shown = await owner.get(saved.headers["location"])
    assert "Allowed origins saved." in shown.text
    assert "<code>https://shop.example.com</code>" in shown.text
    assert ">https://shop.example.com\nhttp://localhost:3000\nhttps://*.example.org</textarea>" in (
        shown.text
    )
    reset = await owner.post(f"{url}/origins", data={"csrf": token, "mode": "any", "origins": ""})
    assert reset.status_code == 303
    assert services.projects.get_project(project.id).allowed_origins is None


async def test_bad_origins_are_shown_in_place_and_nothing_is_written(
    owner: httpx.AsyncClient, services: Services, project: Project
) -> None:
    url = f"/admin/p/{project.id}/settings"
    token = csrf_of((await owner.get(url)).text)
    services.projects.set_allowed_origins(project.id, ("https://kept.example.com",))
    payload = "https://ok.example.com\n<script>alert('x')</script>"
    bad = await owner.post(
        f"{url}/origins", data={"csrf": token, "mode": "list", "origins": payload}
    )
    assert bad.status_code == 400
    assert "is not a web origin" in bad.text
    assert 'aria-invalid="true" aria-describedby="e-origins"' in bad.text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;</textarea>" in bad.text  # kept, as text
    assert_inert(bad.text)
    path = await owner.post(
        f"{url}/origins",
        data={"csrf": token, "mode": "list", "origins": "https://example.com/shop"},
    )
    assert path.status_code == 400 and "(no path)" in path.text
    empty = await owner.post(f"{url}/origins", data={"csrf": token, "mode": "list", "origins": " "})
    assert empty.status_code == 400
    assert "List at least one origin, or choose any origin." in empty.text
    assert services.projects.get_project(project.id).allowed_origins == (
        "https://kept.example.com",
    )
    # Reads still work after.
    assert (await owner.get(url)).status_code == 200


async def test_only_admins_change_origins_and_only_with_the_csrf_token(
    services: Services,
    project: Project,
    clock: Clock,
    owner: httpx.AsyncClient,
    new_client: Callable[[], httpx.AsyncClient],
) -> None:
    url = f"/admin/p/{project.id}/settings"
    make_account(services, "pub@example.com", roles={project.id: Role.PUBLISHER})
    browser = new_client()
    assert (await sign_in(browser, "pub@example.com")).status_code == 303
    page = await browser.get(url)
    assert page.status_code == 200 and "Allowed browser origins" in page.text
    assert "Save origins" not in page.text
    refused = await browser.post(
        f"{url}/origins",
        data={"csrf": csrf_of(page.text), "mode": "list", "origins": "https://a.example.com"},
    )
    assert refused.status_code == 403
    forged = await owner.post(
        f"{url}/origins", data={"csrf": "forged", "mode": "list", "origins": "https://a.example"}
    )
    assert forged.status_code == 403
    assert services.projects.get_project(project.id).allowed_origins is None
