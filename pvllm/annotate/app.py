"""The annotation web app (paper App. D, Fig. 9): starlette + Jinja2 with autoescape on.

Routes: ``GET /`` -> the first sample this annotator has not finished (or ``/done``);
``GET /sample/{n}`` (1-based) shows a sample; ``POST /sample/{n}`` saves its scores (HTTP 400 and
nothing written when a score is missing or outside the rubric); ``GET /done`` shows the progress.
Model names never reach the page: the models are "Model A, B, ..." in a seeded per-sample order and
the form fields are named by slot (``m0_emotion``), mapped back to generators on the server.
"""

from __future__ import annotations

import re
import secrets
import threading
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

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
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 70em; padding: 0 1em; }
.text { white-space: pre-wrap; overflow-wrap: anywhere; }
.box { border: 1px solid #ccc; border-radius: 6px; padding: .6em .9em; margin: .8em 0; }
.gt { background: #f3f8ff; }
.failed { background: #fff3f3; color: #700; }
.note { color: #555; font-style: italic; }
.error { background: #fee; border: 1px solid #c00; padding: .6em; }
table.scores td, table.scores th { padding: .2em .6em; text-align: center; }
table.scores th.dim { text-align: left; }
.frames img { margin: 2px; border: 1px solid #ddd; }
nav a { margin-right: 1em; }
.progress { float: right; }
</style></head><body>
{% block body %}{% endblock %}
</body></html>
"""

_SAMPLE = """{% extends "base.html" %}
{% block title %}Sample {{ n }} / {{ total }}{% endblock %}
{% block body %}
<nav>
  <span class="progress">{{ done }} / {{ total }} annotated</span>
  {% if n > 1 %}<a href="/sample/{{ n - 1 }}">&larr; previous</a>{% endif %}
  {% if n < total %}<a href="/sample/{{ n + 1 }}">next &rarr;</a>{% endif %}
  <a href="/">first unfinished</a>
</nav>
<h2>Sample {{ n }} / {{ total }}
{% if finished %}<small>(annotated; saving again replaces your scores)</small>{% endif %}</h2>
{% if error %}<p class="error" role="alert">{{ error }}</p>{% endif %}
<details open><summary>Rubric</summary><ul>
{% for v, label in rubric %}<li><b>{{ v | score }}</b>: {{ label }}</li>{% endfor %}
</ul><p class="note">Emotion: how well the generated comment aligns with the emotion of the user's comment.
Language style: how well it aligns with the user's language style. Content relevance: relevance between
the generated comment and the target comment.</p></details>
{% if show_frames %}
<div class="frames">
{% if frames %}{% for src in frames %}<img src="{{ src }}" alt="frame {{ loop.index }}">{% endfor %}
{% else %}<p class="note">No frames: {{ frames_note }}</p>{% endif %}
</div>
{% endif %}
{% if video_id %}<p>Video: <code>{{ video_id }}</code>
{% if video_title %} &mdash; {{ video_title }}{% endif %}</p>{% endif %}
<h3>User's comment history</h3>
{% if history %}<ol class="box">{% for h in history %}<li class="text">{{ h | visible }}</li>{% endfor %}</ol>
{% else %}<p class="note">(no history)</p>{% endif %}
<h3>Ground-truth comment</h3>
<div class="box gt text" id="ground-truth">{{ reference | visible }}</div>
<form method="post" action="/sample/{{ n }}">
<input type="hidden" name="sample_id" value="{{ sample_id }}">
<input type="hidden" name="seed" value="{{ seed }}">
<input type="hidden" name="token" value="{{ token }}">
{% for m in models %}
<div class="box{% if not m.scorable %} failed{% endif %}">
<h3>{{ m.label }}</h3>
{% if m.scorable %}
<div class="text comment">{{ m.text | visible if m.text else "(empty comment)" }}</div>
<table class="scores"><tr><th></th>
{% for v, label in rubric %}<th title="{{ label }}">{{ v | score }}</th>{% endfor %}</tr>
{% for d in dims %}<tr><th class="dim">{{ dim_labels[d] }}</th>
{% for v, label in rubric %}<td><input type="radio" name="{{ m.slot }}_{{ d }}" value="{{ v | score }}"
 title="{{ label }}" aria-label="{{ m.label }} {{ dim_labels[d] }} {{ v | score }}" required
 {%- if m.scores and m.scores[d] == v %} checked{% endif %}></td>{% endfor %}
</tr>{% endfor %}</table>
{% else %}
<p>Generation failed: not scored.</p><p class="note text">{{ m.error }}</p>
{% endif %}
</div>
{% endfor %}
{% if any_scorable %}<button type="submit">Save and continue</button>
{% else %}<p class="note">No model produced a comment for this sample: nothing to score.</p>{% endif %}
</form>
{% endblock %}
"""

_DONE = """{% extends "base.html" %}
{% block title %}Done{% endblock %}
{% block body %}
<h2>{{ done }} / {{ total }} annotated</h2>
{% if done == total %}<p>Every sample is annotated. Thank you! Your scores are in the output file;
you can close this page (or revisit a sample to change its scores).</p>{% endif %}
<p><a href="/sample/1">Go to sample 1</a></p>
{% endblock %}
"""

_ERROR = """{% extends "base.html" %}
{% block title %}Error {{ status }}{% endblock %}
{% block body %}<p class="error">{{ message }}</p>
{% if back %}<p><a href="{{ back }}">Back</a> (your selections were not saved)</p>{% endif %}{% endblock %}
"""


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
            {"base.html": _BASE, "sample.html": _SAMPLE, "done.html": _DONE, "error.html": _ERROR}
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
    """The state behind the app: samples, the annotator's store, the blind order; thread-safe submits."""

    def __init__(
        self, samples: list[Sample], store: AnnotationStore, seed: int = 0, frames: FrameSource | None = None
    ):
        self.samples, self.store, self.seed, self.frames = samples, store, seed, frames
        self.token = secrets.token_urlsafe(16)  # per server start: a form from another site cannot know it
        self.lock = threading.Lock()

    def order(self, s: Sample) -> list[str]:
        return blind_order(s.sample_id, s.outputs, self.seed)

    def done_count(self) -> int:
        return sum(self.store.is_done(s) for s in self.samples)

    def first_unfinished(self, start: int = 0) -> int | None:
        """Index of the first unfinished sample at or after ``start``, wrapping around; None if none."""
        n = len(self.samples)
        for k in range(n):
            i = (start + k) % n
            if not self.store.is_done(self.samples[i]):
                return i
        return None

    def parse_form(self, s: Sample, form: dict[str, Any]) -> list[dict[str, Any]]:
        """The rows a submitted form stands for; ScoreError naming the first bad field otherwise."""
        if str(form.get("sample_id", "")) != s.sample_id:
            raise ScoreError(
                "sample_id",
                f"form is for sample {form.get('sample_id')!r}, not {s.sample_id!r}; reload the page",
            )
        if not secrets.compare_digest(str(form.get("token", "")), self.token):
            raise ScoreError(
                "token",
                "this form does not come from this server's pages (or the server was "
                "restarted); reload the page",
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
            rows.append(annotation_row(s.sample_id, gen, self.store.annotator, scores, created_at))
        return sorted(rows, key=lambda r: r["generator"])  # file order says nothing about the page order

    def page_context(
        self, idx: int, form: dict[str, Any] | None = None, error: str | None = None
    ) -> dict[str, Any]:
        """What sample.html shows; with ``form`` (a rejected submit) its valid choices stay selected."""
        s = self.samples[idx]
        models = []
        for i, gen in enumerate(self.order(s)):
            out = s.outputs[gen]
            scores = self.store.scores(s.sample_id, gen)
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
        frames, note = ([], None)
        if self.frames is not None:
            frames, note = self.frames.thumbnails(s.video_id)
        return {
            "n": idx + 1,
            "total": len(self.samples),
            "done": self.done_count(),
            "finished": self.store.is_done(s) and bool(s.scorable_generators()),
            "sample_id": s.sample_id,
            "seed": self.seed,
            "token": self.token,
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
            "error": error,
            "video_id": s.video_id,
            "video_title": self.frames.title(s.video_id) if self.frames else None,
        }


def create_app(annotator: Annotator, allowed_hosts: list[str] | None = None) -> Starlette:
    env = make_env()

    def render(name: str, http_status: int = 200, **ctx: Any) -> HTMLResponse:
        return HTMLResponse(env.get_template(name).render(**ctx), status_code=http_status)

    def error(status: int, message: str, back: str | None = None) -> HTMLResponse:
        return render("error.html", status, status=status, message=message, back=back)

    def index_of(request: Request) -> int | None:
        n = request.path_params["n"]
        return n - 1 if 1 <= n <= len(annotator.samples) else None

    def home(request: Request) -> Response:  # sync handlers run in the thread pool (frame decoding)
        i = annotator.first_unfinished()
        return RedirectResponse("/done" if i is None else f"/sample/{i + 1}", status_code=303)

    def show(request: Request) -> Response:
        i = index_of(request)
        if i is None:
            return error(404, f"no sample {request.path_params['n']} (there are {len(annotator.samples)})")
        return render("sample.html", **annotator.page_context(i))

    async def submit(request: Request) -> Response:
        i = index_of(request)
        if i is None:
            return error(404, f"no sample {request.path_params['n']} (there are {len(annotator.samples)})")
        form = dict((await request.form()).items())
        s = annotator.samples[i]
        try:
            rows = annotator.parse_form(s, form)
        except ScoreError as e:
            if e.field in ("sample_id", "seed", "token"):  # a stale page: the choices cannot be mapped back
                return error(400, str(e), back=f"/sample/{i + 1}")
            return render("sample.html", 400, **annotator.page_context(i, form=form, error=f"Not saved: {e}"))
        with annotator.lock:
            if rows:
                annotator.store.append(rows)
            nxt = annotator.first_unfinished(i + 1)
        return RedirectResponse("/done" if nxt is None else f"/sample/{nxt + 1}", status_code=303)

    def done(request: Request) -> Response:
        return render("done.html", done=annotator.done_count(), total=len(annotator.samples))

    routes = [
        Route("/", home),
        Route("/sample/{n:int}", show, methods=["GET"]),
        Route("/sample/{n:int}", submit, methods=["POST"]),
        Route("/done", done),
    ]
    middleware = []
    if allowed_hosts:  # a loopback server answers only to loopback names (no DNS rebinding)
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)))
    app = Starlette(routes=routes, middleware=middleware)
    app.state.annotator = annotator
    return app


def build_app(
    predictions: list[str | Path],
    annotator: str,
    out: str | Path,
    seed: int = 0,
    dataset: str | Path | None = None,
    allowed_hosts: list[str] | None = None,
    users: int | None = None,
    users_seed: int = 0,
) -> Starlette:
    """Load the runs and the annotator's previous work (resume) and return the app.

    ``users``: annotate only that many random users (seeded by ``users_seed``), one sample each.
    """
    from pvllm.annotate.store import load_samples, pick_users

    samples = load_samples(predictions)
    if users is not None:
        samples = pick_users(samples, users, users_seed)
    store = AnnotationStore(out, annotator)
    frames = FrameSource(dataset) if dataset is not None else None
    return create_app(Annotator(samples, store, seed=seed, frames=frames), allowed_hosts=allowed_hosts)
