"""The collector against a local server speaking the YouTube Data API, with the real client library."""

import json
from pathlib import Path

import pytest

from pvllm.data.collect import CollectConfig, YouTubeCollector, import_comments
from pvllm.data.collect.__main__ import EXIT_QUOTA, main
from pvllm.data.privacy import MissingKeyError, Pseudonymizer
from pvllm.utils.jsonl import load_jsonl

try:  # tests/ is a rootdir (no __init__.py) under pytest's default import mode
    from fakes.youtube_server import FakeComment, FakeVideo, FakeYouTube
except ImportError:  # tests/ made a package
    from tests.fakes.youtube_server import FakeComment, FakeVideo, FakeYouTube

API_KEY = "test-api-key-must-not-leak"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "comments"


def raw_author(i):
    return f"UCrawAuthorChannel{i:04d}"


def raw_name(i):
    return f"@RawDisplayName{i:04d}"


def make_videos():
    def comments(vid, n):
        return [
            FakeComment(
                f"{vid}c{j}", raw_author(j % 3), raw_name(j % 3), f"comment {j} on {vid} & <b>\nline 2", j
            )
            for j in range(n)
        ]

    return [
        FakeVideo("vid1", "First short", 1200, "PT59S", comments("vid1", 7)),  # 4 pages of 2
        FakeVideo("vid2", "Comments off", 900, "PT30S", comments_disabled=True),
        FakeVideo("vid3", "Third short", 401, "PT1M2S", comments("vid3", 3)),
        FakeVideo("vid4", "Deleted since search", 10, listed_only=True),
        FakeVideo("vid5", "Likes hidden", None, "PT10S", comments("vid5", 2)),
    ]


EXPECTED_IDS = [f"vid1c{j}" for j in range(7)] + [f"vid3c{j}" for j in range(3)] + ["vid5c0", "vid5c1"]


@pytest.fixture
def fake():
    server = FakeYouTube(make_videos(), page_size=2, search_page_size=2)
    url = server.start()
    server.url = url
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def keys(monkeypatch):
    monkeypatch.setenv("PVLLM_PSEUDONYM_KEY", "test-hmac-key")
    monkeypatch.setenv("YOUTUBE_API_KEY", API_KEY)


def collector(fake, out, **kw):
    cfg = CollectConfig(out_dir=out, query="cats", max_videos=10, endpoint=fake.url, backoff_s=0.01, **kw)
    return YouTubeCollector(cfg)


def thread_tokens(fake, video_id):
    return [p.get("pageToken") for ep, p in fake.log if ep == "commentThreads" and p["videoId"] == video_id]


def test_full_run_pages_counts_quota_and_plain_text(fake, tmp_path):
    summary = collector(fake, tmp_path).run()
    assert summary["stopped"] is None
    comments = load_jsonl(tmp_path / "comments.jsonl")
    assert [c["comment_id"] for c in comments] == EXPECTED_IDS
    assert thread_tokens(fake, "vid1") == [None, "tok2", "tok4", "tok6"]  # 4 pages, in order
    assert fake.calls["search"] == 3  # 5 ids over pages of 2
    # textOriginal, not the HTML textDisplay (which has &amp; and <br>)
    assert comments[0]["text"] == "comment 0 on vid1 & <b>\nline 2"
    assert all(p["textFormat"] == "plainText" for ep, p in fake.log if ep == "commentThreads")
    pseudo = Pseudonymizer(b"test-hmac-key")
    assert comments[1]["user_id"] == pseudo(raw_author(1)) and comments[1]["likes"] == 1
    # quota: 3 search pages x 100 + 1 videos.list + commentThreads (vid1 4, vid2 1, vid3 2, vid5 1; vid4 none)
    assert summary["quota_used_today"] == 309
    assert fake.keys_seen == {API_KEY}


def test_comments_disabled_and_deleted_videos_are_skipped_and_counted(fake, tmp_path):
    summary = collector(fake, tmp_path).run()
    assert summary["comment_status"] == {"ok": 3, "comments_disabled": 1, "video_not_found": 1}
    assert summary["counts"]["videos_skipped.comments_disabled"] == 1
    assert summary["counts"]["videos_not_found"] == 1
    videos = {v["video_id"]: v for v in load_jsonl(tmp_path / "videos.jsonl")}
    assert sorted(videos) == ["vid1", "vid2", "vid3", "vid5"]
    assert videos["vid5"]["likes"] is None  # hidden likes are unknown, never 0
    assert videos["vid3"] == {
        "video_id": "vid3",
        "title": "Third short",
        "likes": 401,
        "duration_s": 62.0,
        "url": "https://www.youtube.com/shorts/vid3",
    }


