"""P7: a training step with the frozen vision encoder run every step vs read from the feature cache.

Same model, same batch, same optimizer step (forward + backward + AdamW), side by side in one process,
alternating rounds. "encoder" = decode the 8 frames, preprocess, run the frozen encoder, then the LLM;
"cached" = replay the encoder's recorded output from ``pvllm.data.feature_cache`` (the cache store's
verified entry; ``pvllm.models.tower_cache``), then the LLM. The two losses are checked equal first
(or the timing means nothing).

    python benchmarks/bench_feature_cache.py [--model tiny|small] [--rounds 5]

``tiny``: tiny random LLM + the real MobileNetV2 (the encoder dominates); ``small``: PV-LLM-small
(SmolLM2-135M + the real MobileNetV2; needs the prepared SmolLM2, see pvllm.models.smollm2).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._common import KINDS, SPEC, creator, print_ratio, side_by_side  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=KINDS, default="tiny")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from pvllm.data.collate import PVLLMCollator
    from pvllm.data.feature_cache import FeatureCache, build_cache
    from pvllm.data.video_io import read_frames
    from pvllm.models.builder import build_pvllm
    from pvllm.models.module import PVLLMModule
    from pvllm.models.tower_cache import TowerFeatures
    from pvllm.models.transform import ModelTransform
    from pvllm.prompt import build_prompt

    tmp = Path(tempfile.mkdtemp(prefix="bench-fcache-"))
    create = creator(args.model)
    bundle = build_pvllm(str(tmp / "model"), create=create, vision_encoder=dict(SPEC, trainable=False))
    model, proc = bundle.model, bundle.processor
    video = ROOT / "data" / "sample" / "videos" / "bikes_03.mp4"
    tower = TowerFeatures(model, proc, 8)
    build_cache(tmp / "cache", tower, [("bikes_03", str(video))], progress=False)
    cache = FeatureCache(tmp / "cache", tower.settings())
    history = ["OMG the taxi is SO GOOD 🔥", "best cyclist clip EVER"] * 3
    item = {"sample_id": "s", "prompt": build_prompt(history),
            "reply": "THIS CYCLIST THO 😍😍"}
    collate = PVLLMCollator(ModelTransform(proc))
    module = PVLLMModule(model, optim={})
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-9)

    def step(cached: bool) -> float:
        src = cache.get("bikes_03", video) if cached else {"frames": read_frames(video, 8)}
        batch = collate([dict(item, **src)])
        loss = module(batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    model.train()
    with torch.no_grad():
        a = module(collate([dict(item, frames=read_frames(video, 8))]))
        b = module(collate([dict(item, **cache.get("bikes_03", video))]))
    assert abs(float(a) - float(b)) <= 1e-6, (float(a), float(b))
    step(False), step(True)  # warm-up
    e, c = side_by_side(lambda: step(False), lambda: step(True), args.rounds)
    print(f"model={args.model} (MobileNetV2 128 px, 8 frames x 4 tokens), threads={args.threads}, "
          f"rounds={args.rounds}")
    print_ratio("encoder every step (s)", "cached features (s)", e, c, "encoder/cached")


if __name__ == "__main__":
    main()
