"""Collect Shorts, their statistics and all comment threads from the YouTube Data API v3.

Resumable and lossless: every API response is pseudonymized (author fields -> HMAC) and appended to
``responses.jsonl`` *before* it is processed; ``state.json`` holds the page tokens, so a run stopped by
``quotaExceeded`` (or the local quota budget, or a crash) continues where it stopped. A response that
was stored but whose processing a kill interrupted is replayed from ``responses.jsonl``, not requested
again; comments are deduplicated by id on resume, so a page processed twice adds nothing.

Outputs in ``out_dir``: ``responses.jsonl`` (raw, pseudonymized), ``videos.jsonl`` and
``comments.jsonl`` (the raw input of ``python -m pvllm.data.build``), ``state.json``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pvllm.clients.retry import Failure, RetryPolicy, call_with_retry
from pvllm.data.privacy import Pseudonymizer
from pvllm.utils.jsonl import append_jsonl, read_jsonl_tolerant, write_jsonl
from pvllm.utils.secrets import redact_url, register_secret

log = logging.getLogger(__name__)

# Quota units per call (YouTube Data API v3 quota calculator); the daily default is 10,000.
QUOTA_COST = {"search.list": 100, "videos.list": 1, "commentThreads.list": 1, "playlistItems.list": 1}
API_KEY_ENV = "YOUTUBE_API_KEY"
# Comment threads on these errors are final: the video is skipped and counted, not retried.
SKIP_REASONS = {
    "commentsDisabled": "comments_disabled",
    "videoNotFound": "video_not_found",
    "forbidden": "forbidden",
}
STOP_REASONS = {"quotaExceeded", "dailyLimitExceeded"}


REPLAYED = "_pvllm_replayed"  # marks a response read back from responses.jsonl (already pseudonymized)


def _params_key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, ensure_ascii=False)


def _repair_torn_tail(path: Path) -> None:
    """Drop a torn last line (a kill mid-append; logged) so the next append starts on a fresh line."""
    if path.is_file() and path.stat().st_size and path.read_bytes()[-1:] != b"\n":
        write_jsonl(path, read_jsonl_tolerant(path))


class MissingApiKeyError(RuntimeError):
    """No YouTube Data API key was given."""


class QuotaStop(Exception):
    """The API (or the local budget) says no more calls today; state is saved, rerun to continue."""


@dataclass
class CollectConfig:
    out_dir: Path
    query: str | None = None  # search.list q= (Shorts: videoDuration=short); 100 units per page
    playlist_id: str | None = None  # or list a playlist (1 unit per page)
    video_ids: list[str] = field(default_factory=list)  # or give ids directly
    max_videos: int = 50  # stop discovering after this many video ids
    region_code: str | None = None  # search.list regionCode
    quota_budget: int = 10_000  # local daily budget in units; the run stops cleanly before exceeding it
    max_retries: int = 4  # retries of 429/5xx per call (pvllm.clients.retry.RetryPolicy: attempts = this + 1)
    backoff_s: float = 2.0  # first retry delay; doubles each retry (no jitter: one sequential caller)
    endpoint: str | None = None  # e.g. http://127.0.0.1:PORT for a local server; None = Google's
    api_key_env: str = API_KEY_ENV  # the NAME of the variable holding the API key


def api_reason(err: Exception) -> str:
    """The machine-readable reason code of an HttpError (``quotaExceeded``, ``commentsDisabled``, ...)."""
    try:
        return json.loads(err.content)["error"]["errors"][0]["reason"]
    except Exception:  # a proxy's HTML error page has no JSON reason
        return ""


def _error_body(err: Exception) -> Any:
    try:
        return json.loads(err.content)
    except Exception:  # not JSON: keep a bounded prefix of the text for the record
        return {"raw": err.content[:2000].decode("utf-8", "replace")}


def parse_duration(iso: str | None) -> float | None:
    """ISO-8601 duration of contentDetails (``PT1M2S``) to seconds; None when absent."""
    if not iso:
        return None
    m = re.fullmatch(r"P(?:(\d+)D)?T?(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?", iso)
    if not m:
        return None
    d, h, mi, s = (float(x) if x else 0.0 for x in m.groups())
    return d * 86400 + h * 3600 + mi * 60 + s


def build_client(api_key: str, endpoint: str | None = None):
    from googleapiclient.discovery import build

    opts = {"api_endpoint": endpoint} if endpoint else None
    return build(
        "youtube",
        "v3",
        developerKey=api_key,
        static_discovery=True,
        client_options=opts,
        cache_discovery=False,
    )


def quota_day(now: datetime | None = None) -> str:
    """Quota resets at midnight Pacific time."""
    now = now or datetime.now(timezone.utc)
    return now.astimezone(ZoneInfo("America/Los_Angeles")).date().isoformat()


class YouTubeCollector:
    def __init__(
        self,
        cfg: CollectConfig,
        api_key: str | None = None,
        pseudonymize: Pseudonymizer | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        api_key = api_key or os.environ.get(cfg.api_key_env)
        if not api_key:
            raise MissingApiKeyError(
                f"environment variable {cfg.api_key_env} is not set (a YouTube Data API v3 key)"
            )
        register_secret(api_key)  # cut out of every log, stream and file (an error body may echo it)
        self.cfg = cfg
        self.out = Path(cfg.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.pseudo = pseudonymize or Pseudonymizer()
        self.yt = build_client(api_key, cfg.endpoint)
        self.sleep = sleep
        self.state = self._load_state()
        for name in ("responses.jsonl", "videos.jsonl", "comments.jsonl"):
            _repair_torn_tail(self.out / name)
        self.comment_ids = {c["comment_id"] for c in read_jsonl_tolerant(self.out / "comments.jsonl")}
        self.video_ids_written = {v["video_id"] for v in read_jsonl_tolerant(self.out / "videos.jsonl")}
        # answers already stored (a kill after the append, before its processing was saved): replayed on
        # resume, so no request is sent twice (and no quota spent twice)
        self._stored: dict[tuple[str, str], Any] = {
            (r["call"], _params_key(r["params"])): r["response"]
            for r in read_jsonl_tolerant(self.out / "responses.jsonl") if r.get("status") == 200
        }

    # ---- state ---------------------------------------------------------------------------------
    def _load_state(self) -> dict[str, Any]:
        path = self.out / "state.json"
        if path.exists():
            return json.loads(path.read_text(encoding="utf-8"))
        return {
            "discover": {"page_token": None, "done": False},
            "video_ids": [],
            "stats_done": [],
            "comments": {},  # video_id -> {"page_token", "status"}
            "quota": {},  # quota day -> units used
            "counts": {},
        }

    def _save_state(self) -> None:
        path = self.out / "state.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.state, indent=1, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)

    def _count(self, key: str, n: int = 1) -> None:
        self.state["counts"][key] = self.state["counts"].get(key, 0) + n

    @property
    def quota_used_today(self) -> int:
        return self.state["quota"].get(quota_day(), 0)

    # ---- calls ---------------------------------------------------------------------------------
    def _call(self, name: str, request_fn: Callable[[], Any], params: dict[str, Any]) -> dict[str, Any]:
        """Execute with quota accounting, retries of 429/5xx, and the raw (pseudonymized) append."""
        from googleapiclient.errors import HttpError

        cost = QUOTA_COST[name]
        stored = self._stored.pop((name, _params_key(params)), None)
        if stored is not None:
            self._count(f"replayed.{name}")
            return {**stored, REPLAYED: True}

        def attempt() -> dict[str, Any]:
            if self.quota_used_today + cost > self.cfg.quota_budget:
                raise QuotaStop(f"local quota budget {self.cfg.quota_budget} units reached")
            day = quota_day()
            self.state["quota"][day] = self.state["quota"].get(day, 0) + cost  # failed calls cost quota too
            self._count(f"calls.{name}")
            try:
                resp = request_fn().execute()
            except HttpError as e:
                reason = api_reason(e)
                self._store(name, params, cost, e.status_code, _error_body(e))
                if reason in STOP_REASONS and e.status_code == 403:
                    raise QuotaStop(f"{name}: {reason}") from None
                e.uri = redact_url(e.uri)  # the request URL carries key=...: never print it
                raise
            self._store(name, params, cost, 200, resp)
            return resp

        def classify(e: BaseException) -> Failure:
            if isinstance(e, HttpError) and (e.status_code == 429 or e.status_code >= 500):
                return Failure(retryable=True, reason=f"HTTP {e.status_code} {api_reason(e)}")
            return Failure(retryable=False, reason=str(e))  # raised as it is (reraise): callers tell kinds apart

        # the one retry policy of every remote client (pvllm.clients.retry), with this collector's settings
        policy = RetryPolicy(attempts=self.cfg.max_retries + 1, initial_delay_s=self.cfg.backoff_s,
                             max_delay_s=float("inf"), jitter=0.0)
        return call_with_retry(attempt, policy=policy, classify=classify, what=name, sleep=self.sleep, reraise=True,
                               on_retry=lambda e, f: self._count(f"retries.{e.status_code}"))

    def _store(self, name: str, params: dict[str, Any], cost: int, status: int, body: Any) -> None:
        """Append one response (errors too) with author fields pseudonymized, before any processing."""
        record = {
            "call": name,
            "params": params,
            "units": cost,
            "status": status,
            "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "response": self.pseudo.scrub(body),
        }
        append_jsonl(self.out / "responses.jsonl", [record])

    # ---- stages --------------------------------------------------------------------------------
    def discover(self) -> None:
        """Fill ``state.video_ids`` from explicit ids, a playlist, or a Shorts search, page by page."""
        st = self.state["discover"]
        ids: list[str] = self.state["video_ids"]
        if self.cfg.video_ids and not st["done"]:
            ids.extend(v for v in self.cfg.video_ids if v not in ids)
            st["done"] = True
            self._save_state()
        while not st["done"] and len(ids) < self.cfg.max_videos:
            want = min(50, self.cfg.max_videos - len(ids))
            if self.cfg.playlist_id:
                params = {
                    "part": "contentDetails",
                    "playlistId": self.cfg.playlist_id,
                    "maxResults": want,
                    "pageToken": st["page_token"],
                }
                resp = self._call(
                    "playlistItems.list", lambda p=params: self.yt.playlistItems().list(**p), params
                )
                found = [it["contentDetails"]["videoId"] for it in resp.get("items", [])]
            elif self.cfg.query:
                params = {
                    "part": "id,snippet",
                    "q": self.cfg.query,
                    "type": "video",
                    "videoDuration": "short",  # < 4 min; Shorts are <= 3 min
                    "maxResults": want,
                    "pageToken": st["page_token"],
                }
                if self.cfg.region_code:
                    params["regionCode"] = self.cfg.region_code
                resp = self._call("search.list", lambda p=params: self.yt.search().list(**p), params)
                found = [it["id"]["videoId"] for it in resp.get("items", []) if it["id"].get("videoId")]
            else:
                raise ValueError("give video ids, a playlist id or a search query")
            ids.extend(v for v in found if v not in ids)
            st["page_token"] = resp.get("nextPageToken")
            st["done"] = st["page_token"] is None
            self._save_state()
        if not self.cfg.video_ids:  # explicit ids are all kept; a listing stops at max_videos
            del ids[self.cfg.max_videos :]

    def fetch_stats(self) -> None:
        """videos.list in batches of 50: title, likes (null when hidden), duration; deleted ones counted."""
        done = set(self.state["stats_done"])
        todo = [v for v in self.state["video_ids"] if v not in done]
        for i in range(0, len(todo), 50):
            batch = todo[i : i + 50]
            params = {"part": "snippet,statistics,contentDetails", "id": ",".join(batch), "maxResults": 50}
            resp = self._call("videos.list", lambda p=params: self.yt.videos().list(**p), params)
            found = {it["id"]: it for it in resp.get("items", [])}
            records = []
            for vid in batch:
                it = found.get(vid)
                if it is None:  # deleted or private since discovery
                    self._count("videos_not_found")
                    self.state["comments"][vid] = {"page_token": None, "status": "video_not_found"}
                    continue
                likes = it.get("statistics", {}).get("likeCount")
                if vid not in self.video_ids_written:
                    records.append(
                        {
                            "video_id": vid,
                            "title": it.get("snippet", {}).get("title"),
                            "likes": int(likes)
                            if likes is not None
                            else None,  # hidden count: unknown, not 0
                            "duration_s": parse_duration(it.get("contentDetails", {}).get("duration")),
                            "url": f"https://www.youtube.com/shorts/{vid}",
                        }
                    )
                    self.video_ids_written.add(vid)
            append_jsonl(self.out / "videos.jsonl", records)
            self.state["stats_done"].extend(batch)
            self._save_state()

    def fetch_comments(self, video_id: str) -> None:
        """All top-level comment threads of one video, page by page, resuming from the saved token."""
        from googleapiclient.errors import HttpError

        st = self.state["comments"].setdefault(video_id, {"page_token": None, "status": "pending"})
        if st["status"] not in ("pending", "failed"):
            return
        while True:
            params = {
                "part": "snippet",
                "videoId": video_id,
                "maxResults": 100,
                "textFormat": "plainText",
                "order": "time",
                "pageToken": st["page_token"],
            }
            try:
                resp = self._call(
                    "commentThreads.list", lambda p=params: self.yt.commentThreads().list(**p), params
                )
            except HttpError as e:
                reason = api_reason(e)
                st["status"] = SKIP_REASONS.get(reason, "failed")
                self._count(
                    f"videos_skipped.{st['status']}" + ("" if reason in SKIP_REASONS else f".{e.status_code}")
                )
                log.warning("video %s: comments skipped (HTTP %s %s)", video_id, e.status_code, reason)
                self._save_state()
                return
            records = []
            for it in resp.get("items", []):
                top = it["snippet"]["topLevelComment"]
                sn = top["snippet"]
                if top["id"] in self.comment_ids:
                    self._count("duplicate_comments_skipped")
                    continue
                author = sn.get("authorChannelId", {}).get("value")
                if author is None:  # a comment whose channel is gone: no user to attribute it to
                    self._count("comments_without_author")
                    continue
                # a replayed response was stored pseudonymized already
                user_id = author if resp.get(REPLAYED) else self.pseudo(author)
                records.append(
                    {
                        "comment_id": top["id"],
                        "video_id": video_id,
                        "user_id": user_id,
                        "text": sn.get("textOriginal", ""),  # plain text, not the HTML textDisplay
                        "likes": sn.get("likeCount"),
                        "published_at": sn.get("publishedAt"),
                    }
                )
                self.comment_ids.add(top["id"])
            append_jsonl(self.out / "comments.jsonl", records)
            st["page_token"] = resp.get("nextPageToken")
            if st["page_token"] is None:
                st["status"] = "ok"
            self._save_state()
            if st["status"] == "ok":
                return

    def run(self) -> dict[str, Any]:
        """Discover, read statistics, read comments; returns a summary (``stopped`` names why it stopped)."""
        stopped = None
        try:
            self.discover()
            self.fetch_stats()
            for vid in self.state["video_ids"]:
                self.fetch_comments(vid)
        except QuotaStop as e:
            stopped = str(e)
            log.warning("stopped: %s; state saved in %s, rerun to continue", e, self.out / "state.json")
        finally:
            self._save_state()
        statuses: dict[str, int] = {}
        for st in self.state["comments"].values():
            statuses[st["status"]] = statuses.get(st["status"], 0) + 1
        return {
            "stopped": stopped,
            "videos": len(self.state["video_ids"]),
            "comments": len(self.comment_ids),
            "comment_status": statuses,
            "quota_used_today": self.quota_used_today,
            "counts": dict(self.state["counts"]),
        }
