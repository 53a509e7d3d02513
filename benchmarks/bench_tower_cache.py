"""P12: a training step of a Video-LLaVA-architecture model with its frozen CLIP tower run every step vs replayed
from the feature cache (``pvllm.models.tower_cache``), side by side in one process, alternating rounds.

The model: ``VideoLlavaForConditionalGeneration`` with a CLIP ViT-B/32-shaped tower (224 px, patch 32, 12
layers, width 768; random weights) and the tiny random LLM. Both ways run the real loader
(``SampleDataset`` -> ``PVLLMCollator``) and the same step (forward + backward + AdamW) on the same samples.
"anchor" = frames from the frame cache (no decoding, so only the tower differs), processor, tower, LLM;
"ours" = the tower's recorded outputs from the feature cache (no video opened), processor on black frames of
the recorded shape, replayed tower, LLM. The per-sample losses are checked equal first.

    python benchmarks/bench_tower_cache.py [--samples 4] [--rounds 3] [--layers 12] [--width 768]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._common import side_by_side  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    from pvllm.data.collate import PVLLMCollator, SampleDataset
    from pvllm.data.dataset import load_pervidcom
    from pvllm.data.feature_cache import FeatureCache, build_cache
    from pvllm.data.frame_cache import FrameCache, FrameSource, Sampling
    from pvllm.data.histories import draw_training_samples
    from pvllm.models.builder import build_pvllm
    from pvllm.models.module import PVLLMModule
    from pvllm.models.tiny import make_tiny_video_llava
    from pvllm.models.tower_cache import TowerFeatures
    from pvllm.models.transform import ModelTransform

    ds = load_pervidcom(ROOT / "data/sample")
    samples, seen = [], set()
    for s in draw_training_samples(ds, "train", 0, 0, 5, 15):  # one sample per (small) video
        if s.video_id not in seen and s.video_id != "bunny_full":
            seen.add(s.video_id)
            samples.append(s)
    samples = samples[: a.samples]
    videos = [(s.video_id, str(ds.video_path(s.video_id))) for s in samples]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_tiny_video_llava(tmp / "model", image_size=224, patch_size=32, vision_hidden_size=a.width,
                              vision_layers=a.layers)
        bundle = build_pvllm(str(tmp / "model"))  # the tower frozen (conf/model: vision_encoder.trainable false)
        model, proc = bundle.model, bundle.processor
        FrameCache(tmp / "store", Sampling(8), create=True).build(videos, progress=False)
        tower = TowerFeatures(model, proc, 8)
        build_cache(tmp / "store", tower, videos, frame_cache=tmp / "store", progress=False)
        anchor = SampleDataset(ds, samples, 8, False, frames=FrameSource(Sampling(8), tmp / "store"))
        ours = SampleDataset(ds, samples, 8, False, feature_cache=FeatureCache(tmp / "store", tower.settings()))
        collate = PVLLMCollator(ModelTransform(proc))
        module = PVLLMModule(model, optim={})
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-9)
        n_tower = sum(p.numel() for p in model.model.video_tower.parameters())

        model.eval()
        with torch.no_grad():
            la = [float(module(collate([anchor[i]]))) for i in range(len(samples))]
            lo = [float(module(collate([ours[i]]))) for i in range(len(samples))]
        torch.testing.assert_close(torch.tensor(lo), torch.tensor(la), rtol=1e-5, atol=1e-5)
        model.train()

        def epoch(dset) -> None:
            for i in range(len(dset)):
                loss = module(collate([dset[i]]))
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

        epoch(anchor), epoch(ours)  # warm-up
        ta, to = side_by_side(lambda: epoch(anchor), lambda: epoch(ours), a.rounds)
    ta, to = ta / len(samples), to / len(samples)
    print(f"P12: Video-LLaVA architecture, CLIP tower {a.layers} layers x {a.width} (224 px, patch 32, "
          f"{n_tower / 1e6:.0f}M params, frozen) + tiny LLM; 8 frames; {len(samples)} training samples x "
          f"{a.rounds} alternating rounds; threads={a.threads}")
    print("| anchor: tower every step (s/step) | ours: feature cache (s/step) | ratio | same per-sample loss |")
    print("|---|---|---|---|")
    print(f"| {ta:.3f} | {to:.3f} | {ta / to:.1f}x | yes (max diff {max(abs(x - y) for x, y in zip(la, lo)):.1e}) |")
    print(f"goal >= 3x: {'met' if ta / to >= 3 else 'MISSED'}")


if __name__ == "__main__":
    main()
