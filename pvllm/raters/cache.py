"""Every LLM-rater request goes through here: a SQLite (WAL) cache keyed by the full request.

A rerun of an evaluation makes zero calls; a process killed mid-run loses nothing that was answered
(each answer is committed as it arrives). Misses go to the wrapped rater's ``complete_each`` in one
call, so the rater's own limiter (``RemoteCalls``: bounded concurrency, rate limit, retries) is the only
one; a progress bar with ETA counts the answers. Failed requests (None) are not cached, so a rerun
retries them; replies FICL could not parse even after the re-ask are evicted (``evict``) for the same
reason.
"""

from __future__ import annotations

import errno
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from pvllm.raters.base import LLMRater
from pvllm.utils.atomic import write_failed
from pvllm.utils.hashing import text_sha256

_SCHEMA = """CREATE TABLE IF NOT EXISTS replies (
    key TEXT PRIMARY KEY, backend TEXT, model TEXT, params TEXT, prompt TEXT, reply TEXT, created_at REAL
)"""


def request_key(backend: str, model: str, prompt: str, params: dict[str, Any], server: str | None = None) -> str:
    """sha256 of (backend, model, full prompt, parameters, server) in a canonical JSON form. A local model has
    no server (its key is the one of caches written before the server was part of it)."""
    fields = [backend, model, prompt, params] + ([] if server is None else [server])
    blob = json.dumps(fields, sort_keys=True, ensure_ascii=False, default=str)
    return text_sha256(blob)


class CachedRater(LLMRater):
    """Wraps an LLMRater: same ``complete``, answered from the cache where possible."""

    def __init__(self, rater: LLMRater, path: str | Path, *, progress: bool = True):
        self.rater = rater
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        self.hits = 0
        self.calls = 0
        # autocommit: one commit per answer; answers arrive from the rater's worker threads, one writer
        # at a time (the lock)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable against a process kill
        self._db.execute(_SCHEMA)

    @property
    def name(self) -> str:
        return self.rater.name

    @property
    def params(self) -> dict[str, Any]:
        return self.rater.params

    @property
    def server(self) -> str | None:
        return self.rater.server

    @property
    def max_concurrency(self) -> int:  # type: ignore[override]
        return self.rater.max_concurrency

    def check_ready(self) -> None:
        self.rater.check_ready()

    def key(self, prompt: str) -> str:
        return request_key(self.rater.registry_name, self.rater.name, prompt, self.rater.params, self.rater.server)

    def lookup(self, prompt: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT reply FROM replies WHERE key = ?", (self.key(prompt),)).fetchone()
        return None if row is None else row[0]

    def _store(self, prompt: str, reply: str) -> None:
        row = (self.key(prompt), self.rater.registry_name, self.rater.name,
               json.dumps(self.rater.params, sort_keys=True, default=str), prompt, reply, time.time())
        with self._lock:
            try:
                self._db.execute("INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?, ?, ?, ?)", row)
            except sqlite3.OperationalError as e:  # "database or disk is full": the transaction rolled back
                raise write_failed(self.path, OSError(errno.ENOSPC if "full" in str(e) else errno.EIO, str(e))) from e

    def evict(self, prompts: list[str]) -> int:
        """Forget these prompts' replies (e.g. unparseable ones), so a rerun asks the judge again."""
        n = 0
        with self._lock:
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
            answers.update(self._ask(misses))
        return [answers.get(p) for p in prompts]

    def _ask(self, prompts: list[str]) -> dict[str, str | None]:
        bar = tqdm(total=len(prompts), desc=f"rater {self.rater.name}", unit="req", disable=not self.progress)
        out: dict[str, str | None] = {}
        self.calls += len(prompts)

        def on_reply(i: int, reply: str | None) -> None:
            if reply is not None:
                self._store(prompts[i], reply)  # committed before the next answer is counted
            out[prompts[i]] = reply
            bar.update(1)

        try:
            self.rater.complete_each(prompts, on_reply)
        finally:
            bar.close()
        return out

    def close(self) -> None:
        """Close the cache only: the wrapped rater belongs to the caller."""
        self._db.close()
