"""P3: FICL rating of N items (default 256) against a local OpenAI-compatible fake server that answers
each request after a fixed latency (default 200 ms): the anchor way (one request at a time) vs ours
(the rater's RemoteCalls at concurrency 32, through the SQLite cache), then ours again (a rerun: must
make 0 requests). Prints both times, the ratio, and checks that both give the same FICL results.

    python benchmarks/bench_rating.py [--items 256] [--latency 0.2] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pvllm.metrics.ficl import FewShotPool  # noqa: E402
from pvllm.metrics.scoring import ficl_results  # noqa: E402
from pvllm.raters.openai_compatible import OpenAICompatibleRater  # noqa: E402
from tests.fakes.openai_server import FakeOpenAIServer  # noqa: E402
from tests.fakes.scripted_server import Reply  # noqa: E402

VALUES = ("0", "0.25", "0.5", "0.75", "1")


def judge(body: dict) -> str:
    """A deterministic judge: scores from a hash of the prompt (same prompt, same answer)."""
    h = hashlib.sha256(body["messages"][0]["content"].encode()).digest()
    return f"Emotion: {VALUES[h[0] % 5]}, Style: {VALUES[h[1] % 5]}, Relevance: {VALUES[h[2] % 5]}"


class JudgeServer(FakeOpenAIServer):
    """The fake judge, plus ``GET /count``: chat requests answered so far."""

    def route(self, req):
        if req.method == "GET" and req.path == "/count":
            return Reply(200, {"count": len(self.chat_calls())})
        return super().route(req)


def serve(latency: float) -> None:
    """Child process: the server runs apart from the client, as a real one would (no shared GIL)."""
    with JudgeServer(default_text=judge, latency_s=latency) as server:
        print(server.url, flush=True)
        sys.stdin.read()  # until the parent closes our stdin


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=256)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        return serve(a.latency)
    os.environ.setdefault("OPENAI_API_KEY", "sk-bench")
    pairs = [(f"generated comment {i} so good", f"reference comment {i % 17} wow") for i in range(a.items)]
    pool = FewShotPool.from_dir(ROOT / "data/sample/fewshot")
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--latency", str(a.latency)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    url = child.stdout.readline().strip()

    def count() -> int:
        with urllib.request.urlopen(url + "/count") as r:
            return json.loads(r.read())["count"]

    try:
        with tempfile.TemporaryDirectory() as tmp:

            def run(concurrency: int, cache: Path | None):
                rater = OpenAICompatibleRater(
                    model="judge", base_url=url + "/v1", max_concurrency=concurrency
                )
                n0 = count()
                t0 = time.perf_counter()
                res = ficl_results(rater, pairs, fewshot=pool, k_shots=2, cache_path=cache)
                dt = time.perf_counter() - t0
                rater.close()
                return res, dt, count() - n0

            anchor, t_anchor, n_anchor = run(1, None)  # one request at a time, no cache
            ours, t_ours, n_ours = run(a.concurrency, Path(tmp) / "cache.sqlite")
            rerun, t_rerun, n_rerun = run(a.concurrency, Path(tmp) / "cache.sqlite")
    finally:
        child.stdin.close()
        child.wait(timeout=30)
    same = anchor == ours == rerun
    print(f"P3 FICL rating, {a.items} items, server latency {a.latency * 1000:.0f} ms")
    print("| way | requests | time (s) | items/s |")
    print("|---|---|---|---|")
    print(f"| anchor: one request at a time | {n_anchor} | {t_anchor:.2f} | {a.items / t_anchor:.1f} |")
    print(f"| ours: concurrency {a.concurrency}, cache | {n_ours} | {t_ours:.2f} | {a.items / t_ours:.1f} |")
    print(f"| ours, rerun (cache) | {n_rerun} | {t_rerun:.3f} | {a.items / t_rerun:.0f} |")
    print(f"ratio anchor/ours: {t_anchor / t_ours:.1f}x (goal >= 25x); rerun requests: {n_rerun} (goal 0)")
    print(f"equal FICL results (anchor == ours == rerun): {same}")
    if not same or n_rerun:
        sys.exit(1)


if __name__ == "__main__":
    main()
