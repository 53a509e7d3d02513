"""Decode once: the frame cache equals decoding, is content-checked and resumable; evaluation grouped by
video (each video decoded once) generates what per-sample decoding does; bucketed batches equal batch 1."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from pvllm.data.frame_cache import FrameCache, FrameSource, Sampling, decode, main, resize_frames
from pvllm.data.video_io import clip_metadata, read_frames
from pvllm.generators.base import length_batches
from tests.conftest import SAMPLE

VIDEOS = ["bikes_01", "bunny_02", "bunny_full"]


def _videos(ds, ids=VIDEOS):
    return [(v, str(ds.video_path(v))) for v in ids]


@pytest.mark.parametrize("size", [None, 32])
def test_cached_frames_equal_decoded_frames(tmp_path, sample_ds, size):
    s = Sampling(8, size)
    cache = FrameCache(tmp_path, s, create=True)
    assert dict(cache.build(_videos(sample_ds), progress=False)) == {"cached": 3}
    for vid, path in _videos(sample_ds):
        frames, status = cache.get(vid, path)
        assert status == "hit" and frames.dtype == np.uint8
        np.testing.assert_array_equal(frames, decode(path, s))
        if size is None:  # bit for bit what the model's reader returns
            np.testing.assert_array_equal(frames, read_frames(path, 8))
        else:  # shorter edge resized to 32 px, aspect kept
            assert min(frames.shape[1:3]) == 32 and frames.shape[0] == 8
    bunny = cache.get("bunny_full", str(sample_ds.video_path("bunny_full")))[0]
    assert bunny.shape == ((8, 720, 1280, 3) if size is None else (8, 32, 57, 3))  # 1280x720 clip
    assert dict(cache.verify()) == {"ok": 3}
    assert json.loads((tmp_path / "store.json").read_text()) == {"format": "pvllm-cache-store/1"}
    settings = json.loads((tmp_path / "settings" / f"{cache.store.sid}.json").read_text())
    assert settings == {"kind": "frames", "num_frames": 8, "size": size, "sampler": "linspace"}
    lines = [json.loads(x) for x in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["video_id"] for r in lines) == sorted(VIDEOS)  # compacted: one line per entry
    # the clip metadata is in the entry: a hit opens no video
    for vid, path in _videos(sample_ds):
        assert cache.clip(vid, path)[1] == clip_metadata(path, 8)


def test_resize_matches_pil_bicubic():
    from PIL import Image

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(2, 40, 60, 3), dtype=np.uint8)
    out = resize_frames(frames, 20)
    assert out.shape == (2, 20, 30, 3)
    np.testing.assert_array_equal(
        out[1], np.asarray(Image.fromarray(frames[1]).resize((30, 20), Image.BICUBIC))
    )
    assert resize_frames(frames, None) is frames


def test_build_resumes_and_a_changed_video_is_decoded_again_with_a_counted_warning(
    tmp_path, sample_ds, caplog
):
    vids = tmp_path / "videos"
    vids.mkdir()
    for v in VIDEOS:
        shutil.copy(sample_ds.video_path(v), vids / f"{v}.mp4")
    videos = [(v, str(vids / f"{v}.mp4")) for v in VIDEOS]
    s = Sampling(8, 32)
    cache = FrameCache(tmp_path / "fc", s, create=True)
    cache.build(videos, progress=False)
    # as if killed while appending bunny_02's line: a torn last line (skipped, counted), its entry rebuilt
    mf = cache.dir / "manifest.jsonl"
    lines = mf.read_text().splitlines()
    torn = next(x for x in lines if '"bunny_02"' in x)
    mf.write_text("".join(x + "\n" for x in lines if x != torn) + torn[: len(torn) // 2])
    with caplog.at_level(logging.WARNING, logger="pvllm.data.cache_store"):
        assert FrameCache(tmp_path / "fc", s).store.torn == 1
    assert "could not be read" in caplog.text
    assert dict(cache.build(videos, progress=False)) == {"already_cached": 2, "cached": 1}
    assert len(mf.read_text().splitlines()) == 3  # compacted: the torn line is gone

    # same bytes, new mtime (a copied dataset): still a hit, after re-hashing
    shutil.copy(sample_ds.video_path("bikes_01"), vids / "bikes_01.mp4")
    assert cache.get("bikes_01", videos[0][1])[1] == "hit"
    # another video's content under this id: stale, decoded again, counted and named
    shutil.copy(sample_ds.video_path("bikes_02"), vids / "bikes_01.mp4")
    assert cache.get("bikes_01", videos[0][1]) == (None, "stale")
    src = FrameSource(s, tmp_path / "fc")
    with caplog.at_level(logging.WARNING, logger="pvllm.data.frame_cache"):
        frames = src.get(videos[0][1], "bikes_01")
        src.get(videos[1][1], "bunny_02")
    np.testing.assert_array_equal(frames, decode(sample_ds.video_path("bikes_02"), s))
    assert src.summary() == {"cache": 1, "decoded": 1, "decoded_cache_stale": 1}
    assert "video bikes_01 is stale" in caplog.text

    with pytest.raises(ValueError, match="another cache format"):
        (cache.dir / "store.json").write_text(json.dumps({"format": "x"}))
        FrameCache(tmp_path / "fc", s)


def test_a_hit_opens_no_video_and_a_run_can_go_without_the_files(tmp_path, sample_ds, monkeypatch):
    import decord

    from pvllm.data.cache_store import CacheEntryError

    s = Sampling(4, 32)
    FrameCache(tmp_path, s, create=True).build(_videos(sample_ds, VIDEOS[:2]), progress=False)
    want = {v: decode(p, s) for v, p in _videos(sample_ds)}

    def refuse(*a, **k):
        raise AssertionError("a video was opened on a cache hit")

    monkeypatch.setattr(decord, "VideoReader", refuse)
    src = FrameSource(s, tmp_path)
    for vid, path in _videos(sample_ds, VIDEOS[:2]):
        np.testing.assert_array_equal(src.get(path, vid), want[vid])
    offline = FrameSource(s, tmp_path, require_files=False)  # the files are gone: found by video id
    for vid in VIDEOS[:2]:
        frames, meta = offline.clip(tmp_path / "gone" / f"{vid}.mp4", vid)
        np.testing.assert_array_equal(frames, want[vid])
        assert meta["total_num_frames"] > 0
    with pytest.raises(CacheEntryError, match=f"video {VIDEOS[2]}: missing in the frame cache .*is absent"):
        offline.get(tmp_path / "gone" / f"{VIDEOS[2]}.mp4", VIDEOS[2])
    with pytest.raises(ValueError, match="require_video_files=false reads every video from the cache"):
        FrameSource(s, None, require_files=False)


def test_reads_are_verified_against_the_manifest(tmp_path, sample_ds, caplog):
    s = Sampling(4, 32)
    cache = FrameCache(tmp_path, s, create=True)
    cache.build(_videos(sample_ds, VIDEOS[:2]), progress=False)
    (vid, path), (vid2, path2) = _videos(sample_ds, VIDEOS[:2])
    rec = cache.store.records[cache.store.by_video[vid]]
    np.save(tmp_path / rec["object"], np.zeros((3, 32, 57, 3), np.uint8))  # another frame count
    with caplog.at_level(logging.WARNING, logger="pvllm.data.frame_cache"):
        assert cache.get(vid, path) == (None, "corrupt")
    assert "uint8[3, 32, 57, 3] != uint8[4, " in caplog.text
    rec2 = cache.store.records[cache.store.by_video[vid2]]
    np.save(tmp_path / rec2["object"], np.load(tmp_path / rec2["object"]).astype(np.int16))  # another dtype
    assert cache.get(vid2, path2) == (None, "corrupt")
    assert dict(cache.verify()) == {"bad": 2}
    src = FrameSource(s, tmp_path)  # a corrupt entry is decoded instead, counted
    np.testing.assert_array_equal(src.get(path, vid), decode(path, s))
    assert src.summary() == {"decoded": 1, "decoded_cache_corrupt": 1}


def test_cli_build_and_dataset_reads_the_cache(tmp_path, sample_ds, capsys):
    from pvllm.data.collate import SampleDataset
    from pvllm.data.histories import build_eval_histories

    main(["build", "--root", str(SAMPLE), "--cache", str(tmp_path), "--size", "32"])
    assert "{'cached': 18}" in capsys.readouterr().out
    main(["build", "--root", str(SAMPLE), "--cache", str(tmp_path), "--size", "32"])  # resumes: nothing to do
    assert "{'already_cached': 18}" in capsys.readouterr().out
    main(["verify", "--cache", str(tmp_path), "--size", "32"])  # re-hashes every cached array
    assert "{'ok': 18}" in capsys.readouterr().out
    samples = build_eval_histories(sample_ds, "val", k=5, seed=0)[:4]
    s = Sampling(8, 32)
    cached = SampleDataset(sample_ds, samples, 8, False, frames=FrameSource(s, tmp_path))
    decoded = SampleDataset(sample_ds, samples, 8, False, frames=FrameSource(s))
    for i in range(len(samples)):
        np.testing.assert_array_equal(cached[i]["frames"], decoded[i]["frames"])
    assert cached.frames.summary() == {"cache": 4} and decoded.frames.summary() == {"decoded": 4}


def test_length_batches():
    assert length_batches([3, 9, 1, 9, 5], 2) == [[1, 3], [4, 0], [2]]
    assert length_batches([], 4) == []
    with pytest.raises(ValueError):
        length_batches([1], 0)


def test_grouped_by_video_generation_equals_per_sample_generation(tmp_path, tiny_model_dir, sample_ds):
    """Evaluation's way (grouped by video, each video decoded once, bucketed batches of 4 from the frame
    cache) writes the same predictions as the anchor way (per-sample decode, batch 1, input order)."""
    from pvllm.data.histories import build_eval_histories
    from pvllm.evaluation import generate_resumable, group_by_video
    from pvllm.generators.video_llava import VideoLlavaGenerator
    from pvllm.utils.jsonl import load_jsonl

    rows = [s.to_row() for s in build_eval_histories(sample_ds, "val", k=5, seed=0, samples_per_user=3)]
    assert len(rows) > len({r["video_id"] for r in rows})  # several samples share a video
    assert [r["video_id"] for r in group_by_video(rows)] != [r["video_id"] for r in rows]
    kw = dict(greedy=True, sampling={"max_new_tokens": 6})
    anchor = VideoLlavaGenerator(str(tiny_model_dir), batch_size=1, frame_memo=0, **kw)
    generate_resumable(
        anchor, rows, sample_ds, tmp_path / "a.jsonl", batch_size=1, by_video=False, progress=False
    )
    FrameCache(tmp_path / "fc", Sampling(8), create=True).build(
        [(v, str(sample_ds.video_path(v))) for v in {r["video_id"] for r in rows}], progress=False
    )
    ours = VideoLlavaGenerator(str(tiny_model_dir), batch_size=4, frame_cache=str(tmp_path / "fc"), **kw)
    counts = generate_resumable(
        ours, rows, sample_ds, tmp_path / "b.jsonl", batch_size=4, window=16, progress=False
    )
    a = {r["sample_id"]: r["text"] for r in load_jsonl(tmp_path / "a.jsonl")}
    b = {r["sample_id"]: r["text"] for r in load_jsonl(tmp_path / "b.jsonl")}
    assert a == b and len(a) == len(rows) and len(set(a.values())) > 1
    n_videos = len({r["video_id"] for r in rows})
    assert anchor.frames.summary() == {"decoded": len(rows)}
    assert ours.frames.summary() == {"cache": n_videos, "memo": len(rows) - n_videos}
    assert counts["frames_cache"] == n_videos


def test_window_goes_to_bucketing_generators_only(tmp_path, sample_ds, monkeypatch):
    """A local model gets windows of several batches (bucketed there); an API generator gets batch_size
    rows per call, so a kill loses at most one batch of paid requests."""
    from pvllm.data.histories import build_eval_histories
    from pvllm.evaluation import generate_resumable
    from pvllm.generators.openai_compatible import OpenAICompatibleGenerator

    try:
        from fakes.openai_server import FakeOpenAIServer
    except ImportError:
        from tests.fakes.openai_server import FakeOpenAIServer
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    rows = [s.to_row() for s in build_eval_histories(sample_ds, "val", k=5, seed=0, samples_per_user=3)]
    with FakeOpenAIServer() as server:
        gen = OpenAICompatibleGenerator(model="m", base_url=server.url + "/v1", batch_size=4, max_concurrency=2)
        sizes: list[int] = []
        real = gen.generate
        monkeypatch.setattr(gen, "generate", lambda batch: sizes.append(len(batch)) or real(batch))
        generate_resumable(gen, rows, sample_ds, tmp_path / "p.jsonl", batch_size=4, window=64, progress=False)
        gen.close()
    assert not gen.bucketed and sizes == [4, 4, 4] and len(server.chat_calls()) == 12
