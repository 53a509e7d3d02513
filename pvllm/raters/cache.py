"""Every LLM-rater request goes through here: a SQLite (WAL) cache keyed by the full request.

A rerun of an evaluation makes zero calls; a process killed mid-run loses nothing that was answered
(each answer is committed as it arrives). Misses run with bounded concurrency and an optional rate
limit, under a progress bar with ETA. Failed requests (None) are not cached, so a rerun retries them;
replies FICL could not parse even after the re-ask are evicted (``evict``) for the same reason.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from pvllm.raters.base import LLMRater

_SCHEMA = """CREATE TABLE IF NOT EXISTS replies (
    key TEXT PRIMARY KEY, backend TEXT, model TEXT, params TEXT, prompt TEXT, reply TEXT, created_at REAL
)"""


def request_key(backend: str, model: str, prompt: str, params: dict[str, Any]) -> str:
    """sha256 of (backend, model, full prompt, parameters) in a canonical JSON form."""
    blob = json.dumps([backend, model, prompt, params], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _run_sync(coro):
    """asyncio.run, also when called from inside a running event loop (e.g. a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


class CachedRater(LLMRater):
    """Wraps an LLMRater: same ``complete``, answered from the cache where possible."""

    def __init__(
        self,
        rater: LLMRater,
        path: str | Path,
        *,
        max_concurrency: int | None = None,
        requests_per_second: float | None = None,
        progress: bool = True,
    ):
        self.rater = rater
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_concurrency = max(1, int(max_concurrency or getattr(rater, "max_concurrency", 1) or 1))
        rps = requests_per_second if requests_per_second is not None else rater.requests_per_second
        self.requests_per_second = rps
        self.progress = progress
        self.hits = 0
        self.calls = 0
        # autocommit: one commit per answer; one writer at a time, possibly from a helper thread (_run_sync)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable against a process kill
        self._db.execute(_SCHEMA)

    @property
    def name(self) -> str:
        return self.rater.name

    @property
    def params(self) -> dict[str, Any]:
        return self.rater.params

    def check_ready(self) -> None:
        self.rater.check_ready()

    def key(self, prompt: str) -> str:
        return request_key(self.rater.registry_name, self.rater.name, prompt, self.rater.params)

    def lookup(self, prompt: str) -> str | None:
        row = self._db.execute("SELECT reply FROM replies WHERE key = ?", (self.key(prompt),)).fetchone()
        return None if row is None else row[0]

    def _store(self, prompt: str, reply: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                self.key(prompt),
                self.rater.registry_name,
                self.rater.name,
                json.dumps(self.rater.params, sort_keys=True, default=str),
                prompt,
                reply,
                time.time(),
            ),
        )

    def evict(self, prompts: list[str]) -> int:
        """Forget these prompts' replies (e.g. unparseable ones), so a rerun asks the judge again."""
        n = 0
        for p in dict.fromkeys(prompts):
            n += self._db.execute("DELETE FROM replies WHERE key = ?", (self.key(p),)).rowcount
        return n

    def complete(self, prompts: list[str]) -> list[str | None]:
        answers: dict[str, str | None] = {}
        for p in prompts:
            if p not in answers:
                cached = self.lookup(p)
                if cached is not None:
                    answers[p] = cached
        self.hits += sum(p in answers for p in prompts)
        misses = [p for p in dict.fromkeys(prompts) if p not in answers]
        if misses:
            answers.update(_run_sync(self._run(misses)))
        return [answers.get(p) for p in prompts]

    async def _run(self, prompts: list[str]) -> dict[str, str | None]:
        sem = asyncio.Semaphore(self.max_concurrency)
        interval = 1.0 / self.requests_per_second if self.requests_per_second else 0.0
        slot_lock = asyncio.Lock()
        next_start = [time.monotonic()]
        bar = tqdm(total=len(prompts), desc=f"rater {self.rater.name}", unit="req", disable=not self.progress)
        out: dict[str, str | None] = {}

        async def one(prompt: str) -> None:
            async with sem:
                if interval:
                    async with slot_lock:  # space request starts by 1/rate seconds
                        wait = next_start[0] - time.monotonic()
                        next_start[0] = max(next_start[0], time.monotonic()) + interval
                    if wait > 0:
                        await asyncio.sleep(wait)
                self.calls += 1
                (reply,) = await asyncio.to_thread(self.rater.complete, [prompt])
                if reply is not None:
                    self._store(prompt, reply)  # runs on the loop thread: one connection, one writer
                out[prompt] = reply
                bar.update(1)

        try:
            await asyncio.gather(*(one(p) for p in prompts))
        finally:
            bar.close()
        return out

    def close(self) -> None:
        """Close the cache only: the wrapped rater belongs to the caller."""
        self._db.close()
