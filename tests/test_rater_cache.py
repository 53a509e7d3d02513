"""The SQLite rater cache: reruns make zero calls, a kill loses nothing answered, bounded concurrency."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from pvllm.raters.base import LLMRater
from pvllm.raters.cache import CachedRater, request_key


class CountingRater(LLMRater):
    """In-process stand-in for a remote judge: counts calls, tracks requests in flight."""

    def __init__(self, delay: float = 0.0, fail: set[str] | None = None, temperature: float = 0.0):
        self.calls: list[str] = []
        self.delay = delay
        self.fail = fail or set()
        self.temperature = temperature
        self.in_flight = 0
        self.max_in_flight = 0
        self.starts: list[float] = []
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return "counting/m1"

    @property
    def params(self):
        return {"temperature": self.temperature}

    def complete(self, prompts):
        with self._lock:
            self.calls += prompts
            self.starts.append(time.monotonic())
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        time.sleep(self.delay)
        with self._lock:
            self.in_flight -= 1
        return [None if p in self.fail else f"reply to {p}" for p in prompts]


def test_rerun_makes_zero_calls(tmp_path):
    prompts = [f"p{i}" for i in range(6)] + ["p0"]  # a duplicate is asked once
    first = CountingRater()
    c = CachedRater(first, tmp_path / "cache.sqlite", progress=False)
    assert c.complete(prompts) == [f"reply to {p}" for p in prompts]
    assert len(first.calls) == 6
    c.close()
    again = CountingRater()
    c2 = CachedRater(again, tmp_path / "cache.sqlite", progress=False)
    assert c2.complete(prompts) == [f"reply to {p}" for p in prompts]
    assert again.calls == [] and c2.hits == 7


def test_key_covers_backend_model_prompt_params(tmp_path):
    base = request_key("b", "m", "p", {"temperature": 0})
    assert base == request_key("b", "m", "p", {"temperature": 0})
    assert len({base, request_key("b2", "m", "p", {"temperature": 0}),
                request_key("b", "m2", "p", {"temperature": 0}),
                request_key("b", "m", "p2", {"temperature": 0}),
                request_key("b", "m", "p", {"temperature": 1})}) == 5  # fmt: skip
    CachedRater(CountingRater(temperature=0.0), tmp_path / "c.sqlite", progress=False).complete(["p"])
    hot = CountingRater(temperature=1.0)  # other parameters: not the same request
    CachedRater(hot, tmp_path / "c.sqlite", progress=False).complete(["p"])
    assert hot.calls == ["p"]


def test_failed_requests_are_not_cached(tmp_path):
    r = CountingRater(fail={"bad"})
    c = CachedRater(r, tmp_path / "c.sqlite", progress=False)
    assert c.complete(["good", "bad"]) == ["reply to good", None]
    r2 = CountingRater()
    assert CachedRater(r2, tmp_path / "c.sqlite", progress=False).complete(["good", "bad"]) == [
        "reply to good",
        "reply to bad",
    ]
    assert r2.calls == ["bad"]  # only the failure is asked again


def test_killed_mid_run_loses_nothing_answered(tmp_path):
    """A child process answers 3 prompts, then dies hard (SIGKILL) inside the 4th request."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_rater_cache import CountingRater
        from pvllm.raters.cache import CachedRater

        class Dying(CountingRater):
            def complete(self, prompts):
                if prompts == ["p3"]:
                    os.kill(os.getpid(), signal.SIGKILL)
                return super().complete(prompts)

        CachedRater(Dying(), {str(tmp_path / "c.sqlite")!r}, progress=False).complete([f"p{{i}}" for i in range(8)])
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    r = CountingRater()
    out = CachedRater(r, tmp_path / "c.sqlite", progress=False).complete([f"p{i}" for i in range(8)])
    assert out == [f"reply to p{i}" for i in range(8)]
    assert r.calls == [f"p{i}" for i in range(3, 8)]  # p0..p2 survived the kill


def test_concurrency_is_the_raters_own(tmp_path):
    r = CountingRater(delay=0.2)
    r.max_concurrency = 3  # the rater's setting: CachedRater adds no scheduling of its own
    c = CachedRater(r, tmp_path / "c.sqlite", progress=False)
    t0 = time.monotonic()
    c.complete([f"p{i}" for i in range(9)])
    elapsed = time.monotonic() - t0
    assert r.max_in_flight == 3
    assert elapsed < 9 * 0.2 * 0.8  # clearly faster than one at a time (3 waves of 0.2 s)


@pytest.fixture
def openai_server(monkeypatch):
    try:
        from fakes.openai_server import FakeOpenAIServer
    except ImportError:
        from tests.fakes.openai_server import FakeOpenAIServer
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    echo = lambda body: "re: " + body["messages"][0]["content"]  # noqa: E731
    with FakeOpenAIServer(default_text=echo, latency_s=0.2) as s:
        yield s


def _remote_rater(server, **kw):
    from pvllm.raters.openai_compatible import OpenAICompatibleRater

    return OpenAICompatibleRater(model="judge", base_url=server.url + "/v1", timeout_s=10, **kw)


