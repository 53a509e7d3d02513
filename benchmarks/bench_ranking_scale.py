"""P11: ranking at scale on real danmaku targets: samples/s with N candidates, today's path (the anchor) vs
the packed scorer (ours), side by side in one process on the same candidates (alternating on blocks of
--block samples); checks the scores are equal, then predicts the hours for the 8,899 danmaku test targets.

    python benchmarks/bench_ranking_scale.py [--model small|tiny_qwen2_5_vl|...] [--samples 200]

Data: the real danmaku comments (../shared/data/comments/danmaku_sample.jsonl) imported and built as
scripts/real_danmaku_text.py does (one-tap preset comments dropped, ψ skipped; cached in --work), test users,
history k=5, 3 targets per user, the first --samples; N=20 candidates (other users' comments on the same
episode, pvllm.metrics.ranking.build_candidates).
- ``small``: PV-LLM-small text-only (SmolLM2-135M inside, untrained: the ranking cost does not depend on
  the weights), as the real-danmaku evaluation runs it. Anchor: the prompt once per sample, its key/value
  cache repeated for ``--score-batch`` right-padded candidates, logits of every fed position (the path of
  Video-LLaVA-format models before this change, copied below).
- ``tiny_<family>``: the tiny random model of another family (pvllm.models.tiny); the danmaku
  have no video files, so each target is shown one of the bundled sample clips in turn. Anchor: one full
  forward per candidate, video included (``families.reply_logprob``: that family's path before this change).
Ours: ``score_candidates`` on --per-call samples at a time (evaluate.py's ranking.batch_size), candidates
packed into passes of ``generator.score_tokens``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
COMMENTS = ROOT.parent / "shared" / "data" / "comments"
TEST_TARGETS = 8899  # danmaku test targets (every comment of the 69 test users; issue 22)


@torch.inference_mode()
def anchor_shared_prompt(model, prompt, replies, pad_id, batch_size=20):
    """The Video-LLaVA-format ranking path before issue 23 (pvllm/generators/likelihood.py at 082df43):
    prompt once, cache repeated per batch of right-padded replies, logits of every fed position."""
    ids = torch.tensor([list(prompt)], dtype=torch.long)
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, logits_to_keep=1)
    first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
    prefix, n = out.cache, ids.shape[1]
    res = []
    for i in range(0, len(replies), batch_size):
        part = replies[i : i + batch_size]
        m = max(len(r) for r in part) - 1
        total = [float(first[r[0]]) for r in part]
        if m > 0:
            feed = torch.full((len(part), m), pad_id, dtype=torch.long)
            mask = torch.zeros((len(part), n + m), dtype=torch.long)
            mask[:, :n] = 1
            for j, r in enumerate(part):
                feed[j, : len(r) - 1] = torch.tensor(r[:-1], dtype=torch.long)
                mask[j, n : n + len(r) - 1] = 1
            cache = copy.deepcopy(prefix)
            cache.batch_repeat_interleave(len(part))
            logp = torch.log_softmax(model(input_ids=feed, attention_mask=mask,
                                           position_ids=(n + torch.arange(m)).expand(len(part), m),
                                           cache=cache, use_cache=True).logits.float(), dim=-1)
            for j, r in enumerate(part):
                t = torch.tensor(r[1:], dtype=torch.long)
                total[j] += float(logp[j, torch.arange(len(t)), t].sum())
        res += [s / len(r) for s, r in zip(total, part)]
    return res


def danmaku_dataset(work: Path) -> Path:
    """The danmaku comments imported and built as scripts/real_danmaku_text.py does (once, cached)."""
    dataset = work / "dataset"
    if (dataset / "build_summary.json").is_file():
        return dataset
    env = dict(os.environ, PVLLM_PSEUDONYM_KEY=os.environ.get("PVLLM_PSEUDONYM_KEY", "bench-p11"))
    for args in (["-m", "pvllm.data.collect", "import", "--comments", str(COMMENTS / "danmaku_sample.jsonl"),
                  "--videos", str(COMMENTS / "danmaku_sample_videos.jsonl"), "--exclude", "fork=easy",
                  "--out", str(work / "raw")],
                 ["-m", "pvllm.data.build", "--raw", str(work / "raw"), "--out", str(dataset),
                  "--unknown-likes", "keep", "--psi-threshold", "-1", "--undefined-psi", "keep", "--skip-psi",
                  "--name", "danmaku comments (P11)", "--source", "../shared/data/comments/danmaku_sample.jsonl"]):
        subprocess.run([sys.executable, *args], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    return dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="small", help="small | tiny_<family> (e.g. tiny_qwen2_5_vl)")
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--score-batch", type=int, default=20, help="anchor (small): candidates per forward pass")
    ap.add_argument("--per-call", type=int, default=8, help="ours: samples per score_candidates call")
    ap.add_argument("--score-tokens", type=int, default=2048, help="ours: generator.score_tokens")
    ap.add_argument("--mode", default="k", choices=("k", "none", "others"), help="history mode")
    ap.add_argument("--block", type=int, default=24, help="samples per alternation of the two ways")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("PVLLM_OUTPUTS", ROOT / "outputs"))
                    / "bench_p11")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from pvllm.data.dataset import load_pervidcom
    from pvllm.data.histories import build_eval_histories
    from pvllm.evaluation import to_request
    from pvllm.generators.hf_video import HFVideoGenerator
    from pvllm.metrics.ranking import build_candidates
    from pvllm.models.families import reply_logprob, reply_token_ids

    t0 = time.perf_counter()
    ds = load_pervidcom(danmaku_dataset(args.work), check_files=False)
    rows = [s.to_row() for s in build_eval_histories(ds, "test", k=5, mode=args.mode, seed=0,
                                                      samples_per_user=3)][: args.samples]
    cands = [[c["text"] for c in row["candidates"]] for row in build_candidates(rows, ds, args.candidates, 0)]
    reqs = [to_request(r, ds, include_title=True) for r in rows]
    model_dir = args.work / args.model
    if not (model_dir / "config.json").is_file():
        if args.model == "small":
            from pvllm.models.smollm2 import make_pvllm_small

            make_pvllm_small(model_dir)
        else:
            from hydra.utils import get_method

            from pvllm.models.families import FAMILIES

            get_method(FAMILIES.get(args.model.removeprefix("tiny_")).tiny)(model_dir, seed=0)
    text_only = args.model == "small"
    gen = HFVideoGenerator(str(model_dir), video=not text_only, score_tokens=args.score_tokens)
    if not text_only:  # no danmaku videos: each target is shown a bundled clip
        clips = sorted((ROOT / "data" / "sample" / "videos").glob("*.mp4"))
        for i, r in enumerate(reqs):
            r.video_path, r.extra["shown_video_id"] = str(clips[i % len(clips)]), clips[i % len(clips)].stem
    print(f"setup {time.perf_counter() - t0:.0f} s: {len(reqs)} test targets x {len(cands[0])} candidates, "
          f"history {args.mode}, model {args.model} ({gen.family.name}"
          f"{', text-only' if text_only else ', a bundled clip per target'})", flush=True)
    pad = gen.processor.tokenizer.pad_token_id

    def anchor(lo: int, hi: int) -> list[list[float]]:
        out = []
        for req, cs in zip(reqs[lo:hi], cands[lo:hi]):
            if text_only:
                prompt = gen._encode([req.prompt], [None])["input_ids"][0].tolist()
                replies = [reply_token_ids(gen.processor, req.prompt, c, None) for c in cs]
                out.append(anchor_shared_prompt(gen.model, prompt, replies, pad, args.score_batch))
            else:
                clip = gen._frames(req)
                out.append([reply_logprob(gen.model, gen.processor, req.prompt, clip, c, None)
                            / len(reply_token_ids(gen.processor, req.prompt, c, None)) for c in cs])
        return out

    def ours(lo: int, hi: int) -> list[list[float]]:
        out = []
        for i in range(lo, hi, args.per_call):
            out += gen.score_candidates(reqs[i : min(hi, i + args.per_call)], cands[i : min(hi, i + args.per_call)])
        return out

    # the two ways alternate on blocks of --block samples, so a change in the machine's load hits both alike
    times = {"anchor": 0.0, "ours": 0.0}
    results: dict[str, list] = {"anchor": [], "ours": []}
    for lo in range(0, len(reqs), args.block):
        hi = min(len(reqs), lo + args.block)
        for name, fn in (("anchor", anchor), ("ours", ours)):
            t = time.perf_counter()
            results[name] += fn(lo, hi)
            times[name] += time.perf_counter() - t
        diff = float((torch.tensor(results["anchor"]) - torch.tensor(results["ours"])).abs().max())
        print(f"{hi}/{len(reqs)} samples: anchor {times['anchor']:.1f} s, ours {times['ours']:.1f} s "
              f"(ratio {times['anchor'] / times['ours']:.2f}; max |score diff| so far {diff:.1e})", flush=True)
    a = torch.tensor(results["anchor"], dtype=torch.float32)
    b = torch.tensor(results["ours"], dtype=torch.float32)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-4)  # means per token, as ranking reads them
    worst = float((a - b).abs().max())
    same_ranks = bool((a.argsort(1, descending=True) == b.argsort(1, descending=True)).all())
    sps = {k: len(reqs) / v for k, v in times.items()}
    hours = {k: TEST_TARGETS / v / 3600 for k, v in sps.items()}
    load = os.getloadavg()
    print(f"\nmodel={args.model}, {len(reqs)} samples x {len(cands[0])} candidates, history {args.mode}, "
          f"threads={args.threads}, per call {args.per_call}, score_tokens {args.score_tokens}; "
          f"max |score diff| {worst:.1e}; same order of candidates {same_ranks}; load avg {load[0]:.1f}")
    print("| way | time (s) | samples/s | hours for 8,899 targets |")
    print("|---|---|---|---|")
    for k in ("anchor", "ours"):
        print(f"| {k} | {times[k]:.1f} | {sps[k]:.3f} | {hours[k]:.2f} |")
    print(f"ratio (anchor time / ours): {times['anchor'] / times['ours']:.2f}")
    print(json.dumps({"model": args.model, "mode": args.mode, "samples": len(reqs), "times": times,
                      "samples_per_s": sps, "hours_8899": hours, "max_diff": worst, "load": load[0]}))


if __name__ == "__main__":
    main()
