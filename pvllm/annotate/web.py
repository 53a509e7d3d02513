"""What every page of the annotation app shares: rendering, the login (an HttpOnly cookie or a Bearer
token), and the guard of each route (401 without a valid login, 403 for the wrong role or, on a POST, a
missing/invalid CSRF token or another site's origin)."""

from __future__ import annotations

import functools
import inspect
from typing import Any
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from pvllm.annotate.auth import User, UserDB
from pvllm.annotate.forms import Annotator
from pvllm.annotate.render import make_env


def same_origin(request: Request) -> bool:
    """A browser's POST names its page's origin: another site is refused (the CSRF token decides when the
    origin is absent or "null")."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return True
    return urlsplit(origin).netloc == request.headers.get("host")


class Site:
    """The annotator state, the users and the login cookie's name, with the helpers the pages use."""

    def __init__(self, annotator: Annotator, users: UserDB, cookie: str):
        self.annotator, self.users, self.cookie = annotator, users, cookie
        self.env = make_env()

    def render(self, name: str, http_status: int = 200, **ctx: Any) -> HTMLResponse:
        return HTMLResponse(self.env.get_template(name).render(**ctx), status_code=http_status)

    def page(self, name: str, user: User, http_status: int = 200, **ctx: Any) -> HTMLResponse:
        """A page of a logged-in user: their name and the CSRF token of their forms (logout, submit)."""
        return self.render(name, http_status, **ctx, user=user.name, csrf=self.users.csrf_token(user))

    def error(self, status: int, message: str, back: str | None = None) -> HTMLResponse:
        return self.render("error.html", status, status=status, message=message, back=back)

    def user_of(self, request: Request) -> User | None:
        token = request.cookies.get(self.cookie)
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        return self.users.authenticate(token)

    def unauthorized(self) -> HTMLResponse:
        r = self.render("login.html", 401,
                        message="Not logged in (or the token is not valid): open your login link.")
        r.headers["WWW-Authenticate"] = 'Bearer realm="pvllm-annotate"'
        return r

    async def _guard(self, request: Request, role: str | None, state_changing: bool) -> tuple[User | None,
                                                                                             Response | None]:
        user = self.user_of(request)
        if user is None:
            return None, self.unauthorized()
        if role is not None and user.role != role:
            return None, self.error(403, f"{user.name} is logged in as {user.role}; this page is for {role}s")
        if state_changing:
            form = await request.form()
            if not same_origin(request) or not self.users.check_csrf(user, form.get("csrf")):
                return None, self.error(
                    403, "Refused: this form has no valid security (CSRF) token (the server was restarted, or "
                    "the form did not come from this server's page); reload the page. Nothing was saved.")
        return user, None

    def needs(self, role: str | None, state_changing: bool = False):
        """Decorator of a handler ``fn(request, user)``: called only for a valid login of ``role`` (any role:
        None); a plain function runs in the thread pool (frames decode there)."""

        def deco(fn):
            @functools.wraps(fn)
            async def wrapped(request: Request) -> Response:
                user, denied = await self._guard(request, role, state_changing)
                if denied is not None:
                    return denied
                if inspect.iscoroutinefunction(fn):
                    return await fn(request, user)
                return await run_in_threadpool(fn, request, user)

            return wrapped

        return deco
