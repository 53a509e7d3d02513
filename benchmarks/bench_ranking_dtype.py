"""P12: ranking in bfloat16 vs float32 on the CPU (``generator.dtype``): samples/s side by side in one
process on the same real danmaku targets, and what the ranks lose (same truth rank, MRR of each).

    python benchmarks/bench_ranking_dtype.py [--samples 120] [--mode k] [--block 8]

Data as P11 (benchmarks/bench_ranking_scale.py): the danmaku comments imported and built as
scripts/real_danmaku_text.py does, test users, history k=5, 3 targets per user, N=20 candidates (other users'
comments on the same episode). Model: PV-LLM-small text-only (SmolLM2-135M inside, as the trained model ranks;
the weights do not change the cost), loaded twice through the same ``HFVideoGenerator``: ``dtype=float32``
(the anchor, the default) and ``dtype=bfloat16``. Both score with ``score_candidates`` (the packed scorer);
the two alternate on blocks of --block samples, so a change in the machine's load hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def mrr(scores: list[list[float]], truth: list[int]) -> tuple[float, list[float]]:
    """MRR x100 and each target's rank, ties in expectation: pvllm.metrics.ranking's own counting."""
    from pvllm.metrics.ranking import expected_metrics, truth_rank_stats

    per = [expected_metrics(*truth_rank_stats(s, t)) for s, t in zip(scores, truth)]
    return 100 * sum(m["MRR"] for m in per) / len(per), [m["rank"] for m in per]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=120)
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--mode", default="k", choices=("k", "none", "others"), help="history mode")
    ap.add_argument("--block", type=int, default=8, help="samples per alternation of the two ways")
    ap.add_argument("--per-call", type=int, default=8, help="samples per score_candidates call")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("PVLLM_OUTPUTS", ROOT / "outputs"))
                    / "bench_p11")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from bench_ranking_scale import danmaku_dataset

    from pvllm.data.dataset import load_pervidcom
    from pvllm.data.histories import build_eval_histories
    from pvllm.evaluation import to_request
    from pvllm.generators.hf_video import HFVideoGenerator
    from pvllm.metrics.ranking import build_candidates
    from pvllm.models.smollm2 import make_pvllm_small

    ds = load_pervidcom(danmaku_dataset(args.work), check_files=False)
    rows = [s.to_row() for s in build_eval_histories(ds, "test", k=5, mode=args.mode, seed=0,
                                                      samples_per_user=3)][: args.samples]
    built = build_candidates(rows, ds, args.candidates, 0)
    cands = [[c["text"] for c in row["candidates"]] for row in built]
    truth = [row["truth_index"] for row in built]
    reqs = [to_request(r, ds, include_title=True) for r in rows]
    model_dir = args.work / "small"
    if not (model_dir / "config.json").is_file():
        make_pvllm_small(model_dir)
    gens = {dt: HFVideoGenerator(str(model_dir), video=False, dtype=dt) for dt in ("float32", "bfloat16")}
    print(f"{len(reqs)} test targets x {len(cands[0])} candidates, history {args.mode}, PV-LLM-small text-only",
          flush=True)

    times = {dt: 0.0 for dt in gens}
    scores: dict[str, list] = {dt: [] for dt in gens}
    for lo in range(0, len(reqs), args.block):
        hi = min(len(reqs), lo + args.block)
        for dt, gen in gens.items():
            t = time.perf_counter()
            for i in range(lo, hi, args.per_call):
                j = min(hi, i + args.per_call)
                scores[dt] += gen.score_candidates(reqs[i:j], cands[i:j])
            times[dt] += time.perf_counter() - t
        print(f"{hi}/{len(reqs)}: float32 {times['float32']:.1f} s, bfloat16 {times['bfloat16']:.1f} s "
              f"(ratio {times['float32'] / times['bfloat16']:.2f})", flush=True)
    m32, r32 = mrr(scores["float32"], truth)
    m16, r16 = mrr(scores["bfloat16"], truth)
    same = sum(a == b for a, b in zip(r32, r16)) / len(r32)
    diff = float((torch.tensor(scores["float32"]) - torch.tensor(scores["bfloat16"])).abs().max())
    load = os.getloadavg()
    print(f"\n{len(reqs)} samples x {len(cands[0])} candidates, history {args.mode}, threads {args.threads}, "
          f"load avg {load[0]:.1f}")
    print("| dtype | time (s) | samples/s | MRR x100 |")
    print("|---|---|---|---|")
    for dt, m in (("float32", m32), ("bfloat16", m16)):
        print(f"| {dt} | {times[dt]:.1f} | {len(reqs) / times[dt]:.3f} | {m:.2f} |")
    print(f"ratio (float32 time / bfloat16): {times['float32'] / times['bfloat16']:.2f}; same truth rank on "
          f"{100 * same:.1f}% of targets; max |score diff| {diff:.3f} (mean log-prob per token)")
    print(json.dumps({"samples": len(reqs), "mode": args.mode, "times": times, "mrr": {"float32": m32,
                      "bfloat16": m16}, "same_rank": same, "max_diff": diff, "load": load[0]}))


if __name__ == "__main__":
    main()
