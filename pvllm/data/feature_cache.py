"""Frozen-feature cache: the frozen vision encoder run once per video, read by training and evaluation.

A cache directory holds ONE key: the encoder's identity (its spec), the sha256 of its weights, the frame
sampling (``num_frames`` uniform ``linspace`` indices, pvllm.data.video_io) and the preprocessing (image
size, crop, mean/std, resampling). Layout::

    DIR/manifest.json     {"format": 1, "key": {...}, "key_sha256": ..., "entries": {VIDEO_SHA256: {...}}}
    DIR/features/VIDEO_SHA256.npy    float32 (num_frames, tokens_per_frame, width): encoder output

Entries are addressed by the sha256 of the video file's bytes, so a changed file is never served stale
features (content check), and each ``.npy`` is checked against the sha256 recorded when it was written.
Opening a cache with a model or sampling whose key differs raises ``FeatureCacheError`` naming the
differing fields: features of one encoder are never fed to another. Building resumes: entries already
present are kept, the manifest is rewritten atomically after every video.

    python -m pvllm.data.feature_cache --model DIR_OF_MODEL --data data/sample --out DIR [--num-frames 8]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pvllm.data.video_io import VideoReadError
from pvllm.utils.atomic import write_bytes_atomic

FORMAT = 1
MANIFEST = "manifest.json"
SAMPLING = "uniform linspace(0, n-1, num_frames).round() (pvllm.data.video_io.frame_indices)"


class FeatureCacheError(RuntimeError):
    """A cache that does not fit the model/sampling, a missing entry, or a corrupt file (named)."""


class FeatureEntryError(FeatureCacheError, VideoReadError):
    """One video's entry is absent, its file missing or altered: that video is bad, as an unreadable file is
    (``data.on_bad_video=skip`` skips and counts its sample; evaluation fails that sample, counted)."""


def _sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def unwrap(model):
    """The HF model under a peft wrapper."""
    return model.base_model.model if hasattr(model, "merge_and_unload") else model


def video_encoder(model):
    enc = unwrap(model).model.video_tower
    if not hasattr(enc, "tokens_per_frame"):
        raise FeatureCacheError(
            "the feature cache needs a model with a pvllm vision encoder (model/vision_encoder="
            "torchvision_mobilenet_v2 | open_clip), not the family's own tower")
    return enc


def cache_key(model, processor, num_frames: int) -> dict[str, Any]:
    """Everything the cached features depend on."""
    from pvllm.models.vision_encoders import encoder_weights_sha256

    enc = video_encoder(model)
    if any(p.requires_grad for p in enc.parameters()):
        raise FeatureCacheError("the vision encoder is trainable: its features change during training; "
                                "the feature cache is for frozen encoders only")
    vp = processor.video_processor
    prep = {k: getattr(vp, k, None) for k in ("size", "crop_size", "image_mean", "image_std", "resample",
                                               "do_resize", "do_center_crop", "do_rescale", "rescale_factor",
                                               "do_normalize", "do_convert_rgb")}
    prep = json.loads(json.dumps(prep, default=str))
    return {
        "encoder": dict(unwrap(model).config.vision_encoder),
        "weights_sha256": encoder_weights_sha256(enc),
        "tokens_per_frame": enc.tokens_per_frame,
        "width": enc.out_dim,
        "num_frames": int(num_frames),
        "sampling": SAMPLING,
        "preprocessing": prep,
        "dtype": "float32",
    }


def _key_sha(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


class FeatureCache:
    """Read side: ``features(video_path)`` -> tensor (num_frames, tokens_per_frame, width)."""

    def __init__(self, directory: str | os.PathLike, key: dict):
        self.dir = Path(directory)
        self.key = key
        self._video_sha: dict[str, str] = {}
        manifest = self.dir / MANIFEST
        if not manifest.is_file():
            raise FeatureCacheError(f"{self.dir}: no feature cache here ({MANIFEST} missing); build it with "
                                    f"python -m pvllm.data.feature_cache --model MODEL --data DATA --out {self.dir}")
        data = json.loads(manifest.read_text())
        if data.get("format") != FORMAT:
            raise FeatureCacheError(f"{manifest}: format {data.get('format')} (this code reads {FORMAT})")
        if data["key"] != key:
            diff = sorted(k for k in set(key) | set(data["key"]) if key.get(k) != data["key"].get(k))
            detail = "; ".join(f"{k}: cache has {data['key'].get(k)!r}, model needs {key.get(k)!r}"
                               for k in diff)
            raise FeatureCacheError(f"{self.dir} was built for another encoder or frame sampling ({detail}); "
                                    "build a cache for this model in another directory")
        self.entries: dict[str, dict] = data["entries"]

    @classmethod
    def for_model(cls, directory, model, processor, num_frames: int) -> FeatureCache:
        return cls(directory, cache_key(model, processor, num_frames))

    def video_sha256(self, path: str | os.PathLike) -> str:
        p = str(path)
        if p not in self._video_sha:
            self._video_sha[p] = _sha256_file(p)
        return self._video_sha[p]

    def features(self, video_path: str | os.PathLike) -> torch.Tensor:
        sha = self.video_sha256(video_path)
        entry = self.entries.get(sha)
        if entry is None:
            raise FeatureEntryError(f"{video_path}: not in the feature cache {self.dir} (content sha256 "
                                    f"{sha[:12]}…); rerun the cache build to add it")
        f = self.dir / entry["file"]
        if not f.is_file() or _sha256_file(f) != entry["features_sha256"]:
            raise FeatureEntryError(f"{f} (features of {video_path}): {'altered (checksum)' if f.is_file() else 'missing'}"
                                    "; delete it and rerun the cache build")
        arr = np.load(f)
        want = (self.key["num_frames"], self.key["tokens_per_frame"], self.key["width"])
        if arr.shape != want:
            raise FeatureCacheError(f"{f}: shape {arr.shape}, expected {want}")
        return torch.from_numpy(arr)


def _write_manifest(directory: Path, key: dict, entries: dict) -> None:
    data = {"format": FORMAT, "key": key, "key_sha256": _key_sha(key), "entries": entries}
    write_bytes_atomic(directory / MANIFEST, json.dumps(data, indent=1, sort_keys=True).encode())


@torch.inference_mode()
def build_cache(directory: str | os.PathLike, model, processor, video_paths: list[str | os.PathLike],
                num_frames: int, progress: bool = True) -> dict[str, int]:
    """Encode every video not in the cache yet; returns counts {encoded, reused, failed}."""
    from tqdm import tqdm

    from pvllm.data.video_io import read_frames

    directory = Path(directory)
    key = cache_key(model, processor, num_frames)
    (directory / "features").mkdir(parents=True, exist_ok=True)
    entries: dict[str, dict] = {}
    if (directory / MANIFEST).is_file():
        entries = FeatureCache(directory, key).entries  # raises for a cache of another key
    model = unwrap(model)
    enc = video_encoder(model)
    was_training = enc.training
    enc.eval()
    counts = {"encoded": 0, "reused": 0, "failed": 0}
    for path in tqdm(sorted({str(p) for p in video_paths}), desc="feature cache", disable=not progress):
        sha = _sha256_file(path)
        entry = entries.get(sha)
        if entry and (directory / entry["file"]).is_file() and \
                _sha256_file(directory / entry["file"]) == entry["features_sha256"]:
            counts["reused"] += 1
            continue
        try:
            frames = read_frames(path, num_frames)
        except VideoReadError as e:  # counted and named; never replaced by another video's features
            print(f"feature cache: skipping {path}: {e}", file=sys.stderr)
            counts["failed"] += 1
            continue
        pix = processor.video_processor(videos=[frames], return_tensors="pt")["pixel_values_videos"]
        dev = next(enc.parameters()).device
        feats = model.model.encode_video(pix.to(dev)).float().cpu().numpy()  # (T, N, C)
        rel = f"features/{sha}.npy"
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(feats, dtype=np.float32))
        write_bytes_atomic(directory / rel, buf.getvalue())  # disk full: no partial file, the path named
        entries[sha] = {"file": rel, "features_sha256": _sha256_file(directory / rel), "source": Path(path).name}
        _write_manifest(directory, key, entries)
        counts["encoded"] += 1
    if not (directory / MANIFEST).is_file():
        _write_manifest(directory, key, entries)
    enc.train(was_training)
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pvllm.data.feature_cache", description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="HF model directory (built by pvllm's builder)")
    ap.add_argument("--data", required=True, help="dataset directory (videos.jsonl + video files)")
    ap.add_argument("--out", required=True, help="cache directory (one per model + sampling)")
    ap.add_argument("--num-frames", type=int, default=8)
    args = ap.parse_args(argv)
    from pvllm.data.dataset import load_pervidcom
    from pvllm.models.builder import build_pvllm

    ds = load_pervidcom(args.data)
    bundle = build_pvllm(args.model)
    try:
        counts = build_cache(args.out, bundle.model, bundle.processor,
                             [ds.video_path(v) for v in ds.videos], args.num_frames)
    except FeatureCacheError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.out}: {counts}")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