def test_one_limiter_remote_concurrency_rate_and_cache(tmp_path, openai_server):
    """A remote judge through the cache: its RemoteCalls alone bounds concurrency (8 requests of 0.2 s at 4
    in flight: 2 waves, not 8 one after another and not 4 x 4 through a second semaphore); a rerun makes
    zero requests and returns the same replies."""
    prompts = [f"p{i}" for i in range(8)]
    c = CachedRater(_remote_rater(openai_server, max_concurrency=4), tmp_path / "c.sqlite", progress=False)
    t0 = time.monotonic()
    fresh = c.complete(prompts)
    elapsed = time.monotonic() - t0
    assert fresh == [f"re: {p}" for p in prompts]
    assert len(openai_server.chat_calls()) == 8 and c.calls == 8
    assert 0.39 < elapsed < 8 * 0.2 * 0.9  # one at a time: >= 1.6 s
    c.close()
    rater = _remote_rater(openai_server, max_concurrency=4)
    again = CachedRater(rater, tmp_path / "c.sqlite", progress=False)
    assert again.complete(prompts) == fresh
    assert len(openai_server.chat_calls()) == 8 and again.calls == 0 and again.hits == 8


def test_rate_limit_spaces_request_starts(tmp_path, openai_server):
    openai_server.latency_s = 0.0
    rater = _remote_rater(openai_server, max_concurrency=5, requests_per_minute=600)  # one start per 0.1 s
    CachedRater(rater, tmp_path / "c.sqlite", progress=False).complete([f"p{i}" for i in range(5)])
    starts = sorted(r.t for r in openai_server.chat_calls())
    # 10/s spaces 5 starts over 0.4 s; a thread scheduled late shortens one gap and lengthens the next
    # under load, so assert the span (unlimited, 5 concurrent starts fall within a few ms)
    assert len(starts) == 5 and starts[-1] - starts[0] >= 0.3


def test_progress_bar_shows_count(tmp_path, capsys):
    CachedRater(CountingRater(), tmp_path / "c.sqlite", progress=True).complete(["a", "b", "c"])
    err = capsys.readouterr().err
    assert "3/3" in err and "rater counting/m1" in err


@pytest.mark.parametrize("journal", ["wal"])
def test_database_is_wal(tmp_path, journal):
    import sqlite3

    CachedRater(CountingRater(), tmp_path / "c.sqlite", progress=False).complete(["a"])
    db = sqlite3.connect(tmp_path / "c.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == journal
    assert db.execute("SELECT backend, model, prompt, reply FROM replies").fetchall() == [
        ("?", "counting/m1", "a", "reply to a")
    ]


def test_works_inside_a_running_event_loop(tmp_path):
    import asyncio

    async def caller():
        return CachedRater(CountingRater(), tmp_path / "c.sqlite", progress=False).complete(["a", "b"])

    assert asyncio.run(caller()) == ["reply to a", "reply to b"]
    r = CountingRater()
    assert CachedRater(r, tmp_path / "c.sqlite", progress=False).complete(["a", "b"]) == [
        "reply to a",
        "reply to b",
    ]
    assert r.calls == []


def test_a_full_disk_names_the_cache_and_the_rerun_asks_only_the_rest(tmp_path):
    """Issue 25 item 5: SQLite's own "database or disk is full" (its page limit set low: a real SQLITE_FULL)
    stops the run naming the cache file; the answers stored before it stay, the rerun asks only the others."""
    from pvllm.utils.atomic import WriteFailed

    path = tmp_path / "cache.sqlite"
    prompts = [f"p{i}-" + "x" * 3000 for i in range(6)]
    c = CachedRater(CountingRater(), path, progress=False)
    pages = c._db.execute("PRAGMA page_count").fetchone()[0]
    c._db.execute(f"PRAGMA max_page_count = {pages + 4}")  # room for about two replies
    with pytest.raises(WriteFailed, match=rf"could not write {path}: no space left on device"):
        c.complete(prompts)
    c.close()
    c2 = CachedRater(counting := CountingRater(), path, progress=False)
    stored = sum(c2.lookup(p) is not None for p in prompts)
    assert 0 < stored < len(prompts)
    assert c2.complete(prompts) == [f"reply to {p}" for p in prompts]
    assert len(counting.calls) == len(prompts) - stored  # each prompt answered once over both runs


def test_same_model_on_another_server_is_another_request(tmp_path):
    """Issue 25 item 10: the server (base_url) is part of the key, so one model name served by two servers never
    returns the first server's cached replies; credentials inside the URL are not part of it."""
    from pvllm.raters.openai_compatible import OpenAICompatibleRater
    from tests.fakes.openai_server import FakeOpenAIServer

    def ask(url: str) -> tuple[list, int]:
        rater = OpenAICompatibleRater("judge", base_url=url, api_key_env=None, retry={"attempts": 1})
        cached = CachedRater(rater, tmp_path / "c.sqlite", progress=False)
        try:
            return cached.complete(["the same prompt"]), cached.hits
        finally:
            cached.close()
            rater.close()

    with FakeOpenAIServer(default_text="from A") as a, FakeOpenAIServer(default_text="from B") as b:
        assert ask(f"{a.url}/v1") == (["from A"], 0)
        assert ask(f"{b.url}/v1") == (["from B"], 0)  # same backend, model, prompt, parameters: B is asked
        assert ask(f"{a.url}/v1") == (["from A"], 1)  # A's reply is still cached
        # the same server reached with credentials in its URL: the same requests (the key never enters the key)
        assert ask(a.url.replace("http://", "http://me:pw-123456789@") + "/v1") == (["from A"], 1)
        assert len(a.chat_calls()) == 1 and len(b.chat_calls()) == 1
    rater = OpenAICompatibleRater("judge", base_url="http://me:pw-123456789@127.0.0.1:9/v1", api_key_env=None)
    assert rater.server == "http://127.0.0.1:9/v1/"
    rater.close()
