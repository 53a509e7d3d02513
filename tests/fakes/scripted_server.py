"""Shared machinery of the Gemini and OpenAI fakes: a threaded ``http.server`` on 127.0.0.1 (port 0) with a
queue of scripted replies (status, delay, body, headers) and a log of every request, so tests count calls and
inspect exactly what a real client library sent. Like real servers and proxies, a reply can echo the API key
the request carried: ``ECHO_KEY`` in a scripted body or header value is replaced by it, and ``echo_key_header``
adds it as a header to every reply (secrets tests)."""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

ECHO_KEY = "<<the request's key>>"  # in a scripted reply: replaced by the key the request carried


def request_key(headers: dict[str, str], path: str) -> str:
    """The API key a request carried: ``Authorization: Bearer``, the password of ``Authorization: Basic`` (a
    ``user:KEY@`` base URL), ``x-goog-api-key`` or ``?key=``."""
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:]
    if auth.lower().startswith("basic "):
        return base64.b64decode(auth[6:]).decode("utf-8", "replace").partition(":")[2]
    return headers.get("x-goog-api-key") or parse_qs(urlsplit(path).query).get("key", [""])[0]


@dataclass
class Reply:
    """One scripted answer. ``body``: a dict (sent as JSON), str or bytes (sent as is)."""

    status: int = 200
    body: Any = None
    delay_s: float = 0.0  # sleep before answering: longer than the client timeout -> a client-side timeout
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    t: float = 0.0  # time.monotonic() at arrival: tests measure backoff gaps

    def json(self) -> Any:
        return json.loads(self.body)


class ScriptedServer:
    """Base: subclasses implement ``route(req) -> Reply``; ``next_reply()`` pops the script."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._script: list[Reply] = []
        self._lock = threading.Lock()
        self.echo_key_header = False  # True: every reply carries the request's key in X-Echo-Key
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                req = RecordedRequest(self.command, self.path, headers, body, time.monotonic())
                with server._lock:
                    server.requests.append(req)
                reply = server.route(req)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                payload = reply.body
                if isinstance(payload, (dict, list)):
                    payload = json.dumps(payload).encode()
                elif isinstance(payload, str):
                    payload = payload.encode()
                elif payload is None:
                    payload = b""
                key = request_key(headers, self.path)
                payload = payload.replace(ECHO_KEY.encode(), key.encode())
                extra = {"X-Echo-Key": key} if server.echo_key_header and key else {}
                try:
                    self.send_response(reply.status)
                    for k, v in {"Content-Type": "application/json", **reply.headers, **extra}.items():
                        self.send_header(k, v.replace(ECHO_KEY, key))
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            do_GET = do_POST = do_DELETE = do_PUT = _handle

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def push(self, *replies: Reply) -> None:
        """Queue replies for the scripted endpoint, answered in order before the default."""
        with self._lock:
            self._script.extend(replies)

    def next_reply(self) -> Reply | None:
        with self._lock:
            return self._script.pop(0) if self._script else None

    def route(self, req: RecordedRequest) -> Reply:  # pragma: no cover - abstract
        raise NotImplementedError

    def calls(self, path_part: str) -> list[RecordedRequest]:
        """Logged requests whose path contains ``path_part``."""
        with self._lock:
            return [r for r in self.requests if path_part in r.path]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> ScriptedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
