"""A local OpenAI-compatible server: ``POST /v1/chat/completions`` (what vLLM and OpenAI both serve).

The scripted queue answers first, then ``default_text`` (a str or a callable of the request JSON).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from .scripted_server import RecordedRequest, Reply, ScriptedServer


def completion_reply(
    text: str | None, model: str = "fake-model", finish_reason: str = "stop"
) -> dict[str, Any]:
    """The chat.completions answer carrying ``text``."""
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
        ],
    }


class FakeOpenAIServer(ScriptedServer):
    def __init__(self, default_text: str | Callable[[dict], str] = "a fake comment", latency_s: float = 0.0):
        super().__init__()
        self.default_text = default_text
        self.latency_s = latency_s  # every default reply waits this long (a served model's response time)
        self._ids = itertools.count(1)

    def chat_calls(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.startswith("/v1/chat/completions")]

    def route(self, req: RecordedRequest) -> Reply:
        if req.method == "POST" and req.path.startswith("/v1/chat/completions"):
            scripted = self.next_reply()
            if scripted is not None:
                return scripted
            body = req.json()
            text = self.default_text(body) if callable(self.default_text) else self.default_text
            reply = completion_reply(text, model=body.get("model", "fake-model"))
            return Reply(200, reply, delay_s=self.latency_s)
        return Reply(404, {"error": {"message": f"no route {req.method} {req.path}", "type": "not_found"}})
