"""A local Gemini API (google-genai speaks to it through ``HttpOptions(base_url=...)``).

Endpoints (``v1`` and ``v1beta`` both accepted):
- ``POST /{v}/models/<model>:generateContent`` (Gemini API) and
  ``POST /{v}/projects/<p>/locations/<l>/publishers/google/models/<model>:generateContent`` (Vertex AI):
  the scripted queue, then ``default_text`` (a str or
  a callable of the request JSON);
- Google's resumable upload: ``POST /upload/{v}/files`` (start; answers ``X-Goog-Upload-URL``), chunk
  POSTs to that URL (``X-Goog-Upload-Status: active|final``), ``GET /{v}/files/<id>`` (state PROCESSING for
  ``processing_polls`` polls, then ACTIVE), ``DELETE /{v}/files/<id>``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from typing import Any

from .scripted_server import RecordedRequest, Reply, ScriptedServer

# Gemini API: /v1[beta]/models/M; Vertex AI: /v1[beta1]/projects/P/locations/L/publishers/google/models/M
GENERATE_RE = re.compile(
    r"^/v1(beta1?)?/(projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/publishers/google/)?"
    r"models/(?P<model>[^/:?]+):generateContent"
)
FILE_RE = re.compile(r"^/v1(beta)?/files/(?P<id>[^/?]+)")


def text_reply(text: str, finish_reason: str = "STOP") -> dict[str, Any]:
    """The minimal generateContent answer carrying ``text``."""
    return {
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": finish_reason}
        ],
        "modelVersion": "fake-gemini-001",
    }


class FakeGeminiServer(ScriptedServer):
    def __init__(
        self, default_text: str | Callable[[dict], str] = "a fake comment", processing_polls: int = 0
    ):
        super().__init__()
        self.default_text = default_text
        self.processing_polls = processing_polls
        self.files: dict[str, dict[str, Any]] = {}  # id -> {"bytes", "mime_type", "polls", "deleted"}
        self._ids = itertools.count(1)

    # -- views for tests ----------------------------------------------------------------------------
    def generate_calls(self) -> list[RecordedRequest]:
        return [r for r in self.requests if GENERATE_RE.match(r.path)]

    def uploaded_bytes(self) -> list[bytes]:
        return [f["bytes"] for f in self.files.values()]

    # -- routing ------------------------------------------------------------------------------------
    def route(self, req: RecordedRequest) -> Reply:
        if req.method == "POST" and GENERATE_RE.match(req.path):
            scripted = self.next_reply()
            if scripted is not None:
                return scripted
            text = self.default_text(req.json()) if callable(self.default_text) else self.default_text
            return Reply(200, text_reply(text))
        if req.method == "POST" and re.match(r"^/upload/v1(beta)?/files", req.path):
            return self._upload_start(req)
        if req.method == "POST" and req.path.startswith("/upload-session/"):
            return self._upload_chunk(req)
        m = FILE_RE.match(req.path)
        if m and req.method == "GET":
            return self._file_get(m["id"])
        if m and req.method == "DELETE":
            self.files[m["id"]]["deleted"] = True
            return Reply(200, {})
        return Reply(
            404,
            {"error": {"code": 404, "message": f"no route {req.method} {req.path}", "status": "NOT_FOUND"}},
        )

    def _file_json(self, fid: str, state: str) -> dict[str, Any]:
        f = self.files[fid]
        return {
            "name": f"files/{fid}",
            "uri": f"{self.url}/v1beta/files/{fid}",
            "mimeType": f["mime_type"],
            "sizeBytes": str(len(f["bytes"])),
            "state": state,
        }

    def _upload_start(self, req: RecordedRequest) -> Reply:
        fid = f"f{next(self._ids)}"
        meta = req.json().get("file", {}) if req.body else {}
        self.files[fid] = {
            "bytes": b"",
            "mime_type": meta.get("mime_type") or meta.get("mimeType") or "application/octet-stream",
            "polls": 0,
            "deleted": False,
            "start_headers": req.headers,
        }
        return Reply(200, {}, headers={"X-Goog-Upload-URL": f"{self.url}/upload-session/{fid}"})

    def _upload_chunk(self, req: RecordedRequest) -> Reply:
        fid = req.path.rsplit("/", 1)[-1]
        f = self.files[fid]
        f["bytes"] += req.body
        if "finalize" in req.headers.get("x-goog-upload-command", ""):
            state = "PROCESSING" if self.processing_polls else "ACTIVE"
            return Reply(
                200, {"file": self._file_json(fid, state)}, headers={"X-Goog-Upload-Status": "final"}
            )
        return Reply(200, {}, headers={"X-Goog-Upload-Status": "active"})

    def _file_get(self, fid: str) -> Reply:
        f = self.files[fid]
        f["polls"] += 1
        state = "ACTIVE" if f["polls"] > self.processing_polls else "PROCESSING"
        return Reply(200, self._file_json(fid, state))
