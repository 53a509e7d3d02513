"""The build command: raw JSONL -> dataset directory (filters, ψ, split), Table 1, figures and the card."""

import csv
import json
from collections import defaultdict
from pathlib import Path

import pytest

from pvllm.data.build import BuildConfig, RawFormatError, build_dataset, main
from pvllm.data.collect.__main__ import main as collect_main
from pvllm.data.dataset import DatasetFormatError, load_pervidcom
from pvllm.data.filters import FilterConfig
from pvllm.data.privacy import Pseudonymizer
from pvllm.utils.jsonl import load_jsonl, write_jsonl

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "comments"
KEY = "test-build-key"


@pytest.fixture(autouse=True)
def pseudonym_key(monkeypatch):
    monkeypatch.setenv("PVLLM_PSEUDONYM_KEY", KEY)


def synthetic_raw(tmp_path: Path) -> Path:
    """uA: 11 liked videos (+ v12 with exactly 400 likes); uB: 10 liked + v13 (likes unknown); uC: 12,
    of which v11 has ψ exactly 0.9 (dropped)."""
    pseudo = Pseudonymizer(KEY.encode())
    raw = tmp_path / "raw"
    videos = [
        {"video_id": f"v{i:02d}", "title": f"title {i}", "likes": 1000, "duration_s": 30.0} for i in range(12)
    ]
    videos += [
        {"video_id": "v12", "title": "t", "likes": 400},
        {"video_id": "v13", "title": "t", "likes": None},
    ]
    plan = {"A": [*range(11), 12], "B": [*range(10), 13], "C": list(range(12))}
    comments = [
        {
            "comment_id": f"c{u}{i}",
            "video_id": f"v{i:02d}",
            "user_id": pseudo(f"raw-{u}"),
            "text": f"comment on v{i:02d} by {u}",
            "likes": 3,
            "published_at": "2024-05-01T00:00:00Z",
        }
        for u, vids in plan.items()
        for i in vids
    ]
    write_jsonl(raw / "videos.jsonl", videos)
    write_jsonl(raw / "comments.jsonl", comments)
    return raw


def fake_psi(videos):
    return {vid: 0.9 if vid == "v11" else 1.0 for vid in videos}


def test_build_unknown_likes_dropped(tmp_path):
    out = tmp_path / "ds"
    s = build_dataset(synthetic_raw(tmp_path), out, BuildConfig(), psi_fn=fake_psi)
    ds = load_pervidcom(out, check_files=False)
    assert sorted(ds.videos) == [f"v{i:02d}" for i in range(11)]
    pseudo = Pseudonymizer(KEY.encode())
    assert set(ds.user_split) == {pseudo("raw-A"), pseudo("raw-C")}  # uB has 10 known-liked videos
    assert len(ds.comments) == 22
    assert s["dropped"] == {
        "videos_likes_le_400": 1,
        "videos_likes_unknown_dropped": 1,
        "videos_psi_le_0.9": 1,
        "users_below_min_videos": 1,
    }
    assert s["split_users"] == {"train": 1, "val": 0, "test": 1}
    with pytest.raises(DatasetFormatError, match="no such file"):
        load_pervidcom(out)  # videos not downloaded: the card says to load with check_files=False
    card = (out / "DATASET.md").read_text()
    assert "Unknown likes (null) were dropped" in card and "check_files=False" in card


def test_build_unknown_likes_kept_writes_exact_records_and_table(tmp_path):
    out = tmp_path / "ds"
    cfg = BuildConfig(filters=FilterConfig(unknown_likes="keep"), seed=1)
    s = build_dataset(synthetic_raw(tmp_path), out, cfg, psi_fn=fake_psi)
    assert s["final"] == {"videos": 12, "users": 3, "comments": 33}
    assert s["videos_with_unknown_likes"] == 1 and s["split_users"] == {"train": 2, "val": 0, "test": 1}
    videos = {v["video_id"]: v for v in load_jsonl(out / "videos.jsonl")}
    assert videos["v13"] == {
        "video_id": "v13",
        "title": "t",
        "likes": None,
        "psi": 1.0,
        "file": "videos/v13.mp4",
    }
    assert videos["v00"]["duration_s"] == 30.0
    c = load_jsonl(out / "comments.jsonl")[0]
    assert set(c) == {"comment_id", "video_id", "user_id", "text", "likes", "published_at"}
    with (out / "table1.csv").open() as f:
        table = {row["statistic"]: row for row in csv.DictReader(f)}
    assert table["# of Comments"]["Total"] == "33" and table["# of Users"]["Total"] == "3"
    assert table["# of Videos"]["Total"] == "12"
    assert float(table["Avg. # of Words"]["Total"]) == 5.0  # "comment on vNN by X"
    card = (out / "DATASET.md").read_text()
    assert "Unknown likes (null) were kept" in card and "| collected | 14 | 3 | 35 |" in card
    assert "share with ψ > 0.95: 100.0%" in card
    for name in (
        "fig2_users_by_num_videos",
        "fig3_videos_by_num_frequent_users",
        "fig4_wordclouds",
        "psi_histogram",
    ):
        assert (out / "figures" / f"{name}.png").stat().st_size > 10_000


