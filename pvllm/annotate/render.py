"""Rendering of the annotation app's pages: the Jinja2 templates (autoescape on: comments are untrusted
text), the page script, and the response headers every page carries."""

from __future__ import annotations

import re

import jinja2
from starlette.datastructures import MutableHeaders

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

