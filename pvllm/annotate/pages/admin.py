"""The admin page: progress per annotator and agreement (Krippendorff's α), and its downloads."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pvllm.annotate import admin as admin_data
from pvllm.annotate.auth import User
from pvllm.annotate.store import DIMENSION_LABELS
from pvllm.annotate.web import Site


def download(body: str, media_type: str, name: str) -> Response:
    return Response(body, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{name}"'})


def routes(site: Site) -> list[Route]:
    ann = site.annotator

    def state() -> tuple[list[dict], dict, list[dict]]:
        with ann.lock:
            rows = ann.store.rows()
            names = [u.name for u in site.users.list_annotators()]
            prog = admin_data.progress(ann.samples, ann.store, names)
        return rows, prog, admin_data.agreement(rows)

    @site.needs("admin")
    async def admin_page(request: Request, user: User) -> Response:
        _, prog, agree = state()
        return site.page("admin.html", user, progress=prog, agreement=agree, total=len(ann.samples),
                         dim_labels=DIMENSION_LABELS)

    @site.needs("admin")
    async def export(request: Request, user: User) -> Response:
        rows, prog, agree = state()
        name = request.path_params["name"]
        if name == "annotations.csv":
            return download(admin_data.annotations_csv(rows), "text/csv; charset=utf-8", name)
        if name == "annotations.jsonl":
            return download("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                            "application/x-ndjson", name)
        if name == "agreement.csv":
            return download(admin_data.agreement_csv(agree), "text/csv; charset=utf-8", name)
        if name == "summary.json":
            body = json.dumps({"samples": len(ann.samples), "progress": prog, "agreement": agree}, indent=1)
            return download(body, "application/json", name)
        return site.error(404, f"no export {name!r}")

    return [Route("/admin", admin_page), Route("/admin/{name}", export)]