def test_downloaded_files_are_referenced_and_checked(tmp_path):
    out = tmp_path / "ds"
    (out / "videos").mkdir(parents=True)
    for i in range(11):
        (out / "videos" / f"v{i:02d}.webm").write_bytes(b"x")  # the extension yt-dlp chose
    s = build_dataset(synthetic_raw(tmp_path), out, BuildConfig(), psi_fn=fake_psi)
    assert s["check_files"] is True and s["video_files_present"] == 11
    ds = load_pervidcom(out)  # files checked
    assert ds.video_path("v03") == out / "videos" / "v03.webm"
    assert "All present" in (out / "DATASET.md").read_text()


def test_raw_user_ids_must_be_pseudonyms(tmp_path):
    raw = synthetic_raw(tmp_path)
    rows = load_jsonl(raw / "comments.jsonl")
    rows[4]["user_id"] = "UCsomeRawChannelId"
    write_jsonl(raw / "comments.jsonl", rows)
    with pytest.raises(RawFormatError, match=r"comments.jsonl:5: field 'user_id' is not a pvllm pseudonym"):
        build_dataset(raw, tmp_path / "ds", BuildConfig(), psi_fn=fake_psi)


@pytest.mark.skipif(not (SHARED / "danmaku_sample.jsonl").exists(), reason="../shared/data not present")
def test_cli_on_real_danmaku_subset_with_real_model(tmp_path):
    """One series, 10 users, fork=easy excluded; the real MiniLM scores ψ (~1,300 short comments)."""
    rows = load_jsonl(SHARED / "danmaku_sample.jsonl")
    series = [r for r in rows if r["video_id"].startswith("英雄教室/")]
    per_author = defaultdict(set)
    for r in series:
        if r["fork"] == "main":
            per_author[r["author"]].add(r["video_id"])
    picked = set(sorted(a for a, v in per_author.items() if len(v) >= 10)[:10])
    subset = [r for r in series if r["author"] in picked]
    write_jsonl(tmp_path / "in.jsonl", subset)
    raw, out = tmp_path / "raw", tmp_path / "ds"
    assert (
        collect_main(
            [
                "import",
                "--comments",
                str(tmp_path / "in.jsonl"),
                "--videos",
                str(SHARED / "danmaku_sample_videos.jsonl"),
                "--exclude",
                "fork=easy",
                "--out",
                str(raw),
            ]
        )  # fmt: skip
        == 0
    )
    args = ["--raw", str(raw), "--out", str(out), "--unknown-likes", "keep", "--psi-threshold", "0.05"]
    assert main([*args, "--min-user-videos", "10", "--name", "danmaku subset"]) == 0

    # ψ of episodes 01 and 06 is ~0.03 (measured with the real model), the others 0.06-0.22
    videos = {v["video_id"]: v for v in load_jsonl(out / "videos.jsonl")}
    summary = json.loads((out / "build_summary.json").read_text())
    assert sorted(videos) == [f"英雄教室/{i:02d}" for i in (2, 3, 4, 5, 7, 8, 9, 10, 11, 12)]
    assert all(v["psi"] > 0.05 and v["likes"] is None for v in videos.values())
    assert summary["dropped"]["videos_psi_le_0.05"] == 2
    # users and comments, recomputed here from the input: >= 10 distinct kept videos, main fork only
    main_rows = [r for r in subset if r["fork"] == "main" and r["video_id"] in videos]
    kept_vids = defaultdict(set)
    for r in main_rows:
        kept_vids[r["author"]].add(r["video_id"])
    expected_authors = {a for a, v in kept_vids.items() if len(v) >= 10}
    expected_comments = {r["comment_id"] for r in main_rows if r["author"] in expected_authors}
    ds = load_pervidcom(out, check_files=False)
    assert set(ds.comments) == expected_comments
    assert len(ds.user_split) == len(expected_authors) == 6  # the other 4 have 9 of the 10 videos
    assert summary["dropped"]["users_below_min_videos"] == 4
    pseudo = Pseudonymizer(KEY.encode())
    assert set(ds.user_split) == {pseudo(a) for a in expected_authors}

    for name in (
        "table1.md",
        "table1.csv",
        "DATASET.md",
        "figures/fig4_wordclouds.png",
        "figures/fig2_users_by_num_videos.png",
    ):
        assert (out / name).is_file(), name
    assert summary["wordcloud_needs_cjk_font"] is True

    # no raw author id anywhere in any output, text or binary
    blobs = [p.read_bytes() for d in (raw, out) for p in d.rglob("*") if p.is_file()]
    for author in {r["author"] for r in subset}:
        needle = author.encode()
        assert not any(needle in b for b in blobs), author
        assert not any(author[2:].encode() in b for b in blobs), author  # the bare hex part either