def test_quota_exceeded_mid_run_then_resume_no_duplicate_no_gap(fake, tmp_path):
    fake.faults[("commentThreads", 3)] = (403, "quotaExceeded")  # vid1, third page
    args = ["youtube", "--out", str(tmp_path), "--query", "cats", "--endpoint", fake.url, "--backoff-s", "0"]
    assert main(args) == EXIT_QUOTA
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["comments"]["vid1"] == {"page_token": "tok4", "status": "pending"}
    assert [c["comment_id"] for c in load_jsonl(tmp_path / "comments.jsonl")] == EXPECTED_IDS[:4]

    assert main(args) == 0
    ids = [c["comment_id"] for c in load_jsonl(tmp_path / "comments.jsonl")]
    assert ids == EXPECTED_IDS  # no duplicate, no gap
    assert thread_tokens(fake, "vid1") == [None, "tok2", "tok4", "tok4", "tok6"]  # resumed at the failed page
    assert fake.calls["search"] == 3 and fake.calls["videos"] == 1  # discovery and stats not repeated
    responses = load_jsonl(tmp_path / "responses.jsonl")
    threads = [(r["status"], r["params"]["videoId"]) for r in responses if r["call"] == "commentThreads.list"]
    assert threads.count((200, "vid1")) == 4 and (403, "vid1") in threads and (403, "vid2") in threads
    assert len(threads) == 9  # every call, errors included, stored once


def test_server_error_then_success_is_retried(fake, tmp_path, caplog):
    fake.faults[("commentThreads", 1)] = (500, "backendError")
    fake.faults[("commentThreads", 2)] = (503, "backendError")
    sleeps = []
    c = collector(fake, tmp_path)
    c.sleep = sleeps.append
    summary = c.run()
    assert summary["stopped"] is None
    assert [r["comment_id"] for r in load_jsonl(tmp_path / "comments.jsonl")] == EXPECTED_IDS
    assert sleeps == [0.01, 0.02]  # exponential backoff
    assert summary["counts"]["retries.500"] == 1 and summary["counts"]["retries.503"] == 1
    # through the one retry policy of every remote client (pvllm.clients.retry), which logs each retry
    retries = [r.getMessage() for r in caplog.records if r.name == "pvllm.clients.retry"]
    assert retries == ["commentThreads.list: HTTP 500 backendError (attempt 1/5), retrying in 0.01s",
                       "commentThreads.list: HTTP 503 backendError (attempt 2/5), retrying in 0.02s"]


def test_persistent_server_error_skips_video_and_rerun_retries_it(fake, tmp_path):
    for n in (1, 2):
        fake.faults[("commentThreads", n)] = (500, "backendError")
    c = collector(fake, tmp_path, max_retries=1)
    c.sleep = lambda s: None
    summary = c.run()
    assert summary["comment_status"]["failed"] == 1
    assert summary["counts"]["videos_skipped.failed.500"] == 1
    summary = collector(fake, tmp_path).run()
    assert summary["comment_status"] == {"ok": 3, "comments_disabled": 1, "video_not_found": 1}
    assert sorted(r["comment_id"] for r in load_jsonl(tmp_path / "comments.jsonl")) == sorted(EXPECTED_IDS)


def test_local_quota_budget_stops_before_exceeding_and_resumes(fake, tmp_path):
    summary = collector(fake, tmp_path, quota_budget=250).run()
    assert summary["stopped"] == "local quota budget 250 units reached"
    assert summary["quota_used_today"] == 200 and fake.calls["search"] == 2
    summary = collector(fake, tmp_path).run()
    assert summary["stopped"] is None and fake.calls["search"] == 3
    assert [p.get("pageToken") for ep, p in fake.log if ep == "search"] == [None, "tok2", "tok4"]


