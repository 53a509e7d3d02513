"""Build the feature cache: a model's frozen vision tower run once per video of a dataset, its outputs stored in
the cache store (``pvllm.data.feature_cache``), for any family. An entry point: it builds the model and hands
its tower transform (``pvllm.models.tower_cache.TowerFeatures``) to the data layer.

    python -m pvllm.cache_features --model DIR_OF_MODEL --data data/sample --out DIR [--num-frames 8]
        [--frame-size PX] [--frame-cache DIR]

Resumable: entries already there are kept (read back and verified). Then train or evaluate with
``data.feature_cache=DIR`` (and ``data.require_video_files=false`` to go without the videos).
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pvllm.cache_features", description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="HF model directory (any supported family)")
    ap.add_argument("--data", required=True, help="dataset directory (videos.jsonl + video files)")
    ap.add_argument("--out", required=True, help="cache store directory (may hold several models and samplings)")
    ap.add_argument("--num-frames", type=int, default=8)
    ap.add_argument("--frame-size", type=int, default=None, help="shorter edge of the frames (as data.frame_size)")
    ap.add_argument("--frame-cache", default=None, help="read frames from this frame cache when it holds them")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from pvllm.data.dataset import load_pervidcom
    from pvllm.data.feature_cache import FeatureCacheError, build_cache
    from pvllm.models.builder import build_pvllm
    from pvllm.models.tower_cache import TowerCacheError, TowerFeatures

    ds = load_pervidcom(args.data, check_files=False)
    bundle = build_pvllm(args.model)
    try:
        tower = TowerFeatures(bundle.model, bundle.processor, args.num_frames, args.frame_size)
        counts = build_cache(args.out, tower, [(v, str(ds.video_path(v))) for v in ds.videos],
                             frame_cache=args.frame_cache)
    except (FeatureCacheError, TowerCacheError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.out}: {dict(counts)}")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
