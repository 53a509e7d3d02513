"""A local HTTP server speaking the YouTube Data API v3 wire format (the parts pvllm calls).

Serves ``search``, ``playlistItems``, ``videos`` and ``commentThreads`` under ``/youtube/v3/`` with
opaque page tokens and Google's error body, so the real google-api-python-client can talk to it.
Faults are scripted per endpoint and call number: ``server.faults[("commentThreads", 3)] = (403,
"quotaExceeded")`` makes the third commentThreads call fail.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

ERROR_DOMAINS = {"quotaExceeded": "youtube.quota", "commentsDisabled": "youtube.commentThread"}


@dataclass
class FakeComment:
    comment_id: str
    author_channel_id: str
    author_name: str
    text: str
    likes: int = 0
    published_at: str = "2024-01-01T00:00:00Z"


@dataclass
class FakeVideo:
    video_id: str
    title: str
    likes: int | None  # None: the owner hides the count (statistics.likeCount absent)
    duration: str = "PT45S"
    comments: list[FakeComment] = field(default_factory=list)
    comments_disabled: bool = False
    listed_only: bool = False  # found by search but deleted since: absent from videos.list


class FakeYouTube:
    """Holds the fake catalogue, counts calls, logs requests (without the key) and injects faults."""

    def __init__(self, videos: list[FakeVideo], page_size: int = 2, search_page_size: int = 2):
        self.videos = {v.video_id: v for v in videos}
        self.page_size = page_size
        self.search_page_size = search_page_size
        self.faults: dict[tuple[str, int], tuple[int, str]] = {}
        self.calls: dict[str, int] = {}
        self.log: list[tuple[str, dict[str, str]]] = []
        self.keys_seen: set[str] = set()
        # True: error bodies and an X-Echo-Key header repeat the request's key (as some proxies and pages do)
        self.echo_key = False
        # (endpoint, n): on receiving that call, SIGKILL process `kill_pid` before answering (kill -9 tests)
        self.kill_on: tuple[str, int] | None = None
        self.kill_pid: int | None = None
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # ---- server lifecycle -------------------------------------------------------------------
    def start(self) -> str:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server API)
                status, body = fake.handle(self.path)
                data = json.dumps(body).encode()
                self.send_response(status)
                if fake.echo_key:
                    self.send_header("X-Echo-Key", parse_qs(urlparse(self.path).query).get("key", [""])[0])
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep test output quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    # ---- API ----------------------------------------------------------------------------------
    def handle(self, raw_path: str) -> tuple[int, dict[str, Any]]:
        url = urlparse(raw_path)
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        prefix = "/youtube/v3/"
        if not url.path.startswith(prefix):
            return error(404, "notFound", f"no route {url.path}")
        endpoint = url.path[len(prefix) :]
        with self._lock:
            n = self.calls[endpoint] = self.calls.get(endpoint, 0) + 1
            key = params.pop("key", "")
            self.keys_seen.add(key)
            self.log.append((endpoint, params))
        if self.kill_on == (endpoint, n) and self.kill_pid:
            os.kill(self.kill_pid, signal.SIGKILL)  # the client dies waiting for this answer
            return error(503, "backendError", "client killed")
        if (endpoint, n) in self.faults:
            status, reason = self.faults[(endpoint, n)]
            return error(status, reason, f"scripted {reason}" + (f" for API key {key}" if self.echo_key else ""))
        handler = getattr(self, "_" + endpoint, None)
        if handler is None:
            return error(404, "notFound", f"no route {url.path}")
        return handler(params)

    def _page(self, items: list, params: dict[str, str], size: int) -> tuple[list, dict[str, str]]:
        token = params.get("pageToken")
        start = int(token[3:]) if token else 0
        size = min(size, int(params.get("maxResults", size)))
        extra = {"nextPageToken": f"tok{start + size}"} if start + size < len(items) else {}
        return items[start : start + size], extra

    def _search(self, params):
        ids = list(self.videos)
        page, extra = self._page(ids, params, self.search_page_size)
        items = [
            {
                "kind": "youtube#searchResult",
                "id": {"kind": "youtube#video", "videoId": vid},
                "snippet": {"title": self.videos[vid].title, "channelId": "UCcreatorRaw0001"},
            }
            for vid in page
        ]
        return 200, {"kind": "youtube#searchListResponse", "items": items, **extra}

    def _playlistItems(self, params):  # noqa: N802 (API name)
        ids = list(self.videos)
        page, extra = self._page(ids, params, self.search_page_size)
        items = [
            {"contentDetails": {"videoId": vid}, "snippet": {"title": self.videos[vid].title}} for vid in page
        ]
        return 200, {"kind": "youtube#playlistItemListResponse", "items": items, **extra}

    def _videos(self, params):
        items = []
        for vid in params.get("id", "").split(","):
            v = self.videos.get(vid)
            if v is None or v.listed_only:
                continue
            stats = {"viewCount": "1000", "commentCount": str(len(v.comments))}
            if v.likes is not None:
                stats["likeCount"] = str(v.likes)
            items.append(
                {
                    "kind": "youtube#video",
                    "id": vid,
                    "snippet": {"title": v.title, "channelId": "UCcreatorRaw0001"},
                    "statistics": stats,
                    "contentDetails": {"duration": v.duration},
                }
            )
        return 200, {"kind": "youtube#videoListResponse", "items": items}

    def _commentThreads(self, params):  # noqa: N802 (API name)
        v = self.videos.get(params.get("videoId", ""))
        if v is None or v.listed_only:
            return error(
                404, "videoNotFound", "The video identified by the videoId parameter could not be found."
            )
        if v.comments_disabled:
            return error(403, "commentsDisabled", "The video has disabled comments.")
        page, extra = self._page(v.comments, params, self.page_size)
        items = [thread(v.video_id, c) for c in page]
        return 200, {"kind": "youtube#commentThreadListResponse", "items": items, **extra}


def thread(video_id: str, c: FakeComment) -> dict[str, Any]:
    return {
        "kind": "youtube#commentThread",
        "id": c.comment_id,
        "snippet": {
            "videoId": video_id,
            "channelId": "UCcreatorRaw0001",
            "topLevelComment": {
                "kind": "youtube#comment",
                "id": c.comment_id,
                "snippet": {
                    "videoId": video_id,
                    "textDisplay": c.text.replace("&", "&amp;").replace("\n", "<br>"),
                    "textOriginal": c.text,
                    "authorDisplayName": c.author_name,
                    "authorProfileImageUrl": f"https://yt3.ggpht.com/{c.author_channel_id}",
                    "authorChannelUrl": f"http://www.youtube.com/{c.author_name}",
                    "authorChannelId": {"value": c.author_channel_id},
                    "likeCount": c.likes,
                    "publishedAt": c.published_at,
                    "updatedAt": c.published_at,
                },
            },
            "totalReplyCount": 0,
        },
    }


def error(status: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
    domain = ERROR_DOMAINS.get(reason, "youtube.api")
    return status, {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"message": message, "domain": domain, "reason": reason}],
        }
    }
