"""Any OpenAI-compatible chat server (OpenAI, vLLM serving a video LLM, ...) fed with sampled frames.

The user turn is the ``num_frames`` uniformly sampled frames (``pvllm.data.video_io.read_frames``, the
same sampling as PV-LLM) as JPEG data URLs, then the Figure-5 text. Sampling: the server's defaults unless
``sampling`` sets fields; ``greedy: true`` sends temperature 0.
"""

from __future__ import annotations

import base64
import io
import logging
import time
from typing import Any

from pvllm.clients.openai_client import classify_openai_error, completion_text, make_openai_client
from pvllm.clients.retry import AuthError, RemoteCallError, RemoteCalls
from pvllm.generators.base import GENERATORS, GenerationRequest, GenerationResult, Generator

log = logging.getLogger(__name__)


def frames_to_data_urls(frames: Any, jpeg_quality: int = 90, max_side: int | None = None) -> list[str]:
    """uint8 (T, H, W, 3) frames -> ``data:image/jpeg;base64,...`` strings (downscaled to ``max_side``)."""
    from PIL import Image

    urls = []
    for frame in frames:
        img = Image.fromarray(frame)
        if max_side and max(img.size) > max_side:
            scale = max_side / max(img.size)
            img = img.resize(
                (max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BICUBIC
            )
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(jpeg_quality))
        urls.append("data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"))
    return urls


@GENERATORS.register("openai_compatible")
class OpenAICompatibleGenerator(Generator):
    """Frames as image data URLs + the prompt in one user turn; ``max_concurrency`` requests in flight."""

    def __init__(
        self,
        model: str,
        num_frames: int = 8,
        max_side: int | None = 512,
        jpeg_quality: int = 90,
        sampling: dict[str, Any] | None = None,
        greedy: bool = False,
        timeout_s: float = 120.0,
        retry: dict[str, Any] | None = None,
        max_concurrency: int = 4,
        requests_per_minute: float | None = None,
        batch_size: int = 8,
        **endpoint: Any,
    ):
        """``endpoint``: ``base_url``, ``api_key_env`` (default ``OPENAI_API_KEY``; null for a server without
        authentication), as ``pvllm.clients.openai_client.make_openai_client`` takes them."""
        self.model = model
        # chat.completions fields (temperature, top_p, max_tokens, seed, ...); {} = the server's defaults.
        self.params = dict(sampling or {})
        if greedy:
            self.params.update(temperature=0.0)
        self.num_frames = int(num_frames)
        self.max_side = max_side
        self.jpeg_quality = int(jpeg_quality)
        self.calls = RemoteCalls(retry, max_concurrency, requests_per_minute, classify_openai_error)
        self.batch_size = int(batch_size)
        self.client = make_openai_client(
            timeout_s=timeout_s, purpose=f"the openai_compatible generator ({model})", **endpoint
        )

    @property
    def model_id(self) -> str:
        return self.model

    @property
    def generation_config(self) -> dict[str, Any]:
        return {
            **self.params,
            "server_defaults": not self.params,
            "num_frames": self.num_frames,
            "max_side": self.max_side,
            "jpeg_quality": self.jpeg_quality,
        }

    def _messages(self, req: GenerationRequest) -> list[dict[str, Any]]:
        from pvllm.data.video_io import read_frames

        frames = read_frames(req.video_path, self.num_frames)
        content: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": u}}
            for u in frames_to_data_urls(frames, self.jpeg_quality, self.max_side)
        ]
        content.append({"type": "text", "text": req.prompt})
        return [{"role": "user", "content": content}]

    def _one(self, req: GenerationRequest) -> GenerationResult:
        from pvllm.data.video_io import VideoReadError

        what = f"openai_compatible {self.model} sample {req.sample_id}"
        t0 = time.perf_counter()
        try:
            messages = self._messages(req)
            text = self.calls.call(
                lambda: completion_text(
                    self.client.chat.completions.create(model=self.model, messages=messages, **self.params)
                ),
                what,
            )
            return GenerationResult(req.sample_id, text.strip(), None, time.perf_counter() - t0)
        except AuthError:
            raise
        except VideoReadError as e:
            log.error("%s: %s", what, e)
            return GenerationResult(req.sample_id, None, f"{what}: {e}", time.perf_counter() - t0)
        except RemoteCallError as e:
            log.error("%s", e)
            return GenerationResult(req.sample_id, None, str(e), time.perf_counter() - t0)

    def generate(self, batch: list[GenerationRequest]) -> list[GenerationResult]:
        return self.calls.map(self._one, batch)

    def close(self) -> None:
        self.client.close()
