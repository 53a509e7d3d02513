"""Login by link (``GET /login?token=...`` sets the HttpOnly cookie), logout, and ``/`` sending each user on."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from pvllm.annotate.auth import User
from pvllm.annotate.web import Site

COOKIE_DAYS = 90


def routes(site: Site) -> list[Route]:
    async def login(request: Request) -> Response:
        token = request.query_params.get("token")
        if not token:
            return site.render("login.html", 401, message=None)
        user = site.users.authenticate(token)
        if user is None:
            return site.unauthorized()
        r = RedirectResponse("/admin" if user.is_admin else "/", status_code=303)
        r.set_cookie(site.cookie, token, httponly=True, samesite="lax", secure=request.url.scheme == "https",
                     max_age=60 * 60 * 24 * COOKIE_DAYS)
        return r

    @site.needs(None, state_changing=True)
    async def logout(request: Request, user: User) -> Response:
        r = site.render("login.html", 200, message=f"{user.name} logged out.")
        r.delete_cookie(site.cookie)
        return r

    @site.needs(None)
    async def home(request: Request, user: User) -> Response:
        if user.is_admin:
            return RedirectResponse("/admin", status_code=303)
        i = site.annotator.first_unfinished(user.name)
        return RedirectResponse("/done" if i is None else f"/sample/{i + 1}", status_code=303)

    return [Route("/login", login), Route("/logout", logout, methods=["POST"]), Route("/", home)]
