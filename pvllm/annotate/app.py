"""The annotation web app (paper App. D, Fig. 9): starlette + Jinja2 with autoescape on.

Every request needs a login (a token from ``python -m pvllm.annotate users add``, kept in an HttpOnly
cookie after ``GET /login?token=...``, or an ``Authorization: Bearer`` header): none or an unknown one
is HTTP 401, the wrong role 403. Annotators: ``GET /`` -> their first unfinished sample (or ``/done``);
``GET|POST /sample/{n}`` (1-based) shows / saves a sample (400 and nothing written when a score is
missing or outside the rubric; 403 without the form's CSRF token). Admins: ``GET /admin`` (progress and
agreement) and its exports. ``GET /video/{video_id}`` streams a ``--dataset`` video (Range requests).
Rows are written under the logged-in annotator's name, never one from the form. Model names never reach
an annotator's page: the models are "Model A, B, ..." in a seeded per-sample order and the form fields are
named by slot (``m0_emotion``), mapped back to generators on the server.
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware

from pvllm.annotate.auth import User, UserDB, users_path
from pvllm.annotate.forms import Annotator
from pvllm.annotate.frames import FrameSource
from pvllm.annotate.pages import admin, login, sample
from pvllm.annotate.render import SecurityHeaders
from pvllm.annotate.store import AnnotationStore
from pvllm.annotate.web import Site

# Where things are: the pages' routes in pvllm/annotate/pages/ (login, sample, admin), what they share (login,
# guard, rendering helpers) in web.py, the templates and headers in render.py, the rating form in forms.py.


def create_app(
    annotator: Annotator,
    users: UserDB,
    allowed_hosts: list[str] | None = None,
    cookie: str = "pvllm_annotate",
) -> Starlette:
    site = Site(annotator, users, cookie)
    routes = [*login.routes(site), *sample.routes(site), *admin.routes(site)]
    middleware = [Middleware(SecurityHeaders)]
    if allowed_hosts:  # a loopback server answers only to loopback names (no DNS rebinding)
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)))
    app = Starlette(routes=routes, middleware=middleware)
    app.state.annotator = annotator
    app.state.users = users
    return app


def build_app(
    predictions: list[str | Path],
    out: str | Path,
    *,
    annotator: str | None = None,
    users_file: str | Path | None = None,
    seed: int = 0,
    dataset: str | Path | None = None,
    allowed_hosts: list[str] | None = None,
    users: int | None = None,
    users_seed: int = 0,
) -> Starlette:
    """Load the runs and the saved annotations (resume) and return the app.

    Logins: the users in ``users_file`` (default: ``users.json`` next to ``out``), plus, with
    ``annotator``, that name with a token made for this server start (``app.state.session_tokens``).
    ``users``: annotate only that many random users (seeded by ``users_seed``), one sample each.
    """
    from pvllm.annotate.auth import check_name
    from pvllm.annotate.store import load_samples, pick_users

    samples = load_samples(predictions)
    if users is not None:
        samples = pick_users(samples, users, users_seed)
    store = AnnotationStore(out)
    session: dict[str, User] = {}
    if annotator is not None:
        session[secrets.token_urlsafe(32)] = User(check_name(annotator), "annotator")
    db = UserDB(users_path(Path(out).parent) if users_file is None else users_file, session)
    frames = FrameSource(dataset) if dataset is not None else None
    # one cookie per output file: two servers on one host (val and test) keep separate logins
    cookie = "pvllm_annotate_" + hashlib.sha256(str(Path(out).resolve()).encode()).hexdigest()[:10]
    app = create_app(Annotator(samples, store, seed=seed, frames=frames), db, allowed_hosts, cookie)
    app.state.session_tokens = {u.name: t for t, u in session.items()}
    return app