def test_no_raw_author_id_or_key_in_any_output(fake, tmp_path):
    collector(fake, tmp_path).run()
    blob = "\n".join(p.read_text(encoding="utf-8") for p in tmp_path.rglob("*") if p.is_file())
    assert "responses.jsonl" in {p.name for p in tmp_path.iterdir()}
    for i in range(3):
        assert raw_author(i) not in blob and raw_name(i).lstrip("@") not in blob
    assert "UCrawAuthorChannel" not in blob and "RawDisplayName" not in blob
    assert API_KEY not in blob and "test-hmac-key" not in blob
    assert Pseudonymizer(b"test-hmac-key")(raw_author(0)) in blob  # the pseudonym is what is stored


def test_missing_pseudonym_key_names_the_variable(fake, tmp_path, monkeypatch):
    monkeypatch.delenv("PVLLM_PSEUDONYM_KEY")
    with pytest.raises(MissingKeyError, match="PVLLM_PSEUDONYM_KEY"):
        collector(fake, tmp_path)


@pytest.mark.skipif(not (SHARED / "youtube_biotech.jsonl").exists(), reason="../shared/data not present")
def test_import_real_biotech_comments_rekeys_authors(tmp_path):
    counts = import_comments(SHARED / "youtube_biotech.jsonl", tmp_path)
    assert counts["comments"] == 3408 and counts["videos"] == 30 and counts["videos_without_title"] == 0
    assert counts["videos_likes_unknown"] == 30
    out = load_jsonl(tmp_path / "comments.jsonl")
    raw_authors = {r["author"] for r in load_jsonl(SHARED / "youtube_biotech.jsonl")}
    assert len({c["user_id"] for c in out}) == len(raw_authors) == 5
    blob = (tmp_path / "comments.jsonl").read_text() + (tmp_path / "videos.jsonl").read_text()
    assert not any(a in blob for a in raw_authors)


def test_collector_output_builds_a_dataset(fake, tmp_path):
    from pvllm.data.build import BuildConfig, build_dataset
    from pvllm.data.dataset import load_pervidcom
    from pvllm.data.filters import FilterConfig

    collector(fake, tmp_path / "raw").run()
    cfg = BuildConfig(filters=FilterConfig(min_user_videos=2, unknown_likes="keep"))
    summary = build_dataset(tmp_path / "raw", tmp_path / "ds", cfg, psi_fn=lambda vs: {v: 1.0 for v in vs})
    ds = load_pervidcom(tmp_path / "ds", check_files=False)
    # vid2 (comments off) has no comment left; vid1/vid3/vid5 carry authors 0,1,2 / 0,1,2 / 0,1
    assert sorted(ds.videos) == ["vid1", "vid3", "vid5"] and ds.videos["vid5"].likes is None
    assert sorted(ds.user_split) == sorted(Pseudonymizer(b"test-hmac-key")(raw_author(i)) for i in range(3))
    assert len(ds.comments) == 12 and summary["final"] == {"videos": 3, "users": 3, "comments": 12}
    blob = "\n".join(
        p.read_text(encoding="utf-8") for p in (tmp_path / "ds").glob("*.*") if p.suffix != ".png"
    )
    assert "UCrawAuthorChannel" not in blob and "RawDisplayName" not in blob


def test_cli_missing_keys_exit_2_naming_the_variable(fake, tmp_path, monkeypatch, capsys):
    args = ["youtube", "--out", str(tmp_path), "--video-ids", "vid1", "--endpoint", fake.url]
    monkeypatch.delenv("YOUTUBE_API_KEY")
    assert main(args) == 2 and "YOUTUBE_API_KEY is not set" in capsys.readouterr().err
    monkeypatch.setenv("YOUTUBE_API_KEY", API_KEY)
    monkeypatch.delenv("PVLLM_PSEUDONYM_KEY")
    assert main(args) == 2 and "PVLLM_PSEUDONYM_KEY is not set" in capsys.readouterr().err
    assert fake.calls == {}  # nothing was fetched without a way to pseudonymize it


def test_explicit_video_ids_are_all_collected(fake, tmp_path):
    cfg = CollectConfig(out_dir=tmp_path, video_ids=["vid5", "vid3"], max_videos=1, endpoint=fake.url)
    summary = YouTubeCollector(cfg).run()
    assert summary["videos"] == 2 and summary["quota_used_today"] == 1 + 2 + 1  # videos.list + 2 + 1 pages
    assert "search" not in fake.calls
