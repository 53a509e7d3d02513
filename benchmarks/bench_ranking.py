"""P9: ranking N candidates by likelihood: one full sequence per candidate (the anchor way: prompt, video
tokens and reply, ``--score-batch`` sequences per forward pass) vs ours (the prompt and its video once
per sample, the candidates packed after it: pvllm.generators.likelihood.score_prompt_replies; until issue 23
the cache was repeated per right-padded candidate), side by side in one process on the same candidates file.
Checks that both give the same scores first.

    python benchmarks/bench_ranking.py [--model small|tiny] [--samples 6] [--candidates 20] [--threads 2]

``small``: PV-LLM-small as `make demo` builds it (SmolLM2-135M + the real MobileNetV2; needs the prepared
SmolLM2, see pvllm.models.smollm2); ``tiny``: a tiny random LLM + the real MobileNetV2 (benchmarks/_common.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._common import KINDS, creator, print_ratio, side_by_side  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=KINDS, default="small")
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--score-batch", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from pvllm.data.dataset import load_pervidcom
    from pvllm.data.histories import build_eval_histories
    from pvllm.evaluation import to_request
    from pvllm.generators.likelihood import mean_reply_logprobs
    from pvllm.generators.video_llava import PVLLMGenerator
    from pvllm.metrics.ranking import build_candidates
    from pvllm.models.families import reply_token_ids

    tmp = Path(tempfile.mkdtemp(prefix="bench-ranking-"))
    creator(args.model)(tmp / "model")
    gen = PVLLMGenerator(pretrained=str(tmp / "model"), greedy=True)
    ds = load_pervidcom(ROOT / "data" / "sample")
    rows = [s.to_row() for s in build_eval_histories(ds, "val", k=5, seed=0, samples_per_user=3)][: args.samples]
    reqs = [to_request(r, ds) for r in rows]
    cands = [[c["text"] for c in row["candidates"]] for row in build_candidates(rows, ds, args.candidates, 0)]
    pad = gen.processor.tokenizer.pad_token_id

    def anchor() -> list[list[float]]:  # one full sequence per candidate, as before this change
        out = []
        for req, cs in zip(reqs, cands):
            enc = gen._encode([req.prompt], [gen._frames(req)])
            prompt, pix = enc["input_ids"][0].tolist(), enc["pixel_values_videos"]
            replies = [reply_token_ids(gen.processor, req.prompt, c, None) for c in cs]
            scores: list[float] = []
            for i in range(0, len(replies), args.score_batch):
                part = replies[i: i + args.score_batch]
                scores += mean_reply_logprobs(gen.model, [prompt] * len(part), part, pad,
                                              extra={"pixel_values_videos": pix.expand(len(part), *pix.shape[1:])})
            out.append(scores)
        return out

    def ours() -> list[list[float]]:
        return gen.score_candidates(reqs, cands)

    a, b = anchor(), ours()
    worst = max(abs(x - y) for sa, sb in zip(a, b) for x, y in zip(sa, sb))
    assert worst <= 1e-4, f"scores differ by {worst}"
    ta, tb = side_by_side(anchor, ours, args.rounds)
    print(f"model={args.model}, {len(reqs)} samples x {args.candidates} candidates, score batch "
          f"{args.score_batch}, threads={args.threads}, rounds={args.rounds}; max |score diff| {worst:.1e}")
    print_ratio("full sequences (s)", "prompt once (s)", ta, tb)


if __name__ == "__main__":
    main()
