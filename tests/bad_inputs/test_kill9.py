"""kill -9 during generation and during rating: the rerun ends with every sample id exactly once and no
answered remote request is sent again (counted at the fake OpenAI-compatible server, tests/fakes/)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import Counter

import pytest

from pvllm.utils.jsonl import load_jsonl
from tests.bad_inputs.test_judge_replies import _is_judge, remote_args
from tests.conftest import REPO
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.scripted_server import RecordedRequest, Reply


class BlockingServer(FakeOpenAIServer):
    """Answers every request, except that the ``block_at``-th request of ``kind`` ("gen"/"judge") is held
    (never answered before the client is killed)."""

    def __init__(self, kind: str, block_at: int):
        super().__init__(self.answer)
        self.kind, self.block_at, self.armed = kind, block_at, True
        self.held = threading.Event()
        self.counts: Counter[str] = Counter()

    @staticmethod
    def key(body) -> tuple[str, str]:
        if _is_judge(body):
            return "judge", body["messages"][0]["content"]
        return "gen", body["messages"][0]["content"][-1]["text"]

    @staticmethod
    def answer(body) -> str:
        return "Emotion: 0.5, Style: 0.75, Relevance: 0.25" if _is_judge(body) else "a remote comment"

    def route(self, req: RecordedRequest) -> Reply:
        reply = super().route(req)
        kind, _ = self.key(req.json())
        with self._lock:
            self.counts[kind] += 1
            hold = self.armed and kind == self.kind and self.counts[kind] == self.block_at
        if hold:
            self.held.set()
            reply.delay_s = 60.0
        return reply

    def prompts(self, kind: str) -> Counter[str]:
        return Counter(k for k in (self.key(r.json()) for r in self.chat_calls()) if k[0] == kind)


def _evaluate_proc(args: list[str], run_dir) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "evaluate.py", *args, f"hydra.run.dir={run_dir}"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _kill_when_held(server: BlockingServer, proc: subprocess.Popen) -> None:
    assert server.held.wait(240), proc.stderr.read() if proc.poll() is not None else "no request was held"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    server.armed = False


def _run_to_end(args, run_dir) -> None:
    proc = _evaluate_proc(args, run_dir)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]


def _once_each(run_dir, histories_dir) -> list[str]:
    (hist,) = [p for p in histories_dir.glob("*.jsonl")]
    want = [r["sample_id"] for r in load_jsonl(hist)]
    got = [p["sample_id"] for p in load_jsonl(run_dir / "predictions.jsonl")]
    assert sorted(got) == sorted(want) and len(set(got)) == len(got) == 4
    return want


@pytest.mark.slow  # ~2 min on a loaded machine: two evaluate.py processes
def test_kill9_during_generation(tmp_path, mini_ds):
    with BlockingServer("gen", block_at=3) as server:
        args = remote_args(tmp_path, server, mini_ds, **{"ficl.k_shots": 0})
        run_dir = tmp_path / "run"
        _kill_when_held(server, _evaluate_proc(args, run_dir))
        assert len(load_jsonl(run_dir / "predictions.jsonl")) == 2  # two answered before the kill, kept
        _run_to_end(args, run_dir)
        _once_each(run_dir, tmp_path / "out" / "histories")
        gen = server.prompts("gen")
        # 4 samples: each answered once; only the request held at the kill (never answered) was sent again
        assert len(gen) == 4 and sorted(gen.values()) == [1, 1, 1, 2]
        assert sum(server.prompts("judge").values()) == 4


@pytest.mark.slow  # ~2 min: two evaluate.py processes
def test_kill9_during_rating(tmp_path, mini_ds):
    with BlockingServer("judge", block_at=3) as server:
        args = remote_args(tmp_path, server, mini_ds, **{"ficl.k_shots": 0})
        run_dir = tmp_path / "run"
        _kill_when_held(server, _evaluate_proc(args, run_dir))
        _run_to_end(args, run_dir)
        _once_each(run_dir, tmp_path / "out" / "histories")
        assert sorted(server.prompts("gen").values()) == [1, 1, 1, 1]  # generation finished before the kill
        judge = server.prompts("judge")
        assert len(judge) == 4 and sorted(judge.values()) == [1, 1, 1, 2]  # answered replies came from the cache
        scores = load_jsonl(run_dir / "scores.jsonl")
        ficl = Counter((r["sample_id"], r["metric"]) for r in scores if r["metric"].startswith("FICL"))
        assert len(ficl) == 12 and set(ficl.values()) == {1}
        assert {r["value"] for r in scores if r["metric"] == "FICL-S"} == {75.0}
