"""Kill -9 of the YouTube collector (issue 16): the rerun ends with every comment id exactly once, with the
same pseudonymous user ids, and no request that was answered is sent again (counted at the fake server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from pvllm.data.privacy import Pseudonymizer
from pvllm.utils.jsonl import load_jsonl
from tests.fakes.youtube_server import FakeYouTube
from tests.test_collect import API_KEY, EXPECTED_IDS, make_videos, raw_author

ROOT = Path(__file__).resolve().parents[1]
HMAC = "test-hmac-key"


def _expected_users() -> dict[str, str]:
    pseudo = Pseudonymizer(HMAC.encode())  # make_videos: comment j is by author j % 3
    return {cid: pseudo(raw_author(int(cid.split("c")[1]) % 3)) for cid in EXPECTED_IDS}


def _requests(fake: FakeYouTube) -> Counter:
    return Counter((ep, json.dumps(p, sort_keys=True)) for ep, p in fake.log)


@pytest.mark.parametrize("kill_on", [("search", 2), ("videos", 1), ("commentThreads", 3)])
def test_kill_9_then_rerun_every_id_once_no_answered_request_repeated(tmp_path, kill_on):
    fake = FakeYouTube(make_videos(), page_size=2, search_page_size=2)
    url = fake.start()
    env = dict(os.environ, YOUTUBE_API_KEY=API_KEY, PVLLM_PSEUDONYM_KEY=HMAC)
    cmd = [sys.executable, "-m", "pvllm.data.collect", "youtube", "--out", str(tmp_path), "--query", "cats",
           "--max-videos", "10", "--endpoint", url, "--backoff-s", "0.01"]
    try:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        fake.kill_pid, fake.kill_on = proc.pid, kill_on
        proc.communicate(timeout=300)
        assert proc.returncode == -9  # killed by SIGKILL while waiting for that answer
        killed_at = fake.log[-1]
        fake.kill_on = None
        rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    finally:
        fake.stop()
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    comments = load_jsonl(tmp_path / "comments.jsonl")
    assert [c["comment_id"] for c in comments] == EXPECTED_IDS  # every id exactly once, in order
    assert {c["comment_id"]: c["user_id"] for c in comments} == _expected_users()
    repeated = {k: n for k, n in _requests(fake).items() if n > 1}
    # only the request the kill left unanswered is sent again
    assert repeated == {(killed_at[0], json.dumps(killed_at[1], sort_keys=True)): 2}


def test_stored_but_unprocessed_answer_is_replayed_not_requested(tmp_path, monkeypatch):
    """A kill between storing an answer and saving its processing: the rerun replays it from
    responses.jsonl (no request), with the pseudonyms it was stored with; a torn tail is repaired."""
    from pvllm.data.collect import CollectConfig, YouTubeCollector

    fake = FakeYouTube(make_videos(), page_size=2, search_page_size=2)
    url = fake.start()
    monkeypatch.setenv("YOUTUBE_API_KEY", API_KEY)
    monkeypatch.setenv("PVLLM_PSEUDONYM_KEY", HMAC)
    try:
        cfg = CollectConfig(out_dir=tmp_path, query="cats", max_videos=10, endpoint=url, backoff_s=0.01)
        YouTubeCollector(cfg).run()
        # rewind to "vid1's last page stored in responses.jsonl, its comments not yet written"
        state = json.loads((tmp_path / "state.json").read_text())
        state["comments"]["vid1"] = {"page_token": "tok6", "status": "pending"}
        (tmp_path / "state.json").write_text(json.dumps(state))
        kept = [c for c in load_jsonl(tmp_path / "comments.jsonl") if c["comment_id"] != "vid1c6"]
        (tmp_path / "comments.jsonl").write_text("".join(json.dumps(c) + "\n" for c in kept) + '{"comment_id": "vi')
        with (tmp_path / "responses.jsonl").open("a") as f:
            f.write('{"call": "commentThreads.li')  # torn by the kill
        before = dict(fake.calls)
        summary = YouTubeCollector(cfg).run()
    finally:
        fake.stop()
    assert fake.calls == before  # nothing requested again
    assert summary["counts"]["replayed.commentThreads.list"] == 1
    comments = load_jsonl(tmp_path / "comments.jsonl")
    assert sorted(c["comment_id"] for c in comments) == sorted(EXPECTED_IDS)
    assert {c["comment_id"]: c["user_id"] for c in comments} == _expected_users()
