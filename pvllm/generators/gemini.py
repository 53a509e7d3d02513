"""Gemini (paper: Gemini-1.5-Flash/Pro through Vertex AI, May 2024 versions) through google-genai.

The video goes first as inline bytes or as an uploaded file (Gemini Developer API's resumable upload), then
the Figure-5 text (``GenerationRequest.prompt``). Sampling: the model's own defaults (paper, App.: "We use the
default sampling parameter"), i.e. no sampling field is sent unless ``sampling`` sets one; ``greedy: true``
sends temperature 0.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import threading
import time
from typing import Any

from pvllm.clients.gemini_client import classify_gemini_error, make_gemini_client, reply_text
from pvllm.clients.retry import AuthError, RemoteCallError, RemoteCalls
from pvllm.generators.base import GENERATORS, GenerationRequest, GenerationResult, Generator

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gemini-3.5-flash"
TRANSPORTS = ("inline", "upload", "auto")
INLINE_MAX_BYTES = 20 * 1024 * 1024  # the API's limit on a whole inline request


class VideoTransportError(RuntimeError):
    """The video cannot be sent (too large for inline, upload failed or never became ACTIVE)."""


@GENERATORS.register("gemini")
class GeminiGenerator(Generator):
    """Gemini API / Vertex AI generator; one request per sample, ``max_concurrency`` in flight."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        sampling: dict[str, Any] | None = None,
        greedy: bool = False,
        video_transport: str = "auto",
        inline_max_bytes: int = INLINE_MAX_BYTES,
        vertexai: bool = False,
        timeout_s: float = 300.0,
        retry: dict[str, Any] | None = None,
        max_concurrency: int = 4,
        requests_per_minute: float | None = None,
        upload_poll_s: float = 2.0,
        upload_timeout_s: float = 600.0,
        delete_uploaded: bool = True,
        batch_size: int = 8,
        **endpoint: Any,
    ):
        """``endpoint``: ``api_key_env``, ``project``, ``location``, ``base_url``, ``api_version``, as
        ``pvllm.clients.gemini_client.make_gemini_client`` takes them."""
        if video_transport not in TRANSPORTS:
            raise ValueError(f"video_transport must be one of {TRANSPORTS}, got {video_transport!r}")
        if vertexai and video_transport == "upload":
            raise ValueError(
                "video_transport=upload needs the Gemini Developer API (Vertex AI has no files.upload)"
            )
        self.model = model
        # GenerateContentConfig fields (temperature, top_p, max_output_tokens, ...); {} = the model's defaults.
        self.params = dict(sampling or {})
        if greedy:
            self.params.update(temperature=0.0)
        self.video_transport = video_transport
        self.inline_max_bytes = int(inline_max_bytes)
        self.vertexai = bool(vertexai)
        self.calls = RemoteCalls(retry, max_concurrency, requests_per_minute, classify_gemini_error)
        self.upload_poll_s = float(upload_poll_s)
        self.upload_timeout_s = float(upload_timeout_s)
        self.delete_uploaded = bool(delete_uploaded)
        self.batch_size = int(batch_size)
        # Fails here, before any work, when the key (or Vertex project/credentials) is missing.
        self.client = make_gemini_client(
            vertexai=vertexai, timeout_s=timeout_s, purpose=f"the gemini generator ({model})", **endpoint
        )
        self._uploads: dict[str, Any] = {}  # video path -> uploaded File (reused by samples of one video)
        self._upload_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return f"{'vertex' if self.vertexai else 'gemini-api'}:{self.model}"

    @property
    def generation_config(self) -> dict[str, Any]:
        # Exactly the sampling fields sent; none sent means the model's own server-side defaults.
        return {**self.params, "server_defaults": not self.params, "video_transport": self.video_transport}

    # -- one sample ---------------------------------------------------------------------------------
    def _call(self, fn: Any, what: str) -> Any:
        return self.calls.call(fn, what)

    def _video_part(self, path: str, what: str) -> Any:
        from google.genai import types

        size = os.path.getsize(path)  # FileNotFoundError names the path
        mime = mimetypes.guess_type(path)[0] or "video/mp4"
        transport = self.video_transport
        if transport == "auto":
            transport = "inline" if size <= self.inline_max_bytes or self.vertexai else "upload"
        if transport == "inline":
            if size > self.inline_max_bytes:
                raise VideoTransportError(
                    f"{what}: video {path} is {size} bytes, over inline_max_bytes={self.inline_max_bytes}"
                )
            with open(path, "rb") as f:
                return types.Part.from_bytes(data=f.read(), mime_type=mime)
        uploaded = self._upload(path, mime, what)
        return types.Part.from_uri(file_uri=uploaded.uri, mime_type=uploaded.mime_type or mime)

    def _upload(self, path: str, mime: str, what: str) -> Any:
        with self._locks_lock:
            lock = self._upload_locks.setdefault(path, threading.Lock())
        with lock:
            if path in self._uploads:
                return self._uploads[path]
            f = self._call(
                lambda: self.client.files.upload(file=path, config={"mime_type": mime}),
                f"{what} (upload {path})",
            )
            deadline = time.monotonic() + self.upload_timeout_s
            # Uploaded videos are PROCESSING for a while; generateContent rejects them until ACTIVE.
            while _state(f) == "PROCESSING":
                if time.monotonic() > deadline:
                    raise VideoTransportError(
                        f"{what}: upload {f.name} still PROCESSING after {self.upload_timeout_s}s"
                    )
                time.sleep(self.upload_poll_s)
                f = self._call(
                    lambda name=f.name: self.client.files.get(name=name), f"{what} (poll {f.name})"
                )
            if _state(f) != "ACTIVE":
                raise VideoTransportError(f"{what}: upload {f.name} ended in state {_state(f)}")
            self._uploads[path] = f
            return f

    def _one(self, req: GenerationRequest) -> GenerationResult:
        from google.genai import types

        what = f"gemini {self.model} sample {req.sample_id}"
        t0 = time.perf_counter()
        try:
            video = self._video_part(req.video_path, what)
            config = types.GenerateContentConfig(**self.params) if self.params else None
            text = self._call(
                lambda: reply_text(
                    self.client.models.generate_content(
                        model=self.model, contents=[video, req.prompt], config=config
                    )
                ),
                what,
            )
            return GenerationResult(req.sample_id, text.strip(), None, time.perf_counter() - t0)
        except AuthError:
            raise  # a bad key fails every later sample too
        except (RemoteCallError, VideoTransportError, OSError) as e:
            log.error("%s", e)
            return GenerationResult(req.sample_id, None, str(e), time.perf_counter() - t0)

    def generate(self, batch: list[GenerationRequest]) -> list[GenerationResult]:
        return self.calls.map(self._one, batch)

    def close(self) -> None:
        if self.delete_uploaded:
            for path, f in list(self._uploads.items()):
                try:
                    self.client.files.delete(name=f.name)
                except Exception as e:  # cleanup only: the files expire after 48 h anyway
                    log.warning("could not delete uploaded %s (%s): %s", f.name, path, e)
        self._uploads.clear()
        self.client.close()


def _state(f: Any) -> str:
    state = getattr(f, "state", None)
    if state is None:
        return "ACTIVE"  # the API omits state for files that need no processing
    return getattr(state, "value", None) or str(state)
