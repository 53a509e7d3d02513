"""The rating page of an annotator: ``GET|POST /sample/{n}`` (1-based; a rejected submit writes nothing and
shows why, with the valid choices kept), ``/done``, the ``--dataset`` video (Range requests) and the script."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route

from pvllm.annotate.auth import User
from pvllm.annotate.forms import Annotator
from pvllm.annotate.render import _RATE_JS
from pvllm.annotate.store import ScoreError
from pvllm.annotate.web import Site


def index_of(ann: Annotator, request: Request) -> int | None:
    n = request.path_params["n"]
    return n - 1 if 1 <= n <= len(ann.samples) else None


def saved_param(ann: Annotator, request: Request, user: User) -> int | None:
    """The sample that ``?saved=n`` confirms, if this annotator's scores of it are on disk."""
    v = request.query_params.get("saved", "")
    n = int(v) if v.isdigit() else 0
    return n if 1 <= n <= len(ann.samples) and ann.store.is_done(user.name, ann.samples[n - 1]) else None


def routes(site: Site) -> list[Route]:
    ann = site.annotator

    def no_sample(request: Request) -> Response:
        return site.error(404, f"no sample {request.path_params['n']} (there are {len(ann.samples)})")

    @site.needs("annotator")
    def show(request: Request, user: User) -> Response:
        i = index_of(ann, request)
        if i is None:
            return no_sample(request)
        return site.page("sample.html", user, **ann.page_context(user.name, i), saved=saved_param(ann, request, user))

    @site.needs("annotator", state_changing=True)
    async def submit(request: Request, user: User) -> Response:
        i = index_of(ann, request)
        if i is None:
            return no_sample(request)
        form = dict((await request.form()).items())
        try:
            rows = ann.parse_form(ann.samples[i], form, user.name)  # the name comes from the login, not the form
        except ScoreError as e:
            if e.field in ("sample_id", "seed"):  # a stale page: the choices cannot be mapped back
                return site.error(400, str(e), back=f"/sample/{i + 1}")
            ctx = await run_in_threadpool(ann.page_context, user.name, i, form, f"Not saved: {e}")
            return site.page("sample.html", user, 400, **ctx, saved=None)

        def save() -> int | None:
            with ann.lock:
                if rows:
                    ann.store.append(rows)  # fsync'ed before the redirect confirms the save
                return ann.first_unfinished(user.name, i + 1)

        nxt = await run_in_threadpool(save)
        where = "/done" if nxt is None else f"/sample/{nxt + 1}"
        return RedirectResponse(f"{where}?saved={i + 1}", status_code=303)

    @site.needs("annotator")
    async def done(request: Request, user: User) -> Response:
        return site.page("done.html", user, done=ann.done_count(user.name), total=len(ann.samples),
                         saved=saved_param(ann, request, user))

    @site.needs(None)
    async def video(request: Request, user: User) -> Response:
        vid = request.path_params["video_id"]
        path = ann.frames.video_file(vid) if ann.frames is not None else None
        if path is None:
            return site.error(404, f"no video {vid!r} (start the server with --dataset DIR to show videos)")
        return FileResponse(path)  # content type from the suffix; answers Range requests (206)

    @site.needs(None)
    async def rate_js(request: Request, user: User) -> Response:
        return Response(_RATE_JS, media_type="text/javascript")

    return [Route("/sample/{n:int}", show, methods=["GET"]), Route("/sample/{n:int}", submit, methods=["POST"]),
            Route("/done", done), Route("/video/{video_id}", video), Route("/rate.js", rate_js)]
