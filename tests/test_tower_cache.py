"""The feature cache for every family: a frozen tower's outputs recorded once per video and replayed give the
same logits and loss as running the tower (tiny random models of the real HF classes, built once per
session); the cached path opens no video and can go without the video files."""

from __future__ import annotations

import dataclasses

import pytest
import torch

FAMILIES = ["video_llava", "pvllm_video", "qwen2_5_vl", "qwen3_vl", "llava_onevision", "smolvlm",
            "llava_next_video", "internvl"]


@pytest.fixture(scope="session")
def family_dirs(tiny_model_dir, tiny_family_dirs):
    return {"video_llava": tiny_model_dir, **tiny_family_dirs}


@pytest.fixture(scope="session")
def val_samples(sample_ds):
    from pvllm.data.histories import build_eval_histories

    samples = build_eval_histories(sample_ds, "val", k=5, seed=0)
    first = {}
    for s in samples:  # two samples on two different (small) videos
        if s.video_id not in first and s.video_id != "bunny_full":
            first[s.video_id] = s
    return list(first.values())[:2]


def _no_decoder(monkeypatch):
    import decord

    def refuse(*a, **k):
        raise AssertionError("a video was opened on the cached path")

    monkeypatch.setattr(decord, "VideoReader", refuse)


@pytest.mark.parametrize("name", FAMILIES)
def test_cached_tower_equals_running_it(name, family_dirs, sample_ds, val_samples, tmp_path, monkeypatch):
    from pvllm.data.collate import PVLLMCollator, SampleDataset
    from pvllm.data.feature_cache import FeatureCache, build_cache
    from pvllm.models.builder import build_pvllm
    from pvllm.models.module import PVLLMModule
    from pvllm.models.tower_cache import TowerFeatures
    from pvllm.models.transform import ModelTransform

    bundle = build_pvllm(str(family_dirs[name]))
    model, proc = bundle.model.eval(), bundle.processor
    tower = TowerFeatures(model, proc, num_frames=4)
    videos = [(s.video_id, str(sample_ds.video_path(s.video_id))) for s in val_samples]
    counts = build_cache(tmp_path / "store", tower, videos, progress=False)
    assert dict(counts) == {"encoded": 2}
    assert dict(build_cache(tmp_path / "store", tower, videos, progress=False)) == {"reused": 2}  # resumes

    plain = SampleDataset(sample_ds, val_samples, 4, False)
    cache = FeatureCache(tmp_path / "store", tower.settings())
    collate = PVLLMCollator(ModelTransform(proc))
    module = PVLLMModule(model, optim={"lr": 1e-4})
    want = collate([plain[0], plain[1]])
    with monkeypatch.context() as m:
        _no_decoder(m)
        cached = SampleDataset(sample_ds, val_samples, 4, False, feature_cache=cache)
        got = collate([cached[0], cached[1]])
    assert len(got["tower_outputs"]) == 2
    torch.testing.assert_close(got["input_ids"], want["input_ids"])  # the same prompt expansion
    with torch.no_grad():
        logits_want, targets, _ = module._supervised_logits(want)
        logits_got, _, _ = module._supervised_logits(got)
        loss_want, loss_got = module(want), module(got)
    torch.testing.assert_close(logits_got, logits_want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(loss_got, loss_want, rtol=1e-5, atol=1e-5)
    assert targets is not None and torch.isfinite(loss_want)
    # the recorded outputs feed the model: other outputs give other logits (the test can fail)
    g = torch.Generator().manual_seed(0)  # random, not a constant shift (a LayerNorm after the tower ignores those)
    bad = [{k: v + torch.randn(v.shape, generator=g) for k, v in o.items()} for o in got["tower_outputs"]]
    with torch.no_grad():
        other, _, _ = module._supervised_logits({**got, "tower_outputs": bad})
    assert not torch.allclose(other, logits_want, atol=1e-4)


def test_settings_name_what_differs_and_missing_videos_are_named(family_dirs, sample_ds, val_samples, tmp_path,
                                                                 monkeypatch):
    from pvllm.data.cache_store import CacheEntryError
    from pvllm.data.feature_cache import FeatureCache, FeatureCacheError, build_cache
    from pvllm.models.builder import build_pvllm
    from pvllm.models.tower_cache import TowerCacheError, TowerFeatures

    bundle = build_pvllm(str(family_dirs["video_llava"]))
    tower = TowerFeatures(bundle.model, bundle.processor, num_frames=4)
    vid, path = val_samples[0].video_id, str(sample_ds.video_path(val_samples[0].video_id))
    build_cache(tmp_path, tower, [(vid, path)], progress=False)
    with pytest.raises(FeatureCacheError, match="num_frames: cache has 4, this run needs 8"):
        FeatureCache(tmp_path, TowerFeatures(bundle.model, bundle.processor, num_frames=8).settings())
    other = val_samples[1]
    cache = FeatureCache(tmp_path, tower.settings())
    with pytest.raises(CacheEntryError, match=f"video {other.video_id} .*not in the feature cache"):
        cache.get(other.video_id, str(sample_ds.video_path(other.video_id)))
    # without the video files: found by id; a video the cache lacks is named
    offline = FeatureCache(tmp_path, tower.settings(), require_files=False)
    assert offline.get(vid, tmp_path / "gone.mp4")["tower_outputs"]
    with pytest.raises(CacheEntryError, match=f"video {other.video_id} .*file absent"):
        offline.get(other.video_id, tmp_path / "gone.mp4")
    # a trainable tower is refused: its outputs would change while training
    next(bundle.model.model.video_tower.parameters()).requires_grad_(True)
    with pytest.raises(TowerCacheError, match="trainable"):
        tower.settings()


@pytest.mark.parametrize("name", FAMILIES)
def test_evaluation_with_the_feature_cache_equals_running_the_tower(name, family_dirs, sample_ds, tmp_path,
                                                                    monkeypatch):
    """generate (left-padded batches) and candidate scoring with cached tower outputs equal running the tower,
    with no video opened and (ranking) without the video files."""
    from pvllm.data.feature_cache import build_cache
    from pvllm.data.histories import build_eval_histories
    from pvllm.evaluation import to_request
    from pvllm.generators.hf_video import HFVideoGenerator
    from pvllm.models.tower_cache import TowerFeatures

    rows = [s.to_row() for s in build_eval_histories(sample_ds, "test", k=5, seed=0)
            if s.video_id != "bunny_full"][:3]
    reqs = [to_request(r, sample_ds) for r in rows]
    kw = dict(batch_size=3, num_frames=4, sampling={"max_new_tokens": 4, "min_new_tokens": 2})
    plain = HFVideoGenerator(str(family_dirs[name]), **kw)
    tower = TowerFeatures(plain.model, plain.processor, 4)
    build_cache(tmp_path, tower, [(r["video_id"], str(sample_ds.video_path(r["video_id"]))) for r in rows],
                progress=False)
    cached = HFVideoGenerator(str(family_dirs[name]), feature_cache=str(tmp_path), **kw)
    offline = HFVideoGenerator(str(family_dirs[name]), feature_cache=str(tmp_path), require_video_files=False, **kw)
    cands = [["nice.", "so cute rabbit", "where is this?"]] * len(reqs)
    want_text = [r.text for r in plain.generate(reqs)]
    want_scores = plain.score_candidates(reqs, cands)
    with monkeypatch.context() as m:
        _no_decoder(m)
        got_text = [r.text for r in cached.generate(reqs)]
        got_scores = cached.score_candidates(reqs, cands)
        gone = [dataclasses.replace(r, video_path=str(tmp_path / "gone.mp4")) for r in reqs]
        off_scores = offline.score_candidates(gone, cands)
    assert got_text == want_text and all(want_text)
    for a, b, c in zip(want_scores, got_scores, off_scores):
        assert b == pytest.approx(a, abs=1e-4) and c == pytest.approx(a, abs=1e-4)


def test_training_without_the_video_files_reads_the_cache(family_dirs, tmp_path):
    """train.py with data.feature_cache and data.require_video_files=false on a dataset directory whose videos
    are gone: the same per-step losses as training on the videos (the CLI builds the cache)."""
    import csv
    import shutil

    from pvllm.cache_features import main as cache_features
    from tests.conftest import SAMPLE
    from tests.entrypoints import compose_config, entry_module

    offline = tmp_path / "no_videos"
    shutil.copytree(SAMPLE, offline, ignore=shutil.ignore_patterns("videos"))
    model = str(family_dirs["video_llava"])
    assert cache_features(["--model", model, "--data", str(SAMPLE), "--out", str(tmp_path / "store"),
                           "--num-frames", "4"]) == 0
    base = ["model=tiny", f"model.pretrained={model}", "data.num_frames=4", "trainer.max_steps=2",
            "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "+trainer.limit_val_batches=2",
            "logger=csv", "callbacks.best_checkpoint=null", "callbacks.last_checkpoint=null", "save_hf_model=false"]

    def losses(extra: list[str], out) -> list[float]:
        entry_module("train").train(compose_config("train", base + extra, out))
        rows = csv.DictReader(next((out / "csv").glob("version_*/metrics.csv")).open())
        return [float(r["train/loss"]) for r in rows if r.get("train/loss")]

    want = losses([], tmp_path / "videos")
    got = losses([f"data.root={offline}", f"data.feature_cache={tmp_path / 'store'}",
                  "data.require_video_files=false"], tmp_path / "cache")
    assert len(want) == 2 and got == pytest.approx(want, abs=1e-5)


def test_evaluate_without_the_video_files_reads_the_cache(family_dirs, tmp_path):
    """evaluate.py with data.feature_cache and data.require_video_files=false on a dataset whose videos are
    gone writes the predictions a run on the videos writes."""
    import shutil

    from pvllm.cache_features import main as cache_features
    from pvllm.utils.jsonl import load_jsonl
    from tests.conftest import SAMPLE
    from tests.entrypoints import run_evaluate

    offline = tmp_path / "no_videos"
    shutil.copytree(SAMPLE, offline, ignore=shutil.ignore_patterns("videos"))
    model = str(family_dirs["video_llava"])
    assert cache_features(["--model", model, "--data", str(SAMPLE), "--out", str(tmp_path / "store")]) == 0
    args = ["generator=pvllm", f"generator.pretrained={model}", "generator.greedy=true",
            "generator.sampling.max_new_tokens=6", "rater=lexical", "~logger", "samples_per_user=1",
            "stage=generate", "max_samples=3", f"histories_file={tmp_path / 'h.jsonl'}"]
    run_evaluate(args, tmp_path / "videos")
    run_evaluate(args + [f"data.root={offline}", f"data.feature_cache={tmp_path / 'store'}",
                         "data.require_video_files=false"], tmp_path / "cache")
    a = [(p["sample_id"], p["text"]) for p in load_jsonl(tmp_path / "videos" / "predictions.jsonl")]
    b = [(p["sample_id"], p["text"]) for p in load_jsonl(tmp_path / "cache" / "predictions.jsonl")]
    assert a == b and len(a) == 3 and all(t for _, t in a)
