"""P10: training tokens/s, packed (``data.packing=true``: samples back to back up to a token budget, no
padding) vs padded batches of 8 (the anchor: the datamodule's batches, right-padded to the longest), side by
side in one process on the same samples. Checks first that every sample's loss is the same both ways.

    python benchmarks/bench_packing.py --data danmaku|sample [--model tiny|small] [--samples 64] [--batch 8]
        [--pack-tokens 1024] [--rounds 2] [--threads 2]

``danmaku``: the real danmaku comments of ../shared/data/comments, built as scripts/real_danmaku_text.py
builds them (import + build into a temporary directory), trained text-only (video.mode=none) as
experiment=real_danmaku_text does; ``sample``: the bundled data/sample with its videos. ``tiny``: the tiny
random Video-LLaVA of conf/model/tiny.yaml; ``small``: PV-LLM-small (SmolLM2-135M + the real MobileNetV2;
needs the prepared SmolLM2, see pvllm.models.smollm2).

Timed: forward, backward and an AdamW step per batch over all the samples (collation done before, the same
items both ways). The ceiling of packing is 1 / (1 - padding fraction) of the padded batches; the goal is
>= 80% of it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._common import KINDS, creator, side_by_side  # noqa: E402

DANMAKU = ROOT.parent / "shared" / "data" / "comments"


def build_danmaku(out: Path) -> Path:
    """The danmaku dataset directory, as scripts/real_danmaku_text.py builds it (import, then build)."""
    env = dict(os.environ, PVLLM_PSEUDONYM_KEY=os.environ.get("PVLLM_PSEUDONYM_KEY", "bench-packing-key"))
    steps = [["-m", "pvllm.data.collect", "import", "--comments", str(DANMAKU / "danmaku_sample.jsonl"),
              "--videos", str(DANMAKU / "danmaku_sample_videos.jsonl"), "--exclude", "fork=easy",
              "--out", str(out / "raw")],
             ["-m", "pvllm.data.build", "--raw", str(out / "raw"), "--out", str(out / "dataset"),
              "--unknown-likes", "keep", "--psi-threshold", "-1", "--undefined-psi", "keep", "--skip-psi",
              "--name", "danmaku (bench_packing)", "--source", "../shared/data/comments/danmaku_sample.jsonl"]]
    for args in steps:
        subprocess.run([sys.executable, *args], cwd=ROOT, env=env, check=True, capture_output=True)
    return out / "dataset"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=("danmaku", "sample"), default="danmaku")
    ap.add_argument("--model", choices=KINDS, default="tiny")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--pack-tokens", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from pvllm.data.collate import PVLLMCollator, SampleDataset
    from pvllm.data.dataset import load_pervidcom
    from pvllm.data.histories import draw_training_samples
    from pvllm.data.packing import plan_packs, sample_lengths
    from pvllm.models.builder import build_pvllm
    from pvllm.models.module import PVLLMModule
    from pvllm.models.packing import TextTokens
    from pvllm.models.transform import ModelTransform

    tmp = Path(tempfile.mkdtemp(prefix="bench-packing-"))
    if args.data == "danmaku":
        if not (DANMAKU / "danmaku_sample.jsonl").is_file():
            sys.exit(f"{DANMAKU}/danmaku_sample.jsonl is absent: the danmaku comments live in ../shared/data")
        root, video, title, max_reply = build_danmaku(tmp), False, True, 48  # experiment=real_danmaku_text
    else:
        root, video, title, max_reply = ROOT / "data" / "sample", True, False, 64
    creator(args.model)(tmp / "model") if args.model == "small" else _tiny(tmp / "model")
    bundle = build_pvllm(str(tmp / "model"))
    model, proc = bundle.model, bundle.processor
    ds = load_pervidcom(root, check_files=video)
    samples, epoch = [], 0
    while len(samples) < args.samples:  # the training draws of epochs 0, 1, ... (the sample has 14 per epoch)
        samples += draw_training_samples(ds, "train", epoch, 0, 5, 15)[: args.samples - len(samples)]
        epoch += 1
    sds = SampleDataset(ds, samples, 8, include_title=title, video=video)
    items = [sds[i] for i in range(len(sds))]  # frames decoded once, outside the timing

    padded_c = PVLLMCollator(ModelTransform(proc), max_reply)
    packed_c = PVLLMCollator(ModelTransform(proc), max_reply, packing=True, pack_tokens=args.pack_tokens)
    lengths = sample_lengths(sds, padded_c.encode, TextTokens(proc, max_reply))
    padded = [padded_c(items[i: i + args.batch]) for i in range(0, len(items), args.batch)]
    packs = plan_packs(lengths, args.pack_tokens, [s.sample_id for s in samples])
    packed = [packed_c([items[j] for j in p]) for p in packs]
    real = sum(lengths)
    assert real == sum(int(b["attention_mask"].sum()) for b in padded) == sum(b["input_ids"].shape[1] for b in packed)
    padded_slots = sum(b["input_ids"].numel() for b in padded)
    pad_fraction = 1 - real / padded_slots
    ceiling = 1 / (1 - pad_fraction)

    module = PVLLMModule(model, optim={"lr": 1e-5})
    model.eval()  # same losses first (no dropout), then time training
    with torch.no_grad():
        a = torch.cat([module.sample_losses(b) for b in padded])
        b = torch.cat([module.sample_losses(p) for p in packed])
    order = [j for p in packs for j in p]
    b = b[torch.argsort(torch.tensor(order))]
    worst = float((a - b).abs().max())
    assert worst <= 1e-4, f"per-sample losses differ by {worst}"
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)

    def train(batches):
        def run():
            for batch in batches:
                module(batch).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
        return run

    train(padded[:1])(), train(packed[:1])()  # warm-up (optimizer state, first-call costs)
    ta, tb = side_by_side(train(padded), train(packed), args.rounds)
    speedup = ta / tb
    print(f"data={args.data} model={args.model}: {len(items)} samples, {real} tokens; padded: {len(padded)} "
          f"batches of {args.batch} ({padded_slots} slots, padding {100 * pad_fraction:.1f}%); packed: "
          f"{len(packed)} packs of <= {args.pack_tokens} tokens ({100 * real / (len(packed) * args.pack_tokens):.1f}%"
          f" full); threads={args.threads}, rounds={args.rounds}; max |per-sample loss diff| {worst:.1e}")
    if video:  # the same samples with Video-LLaVA-7B's video tokens in place of this model's
        from pvllm.models.families import visual_token_count

        visual = [visual_token_count(proc, padded_c.encode(it)["input_ids"]) for it in items]
        p6_arithmetic([n - v + 8 * 257 for n, v in zip(lengths, visual)], args.batch)
    print(f"{'padded (tok/s)':>16}{'packed (tok/s)':>16}{'speedup':>9}{'ceiling':>9}{'of ceiling':>12}")
    print(f"{real / ta:>16.0f}{real / tb:>16.0f}{speedup:>9.2f}{ceiling:>9.2f}{100 * speedup / ceiling:>11.0f}%")


def p6_arithmetic(lengths_7b: list[int], batch: int) -> None:
    """P6 without a GPU: the step-time ratio and useful MFU that packing should give Video-LLaVA-7B (32 layers,
    width 4096, 6.7e9 parameters), from these samples' lengths with its 2056 video tokens (8 x 257) each.
    FLOPs of a training step: 6 N per token + attention 12 L^2 d per layer (forward + backward); padded
    batches compute B x max length, packed rows (FlashAttention varlen) the real tokens only."""
    n_params, layers, width = 6.7e9, 32, 4096

    def flops(lengths: list[int]) -> float:
        return sum(6 * n_params * n + 12 * layers * width * n * n for n in lengths)

    padded = sum(flops([max(lengths_7b[i: i + batch])] * len(lengths_7b[i: i + batch]))
                 for i in range(0, len(lengths_7b), batch))
    useful = flops(lengths_7b)
    slots = sum(max(lengths_7b[i: i + batch]) * len(lengths_7b[i: i + batch]) for i in range(0, len(lengths_7b), batch))
    pad = 1 - sum(lengths_7b) / slots
    print(f"P6 (arithmetic, not measured; no GPU): Video-LLaVA-7B, these {len(lengths_7b)} samples with 2056 video "
          f"tokens each ({min(lengths_7b)}-{max(lengths_7b)} tokens): padding {100 * pad:.1f}% at batch {batch}; "
          f"step FLOPs padded/packed = {padded / useful:.3f} (the expected step-time ratio at equal hardware "
          f"efficiency); a padded run at MFU m does useful work at {useful / padded:.3f} m, a packed one at ~m")


def _tiny(out: Path) -> Path:
    from pvllm.models.tiny import make_tiny_video_llava

    return make_tiny_video_llava(out, seed=0)


if __name__ == "__main__":
    main()
