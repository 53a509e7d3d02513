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

import functools
import hashlib
import inspect
import json
import re
import secrets
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from pvllm.annotate import admin as admin_data
from pvllm.annotate.auth import User, UserDB, users_path
from pvllm.annotate.frames import FrameSource
from pvllm.annotate.store import (
    DIMENSION_LABELS,
    RUBRIC_LABELS,
    AnnotationStore,
    Sample,
    ScoreError,
    annotation_row,
    blind_order,
    now_iso,
    parse_score,
)
from pvllm.metrics.ficl import DIMENSIONS

_BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{% block title %}pvllm annotation{% endblock %}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1em auto; max-width: 70em; padding: 0 1em; }
.text { white-space: pre-wrap; overflow-wrap: anywhere; }
.box { border: 1px solid #ccc; border-radius: 6px; padding: .5em .9em; margin: .6em 0; }
.gt { background: #f3f8ff; }
.failed { background: #fff3f3; color: #700; }
.note { color: #555; font-style: italic; }
.error { background: #fee; border: 1px solid #c00; padding: .6em; }
.saved { background: #efe; border: 1px solid #393; padding: .4em .6em; }
table.scores td, table.scores th { padding: .15em .6em; text-align: center; }
table.scores th.dim { text-align: left; }
table.scores tr.current { outline: 2px solid #36c; background: #eef3ff; }
table.grid td, table.grid th { border: 1px solid #ccc; padding: .2em .6em; }
.frames img { margin: 2px; border: 1px solid #ddd; }
nav a, nav form { margin-right: 1em; display: inline; }
.progress { float: right; }
kbd { border: 1px solid #aaa; border-radius: 3px; padding: 0 .3em; font-size: 90%; }
</style></head><body>
{% block body %}{% endblock %}
</body></html>
"""

_LOGOUT = """<form method="post" action="/logout"><input type="hidden" name="csrf" value="{{ csrf }}">
<button type="submit">Log out {{ user }}</button></form>"""

_SAMPLE = (
    """{% extends "base.html" %}
{% block title %}Sample {{ n }} / {{ total }}{% endblock %}
{% block body %}
<nav>
  <span class="progress" id="progress">{{ done }} / {{ total }} annotated</span>
  {% if n > 1 %}<a href="/sample/{{ n - 1 }}">&larr; previous</a>{% endif %}
  {% if n < total %}<a href="/sample/{{ n + 1 }}">next &rarr;</a>{% endif %}
  <a href="/">first unfinished</a> """
    + _LOGOUT
    + """
</nav>
{% if saved %}<p class="saved" id="saved" role="status">Saved sample {{ saved }}.</p>{% endif %}
<h2>Sample {{ n }} / {{ total }}
{% if finished %}<small>(annotated; saving again replaces your scores)</small>{% endif %}</h2>
{% if error %}<p class="error" role="alert">{{ error }}</p>{% endif %}
<details><summary>Rubric and keys</summary><ul>
{% for v, label in rubric %}<li><kbd>{{ loop.index0 }}</kbd> <b>{{ v | score }}</b>: {{ label }}</li>
{% endfor %}
</ul><p class="note">Emotion: how well the generated comment aligns with the emotion of the user's comment.
Language style: how well it aligns with the user's language style. Content relevance: relevance between
the generated comment and the target comment.</p>
<p>Key <kbd>k</kbd> scores the outlined row k/4 and moves on; <kbd>Enter</kbd> saves once every row is
scored (or outlines the first one left).</p></details>
{% if video_src %}<video id="video" controls preload="metadata" width="480" src="{{ video_src }}"></video>
{% elif video_note %}<p class="note">No video: {{ video_note }}</p>{% endif %}
{% if show_frames %}
<div class="frames">
{% if frames %}{% for src in frames %}<img src="{{ src }}" alt="frame {{ loop.index }}">{% endfor %}
{% else %}<p class="note">No frames: {{ frames_note }}</p>{% endif %}
</div>
{% endif %}
{% if video_id %}<p>Video: <code>{{ video_id }}</code>
{% if video_title %} &mdash; <span id="video-title">{{ video_title | visible }}</span>{% endif %}</p>
{% endif %}
<h3>User's comment history</h3>
{% if history %}<ol class="box" id="history">
{% for h in history %}<li class="text">{{ h | visible }}</li>{% endfor %}</ol>
{% else %}<p class="note">(no history)</p>{% endif %}
<h3>Ground-truth comment</h3>
<div class="box gt text" id="ground-truth">{{ reference | visible }}</div>
<form method="post" action="/sample/{{ n }}" id="rate">
<input type="hidden" name="sample_id" value="{{ sample_id }}">
<input type="hidden" name="seed" value="{{ seed }}">
<input type="hidden" name="csrf" value="{{ csrf }}">
{% if any_scorable %}<p class="note">Keys: <kbd>0</kbd>&ndash;<kbd>4</kbd> score the outlined row
(0, 0.25, 0.5, 0.75, 1) &middot; <kbd>&uarr;</kbd>/<kbd>&darr;</kbd> move &middot;
<kbd>Enter</kbd> saves</p>{% endif %}
{% for m in models %}
<div class="box{% if not m.scorable %} failed{% endif %}">
<h3>{{ m.label }}</h3>
{% if m.scorable %}
<div class="text comment" id="comment-{{ m.slot }}">
{{- m.text | visible if m.text else "(empty comment)" -}}
</div>
<table class="scores"><tr><th></th>
{% for v, label in rubric %}<th title="{{ label }}">{{ v | score }}</th>{% endfor %}</tr>
{% for d in dims %}<tr class="cell" data-field="{{ m.slot }}_{{ d }}"><th class="dim">{{ dim_labels[d] }}</th>
{% for v, label in rubric %}<td><input type="radio" name="{{ m.slot }}_{{ d }}" value="{{ v | score }}"
 title="{{ label }}" aria-label="{{ m.label }} {{ dim_labels[d] }} {{ v | score }}" required
 {%- if m.scores and m.scores[d] == v %} checked{% endif %}></td>{% endfor %}
</tr>{% endfor %}</table>
{% else %}
<p>Generation failed: not scored.</p><p class="note text">{{ m.error }}</p>
{% endif %}
</div>
{% endfor %}
{% if any_scorable %}<button type="submit" id="save">Save and continue</button>
{% else %}<p class="note">No model produced a comment for this sample: nothing to score.</p>{% endif %}
</form>
<script src="/rate.js"></script>
{% endblock %}
"""
)

_DONE = (
    """{% extends "base.html" %}
{% block title %}Done{% endblock %}
{% block body %}<nav>"""
    + _LOGOUT
    + """</nav>
{% if saved %}<p class="saved" id="saved" role="status">Saved sample {{ saved }}.</p>{% endif %}
<h2 id="progress">{{ done }} / {{ total }} annotated</h2>
{% if done == total %}<p>Every sample is annotated. Thank you! Your scores are saved;
you can close this page (or revisit a sample to change its scores).</p>{% endif %}
<p><a href="/sample/1">Go to sample 1</a></p>
{% endblock %}
"""
)

_ADMIN = (
    """{% extends "base.html" %}
{% block title %}Annotation progress{% endblock %}
{% block body %}<nav>"""
    + _LOGOUT
    + """</nav>
<h2>Progress ({{ total }} samples; model names shown: this view is not blind)</h2>
<table class="grid" id="annotators"><tr><th>annotator</th><th>samples done</th><th>ratings</th></tr>
{% for a in progress.annotators %}<tr><td>{{ a.annotator }}</td>
<td>{{ a.samples_done }} / {{ a.samples }}</td>
<td>{{ a.ratings }}</td></tr>{% endfor %}</table>
<h3>Items rated per model</h3>
<table class="grid" id="models"><tr><th>model</th>{% for a in progress.annotators %}<th>{{ a.annotator }}</th>
{% endfor %}</tr>
{% for m in progress.models %}<tr><td>{{ m.generator }}</td>{% for a in progress.annotators %}
<td>{{ m.rated[a.annotator] }} / {{ m.items }}</td>{% endfor %}</tr>{% endfor %}</table>
<h3>Inter-annotator agreement (Krippendorff's &alpha;, interval)</h3>
<table class="grid" id="agreement"><tr><th>dimension</th><th>&alpha;</th><th>items with &ge; 2 annotators</th>
<th>scores in them</th></tr>
{% for r in agreement %}<tr><td>{{ dim_labels[r.dimension] }}</td>
<td>{{ "%.3f" | format(r.alpha) if r.alpha is not none else "n/a" }}</td><td>{{ r.units }}</td>
<td>{{ r.values }}</td></tr>{% endfor %}</table>
<p class="note">An item is a (sample, model) pair; &alpha; is n/a while no item has two annotators or
all their scores are equal.</p>
<h3>Export</h3>
<ul><li><a href="/admin/annotations.csv">annotations.csv</a> and
<a href="/admin/annotations.jsonl">annotations.jsonl</a>: the latest score per (sample, model, annotator)</li>
<li><a href="/admin/agreement.csv">agreement.csv</a>,
<a href="/admin/summary.json">summary.json</a> (progress and agreement)</li></ul>
{% endblock %}
"""
)

_ERROR = """{% extends "base.html" %}
{% block title %}Error {{ status }}{% endblock %}
{% block body %}<p class="error" id="error">{{ message }}</p>
{% if back %}<p><a href="{{ back }}">Back</a> (your selections were not saved)</p>{% endif %}{% endblock %}
"""

_LOGIN = """{% extends "base.html" %}
{% block title %}Log in{% endblock %}
{% block body %}{% if message %}<p class="error" id="error">{{ message }}</p>{% endif %}
<p>Open the login link you were given (<code>python -m pvllm.annotate users add NAME</code> prints it),
or paste its token:</p>
<form method="get" action="/login"><input name="token" size="50" autocomplete="off">
<button type="submit">Log in</button></form>{% endblock %}
"""

# The rubric's keyboard: 0-4 set the outlined row to k/4 and move on; arrows move; Enter saves.
_RATE_JS = r"""(function () {
  var form = document.getElementById("rate");
  if (!form) return;
  var rows = Array.prototype.slice.call(form.querySelectorAll("tr.cell"));
  if (!rows.length) return;
  var cur = 0;
  function value(row) { var c = row.querySelector("input:checked"); return c ? c.value : null; }
  function show(i) {
    cur = Math.max(0, Math.min(rows.length - 1, i));
    rows.forEach(function (r, j) { r.classList.toggle("current", j === cur); });
    rows[cur].scrollIntoView({block: "nearest"});
  }
  var firstOpen = rows.findIndex(function (r) { return value(r) === null; });
  show(firstOpen < 0 ? 0 : firstOpen);
  rows.forEach(function (r, j) { r.addEventListener("click", function () { show(j); }); });
  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.altKey || e.metaKey) return;
    var t = e.target;
    if (t && (t.tagName === "TEXTAREA" || (t.tagName === "INPUT" && t.type === "text"))) return;
    if (e.key >= "0" && e.key <= "4") {
      var radios = rows[cur].querySelectorAll("input[type=radio]");
      radios[Number(e.key)].checked = true;
      show(cur + 1);
      e.preventDefault();
    } else if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      show(cur + (e.key === "ArrowDown" ? 1 : -1));
      e.preventDefault();
    } else if (e.key === "Enter" && !(t && t.tagName === "BUTTON")) {
      var open = rows.findIndex(function (r) { return value(r) === null; });
      if (open >= 0) { show(open); } else { form.requestSubmit(); }
      e.preventDefault();
    }
  });
})();
"""

_SECURITY_HEADERS = {
    # scripts only from this server (an unescaped comment could not run inline code either)
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; media-src 'self'; "
    "style-src 'self' 'unsafe-inline'; script-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # the login link's token never leaves for another site in a Referer
    "Cache-Control": "no-store",
}


class SecurityHeaders:
    """ASGI middleware adding ``_SECURITY_HEADERS`` to every response (errors included)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for k, v in _SECURITY_HEADERS.items():
                    if k not in headers:
                        headers[k] = v
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _fmt_score(v: float) -> str:
    return f"{v:g}"


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _visible(text: object) -> str:
    """Control characters (invalid in HTML, invisible) become U+FFFD so garbage output shows as such."""
    return _CONTROL.sub("\ufffd", str(text))


def make_env() -> jinja2.Environment:
    """Jinja2 with autoescape turned on explicitly (every template: comments are untrusted text)."""
    env = jinja2.Environment(
        loader=jinja2.DictLoader(
            {
                "base.html": _BASE,
                "sample.html": _SAMPLE,
                "done.html": _DONE,
                "error.html": _ERROR,
                "admin.html": _ADMIN,
                "login.html": _LOGIN,
            }
        ),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["score"] = _fmt_score
    env.filters["visible"] = _visible
    return env


def slot_name(i: int) -> str:
    return f"m{i}"


def model_label(i: int) -> str:
    return "Model " + (chr(ord("A") + i) if i < 26 else str(i + 1))


class Annotator:
    """The state behind the app: samples, the shared store, the blind order; thread-safe submits."""

    def __init__(
        self, samples: list[Sample], store: AnnotationStore, seed: int = 0, frames: FrameSource | None = None
    ):
        self.samples, self.store, self.seed, self.frames = samples, store, seed, frames
        self.lock = threading.Lock()

    def order(self, s: Sample) -> list[str]:
        return blind_order(s.sample_id, s.outputs, self.seed)

    def done_count(self, annotator: str) -> int:
        return sum(self.store.is_done(annotator, s) for s in self.samples)

    def first_unfinished(self, annotator: str, start: int = 0) -> int | None:
        """Index of the first unfinished sample at or after ``start``, wrapping around; None if none."""
        n = len(self.samples)
        for k in range(n):
            i = (start + k) % n
            if not self.store.is_done(annotator, self.samples[i]):
                return i
        return None

    def parse_form(self, s: Sample, form: dict[str, Any], annotator: str) -> list[dict[str, Any]]:
        """The rows a submitted form stands for; ScoreError naming the first bad field otherwise."""
        if str(form.get("sample_id", "")) != s.sample_id:
            raise ScoreError(
                "sample_id",
                f"form is for sample {form.get('sample_id')!r}, not {s.sample_id!r}; reload the page",
            )
        if str(form.get("seed", "")) != str(self.seed):
            raise ScoreError("seed", "the page was made with another model order (seed); reload the page")
        rows = []
        created_at = now_iso()  # one time stamp for the whole submit
        for i, gen in enumerate(self.order(s)):
            if not s.outputs[gen].scorable:
                continue
            scores = {}
            for d in DIMENSIONS:
                name = f"{slot_name(i)}_{d}"
                raw = form.get(name)
                label = f"{model_label(i)} {DIMENSION_LABELS[d]}"
                if raw is None or str(raw).strip() == "":
                    raise ScoreError(name, f"missing score for {label} (field {name})")
                v = parse_score(raw)
                if v is None:
                    raise ScoreError(
                        name,
                        f"invalid score {str(raw)[:40]!r} for {label} (field {name}); "
                        "choose one of 0, 0.25, 0.5, 0.75, 1",
                    )
                scores[d] = v
            rows.append(annotation_row(s.sample_id, gen, annotator, scores, created_at))
        return sorted(rows, key=lambda r: r["generator"])  # file order says nothing about the page order

    def page_context(
        self, user: str, idx: int, form: dict[str, Any] | None = None, error: str | None = None
    ) -> dict[str, Any]:
        """What sample.html shows; with ``form`` (a rejected submit) its valid choices stay selected."""
        s = self.samples[idx]
        models = []
        for i, gen in enumerate(self.order(s)):
            out = s.outputs[gen]
            scores = self.store.scores(user, s.sample_id, gen)
            if form is not None:
                scores = {d: parse_score(form.get(f"{slot_name(i)}_{d}")) for d in DIMENSIONS}
            models.append(
                {
                    "slot": slot_name(i),
                    "label": model_label(i),
                    "scorable": out.scorable,
                    "text": out.text,
                    "error": out.error,
                    "scores": scores,
                }
            )
        frames, note, video_src, video_note = [], None, None, None
        if self.frames is not None:
            frames, note = self.frames.thumbnails(s.video_id)
            if self.frames.video_file(s.video_id) is not None:
                video_src = f"/video/{s.video_id}"
            else:
                video_note = f"video {s.video_id!r} is not in the dataset (or its file is missing)"
        return {
            "n": idx + 1,
            "total": len(self.samples),
            "done": self.done_count(user),
            "finished": self.store.is_done(user, s) and bool(s.scorable_generators()),
            "sample_id": s.sample_id,
            "seed": self.seed,
            "history": s.history,
            "reference": s.reference,
            "models": models,
            "any_scorable": any(m["scorable"] for m in models),
            "rubric": RUBRIC_LABELS,
            "dims": DIMENSIONS,
            "dim_labels": DIMENSION_LABELS,
            "show_frames": self.frames is not None,
            "frames": frames,
            "frames_note": note,
            "video_src": video_src,
            "video_note": video_note,
            "error": error,
            "video_id": s.video_id,
            "video_title": self.frames.title(s.video_id) if self.frames else None,
        }


def create_app(
    annotator: Annotator,
    users: UserDB,
    allowed_hosts: list[str] | None = None,
    cookie: str = "pvllm_annotate",
) -> Starlette:
    env = make_env()

    def render(name: str, http_status: int = 200, **ctx: Any) -> HTMLResponse:
        return HTMLResponse(env.get_template(name).render(**ctx), status_code=http_status)

    def error(status: int, message: str, back: str | None = None) -> HTMLResponse:
        return render("error.html", status, status=status, message=message, back=back)

    def user_of(request: Request) -> User | None:
        token = request.cookies.get(cookie)
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        return users.authenticate(token)

    def unauthorized() -> HTMLResponse:
        r = render(
            "login.html", 401, message="Not logged in (or the token is not valid): open your login link."
        )
        r.headers["WWW-Authenticate"] = 'Bearer realm="pvllm-annotate"'
        return r

    def same_origin(request: Request) -> bool:
        """A browser's POST names its page's origin: another site is refused (the CSRF token decides when
        the origin is absent or "null")."""
        origin = request.headers.get("origin")
        if origin is None or origin == "null":
            return True
        return urlsplit(origin).netloc == request.headers.get("host")

    def needs(role: str | None, state_changing: bool = False):
        """401 without a valid login, 403 for the wrong role or (POST) a missing/invalid CSRF token."""

        def deco(fn):
            async def guard(request: Request) -> tuple[User | None, Response | None]:
                user = user_of(request)
                if user is None:
                    return None, unauthorized()
                if role is not None and user.role != role:
                    return None, error(
                        403, f"{user.name} is logged in as {user.role}; this page is for {role}s"
                    )
                if state_changing:
                    form = await request.form()
                    if not same_origin(request) or not users.check_csrf(user, form.get("csrf")):
                        return None, error(
                            403,
                            "Refused: this form has no valid security (CSRF) token (the server was "
                            "restarted, or the form did not come from this server's page); reload the page. "
                            "Nothing was saved.",
                        )
                return user, None

            if inspect.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def wrapped(request: Request) -> Response:
                    user, denied = await guard(request)
                    return denied or await fn(request, user)

            else:

                @functools.wraps(fn)
                async def wrapped(request: Request) -> Response:
                    user, denied = await guard(request)
                    return denied or await run_in_threadpool(fn, request, user)  # frames decode here

            return wrapped

        return deco

    def index_of(request: Request) -> int | None:
        n = request.path_params["n"]
        return n - 1 if 1 <= n <= len(annotator.samples) else None

    def no_sample(request: Request) -> Response:
        return error(404, f"no sample {request.path_params['n']} (there are {len(annotator.samples)})")

    def saved_param(request: Request, user: User) -> int | None:
        """The sample that ``?saved=n`` confirms, if this annotator's scores of it are on disk."""
        v = request.query_params.get("saved", "")
        n = int(v) if v.isdigit() else 0
        ok = 1 <= n <= len(annotator.samples) and annotator.store.is_done(user.name, annotator.samples[n - 1])
        return n if ok else None

    async def login(request: Request) -> Response:
        token = request.query_params.get("token")
        if not token:
            return render("login.html", 401, message=None)
        user = users.authenticate(token)
        if user is None:
            return unauthorized()
        r = RedirectResponse("/admin" if user.is_admin else "/", status_code=303)
        r.set_cookie(
            cookie,
            token,
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
            max_age=60 * 60 * 24 * 90,
        )
        return r

    @needs(None, state_changing=True)
    async def logout(request: Request, user: User) -> Response:
        r = render("login.html", 200, message=f"{user.name} logged out.")
        r.delete_cookie(cookie)
        return r

    @needs(None)
    async def home(request: Request, user: User) -> Response:
        if user.is_admin:
            return RedirectResponse("/admin", status_code=303)
        i = annotator.first_unfinished(user.name)
        return RedirectResponse("/done" if i is None else f"/sample/{i + 1}", status_code=303)

    @needs("annotator")
    def show(request: Request, user: User) -> Response:
        i = index_of(request)
        if i is None:
            return no_sample(request)
        ctx = annotator.page_context(user.name, i)
        return render(
            "sample.html",
            **ctx,
            saved=saved_param(request, user),
            user=user.name,
            csrf=users.csrf_token(user),
        )

    @needs("annotator", state_changing=True)
    async def submit(request: Request, user: User) -> Response:
        i = index_of(request)
        if i is None:
            return no_sample(request)
        form = dict((await request.form()).items())
        s = annotator.samples[i]
        try:
            rows = annotator.parse_form(s, form, user.name)  # the name comes from the login, never the form
        except ScoreError as e:
            if e.field in ("sample_id", "seed"):  # a stale page: the choices cannot be mapped back
                return error(400, str(e), back=f"/sample/{i + 1}")
            ctx = await run_in_threadpool(annotator.page_context, user.name, i, form, f"Not saved: {e}")
            return render("sample.html", 400, **ctx, saved=None, user=user.name, csrf=users.csrf_token(user))

        def save() -> int | None:
            with annotator.lock:
                if rows:
                    annotator.store.append(rows)  # fsync'ed before the redirect confirms the save
                return annotator.first_unfinished(user.name, i + 1)

        nxt = await run_in_threadpool(save)
        where = "/done" if nxt is None else f"/sample/{nxt + 1}"
        return RedirectResponse(f"{where}?saved={i + 1}", status_code=303)

    @needs("annotator")
    async def done(request: Request, user: User) -> Response:
        return render(
            "done.html",
            done=annotator.done_count(user.name),
            total=len(annotator.samples),
            saved=saved_param(request, user),
            user=user.name,
            csrf=users.csrf_token(user),
        )

    @needs(None)
    async def video(request: Request, user: User) -> Response:
        vid = request.path_params["video_id"]
        path = annotator.frames.video_file(vid) if annotator.frames is not None else None
        if path is None:
            return error(404, f"no video {vid!r} (start the server with --dataset DIR to show videos)")
        return FileResponse(path)  # content type from the suffix; answers Range requests (206)

    @needs(None)
    async def rate_js(request: Request, user: User) -> Response:
        return Response(_RATE_JS, media_type="text/javascript")

    def admin_state() -> tuple[list[dict], dict, list[dict]]:
        with annotator.lock:
            rows = annotator.store.rows()
            names = [u.name for u in users.list_annotators()]
            prog = admin_data.progress(annotator.samples, annotator.store, names)
        return rows, prog, admin_data.agreement(rows)

    @needs("admin")
    async def admin_page(request: Request, user: User) -> Response:
        _, prog, agree = admin_state()
        return render(
            "admin.html",
            progress=prog,
            agreement=agree,
            total=len(annotator.samples),
            dim_labels=DIMENSION_LABELS,
            user=user.name,
            csrf=users.csrf_token(user),
        )

    def download(body: str, media_type: str, name: str) -> Response:
        headers = {"Content-Disposition": f'attachment; filename="{name}"'}
        return Response(body, media_type=media_type, headers=headers)

    @needs("admin")
    async def export(request: Request, user: User) -> Response:
        rows, prog, agree = admin_state()
        name = request.path_params["name"]
        if name == "annotations.csv":
            return download(admin_data.annotations_csv(rows), "text/csv; charset=utf-8", name)
        if name == "annotations.jsonl":
            body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            return download(body, "application/x-ndjson", name)
        if name == "agreement.csv":
            return download(admin_data.agreement_csv(agree), "text/csv; charset=utf-8", name)
        if name == "summary.json":
            body = json.dumps(
                {"samples": len(annotator.samples), "progress": prog, "agreement": agree}, indent=1
            )
            return download(body, "application/json", name)
        return error(404, f"no export {name!r}")

    routes = [
        Route("/login", login),
        Route("/logout", logout, methods=["POST"]),
        Route("/", home),
        Route("/sample/{n:int}", show, methods=["GET"]),
        Route("/sample/{n:int}", submit, methods=["POST"]),
        Route("/done", done),
        Route("/video/{video_id}", video),
        Route("/rate.js", rate_js),
        Route("/admin", admin_page),
        Route("/admin/{name}", export),
    ]
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