def _short_dump(tmp_path: Path) -> Path:
    """No user reaches 11 videos: uA 10 liked videos + v12 (5 likes), uB 5, uC only v12; one comment of uA
    sent twice (a duplicate id)."""
    pseudo = Pseudonymizer(KEY.encode())
    raw = tmp_path / "raw"
    videos = [{"video_id": f"v{i:02d}", "title": f"title {i}", "likes": 1000} for i in range(12)]
    videos.append({"video_id": "v12", "title": "t", "likes": 5})
    plan = {"A": [*range(10), 12], "B": list(range(5)), "C": [12]}
    comments = [{"comment_id": f"c{u}{i}", "video_id": f"v{i:02d}", "user_id": pseudo(f"raw-{u}"),
                 "text": f"comment {i} by {u}", "likes": 1, "published_at": None}
                for u, vids in plan.items() for i in vids]
    write_jsonl(raw / "videos.jsonl", videos)
    write_jsonl(raw / "comments.jsonl", [*comments, comments[0]])
    return raw


def test_a_build_that_keeps_nothing_fails_naming_the_filter(tmp_path):
    """Issue 25 items 8-9: exit 3 (not 0) with the filter that removed the last users and what every stage
    removed; the card states the duplicate ids, that ψ was not computed and the license ("unknown" unless
    --license); the rerun with a looser filter completes with every comment id once."""
    import subprocess
    import sys

    from pvllm.data.build import EXIT_EMPTY

    raw, out = _short_dump(tmp_path), tmp_path / "ds"
    args = [sys.executable, "-m", "pvllm.data.build", "--raw", str(raw), "--out", str(out), "--skip-psi",
            "--psi-threshold", "-1", "--undefined-psi", "keep"]
    p = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert p.returncode == EXIT_EMPTY == 3, p.stderr[-2000:]
    err = p.stderr
    assert "error: the build kept no user: filter 'users >= 11 videos (round 1)' removed the last 2 user(s)" in err
    # likes > 400 removed v12 with uC and both comments on it; ψ (not computed, kept) nothing; users the rest
    assert "likes > 400: -1 videos, -1 users, -2 comments" in err
    assert "psi > -1.0: -0 videos, -0 users, -0 comments" in err
    assert "users >= 11 videos (round 1): -12 videos, -2 users, -15 comments" in err
    card = (out / "DATASET.md").read_text()
    assert "Duplicate comment ids in the raw input: 1 " in card
    assert "ψ is still computed" not in card and "ψ not computed (`--skip-psi`)" in card
    assert "- Licenses: unknown (none was stated: pass `--license`)" in card and "YouTube" not in card

    p = subprocess.run([*args, "--min-user-videos", "5", "--license", "CC BY 4.0 (test)"], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    ids = [c["comment_id"] for c in load_jsonl(out / "comments.jsonl")]
    assert sorted(ids) == sorted([f"cA{i}" for i in range(10)] + [f"cB{i}" for i in range(5)])
    assert "- Licenses: CC BY 4.0 (test)\n" in (out / "DATASET.md").read_text()
