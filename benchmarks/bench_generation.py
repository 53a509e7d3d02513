"""P2: generation with PV-LLM-small (Video-LLaVA classes around the real SmolLM2-135M-Instruct), greedy,
on N real samples of the bundled dataset (histories of varying length): the anchor way (batch 1, one
decode per sample) vs ours (samples grouped by video and decoded once, batches bucketed by prompt length
with ``--batch``), side by side in one process. Checks that both write identical texts.

    python benchmarks/bench_generation.py [--samples 64] [--batch 16] [--max-new-tokens 24] [--model tiny]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pvllm.data.dataset import load_pervidcom  # noqa: E402
from pvllm.data.histories import build_eval_histories  # noqa: E402
from pvllm.evaluation import generate_resumable  # noqa: E402
from pvllm.generators.video_llava import VideoLlavaGenerator  # noqa: E402
from pvllm.utils.jsonl import load_jsonl  # noqa: E402


def pvllm_small_dir() -> Path:
    from pvllm.models.builder import resolve_pretrained
    from pvllm.models.smollm2 import make_pvllm_small

    cache = Path.home() / ".cache" / "pvllm"
    return Path(resolve_pretrained(str(cache / "models" / "pvllm-small-v1"), make_pvllm_small))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument(
        "--model",
        default=None,
        help="a VideoLlava HF directory, or 'tiny' (the tiny random model); default: PV-LLM-small",
    )
    a = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    ds = load_pervidcom(ROOT / "data/sample")
    rows = [s.to_row() for s in build_eval_histories(ds, "train", k=5, seed=0, samples_per_user=10)]
    rows = rows[: a.samples]
    tmp_model = tempfile.TemporaryDirectory()
    if a.model == "tiny":
        from pvllm.models.tiny import make_tiny_video_llava

        model = str(Path(tmp_model.name) / "tiny-random-video-llava")
        make_tiny_video_llava(model, seed=0)
    else:
        model = a.model or str(pvllm_small_dir())
    kw = dict(greedy=True, sampling={"max_new_tokens": a.max_new_tokens})
    times, texts = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, gen_kw, run_kw in (
            ("anchor", dict(batch_size=1, frame_memo=0), dict(batch_size=1, by_video=False)),
            ("ours", dict(batch_size=a.batch), dict(batch_size=a.batch, window=4 * a.batch)),
        ):
            gen = VideoLlavaGenerator(model, **kw, **gen_kw)
            out = Path(tmp) / f"{name}.jsonl"
            t0 = time.perf_counter()
            generate_resumable(gen, rows, ds, out, progress=False, **run_kw)
            times[name] = time.perf_counter() - t0
            texts[name] = {r["sample_id"]: r["text"] for r in load_jsonl(out)}
            frames = gen.frames.summary()
            print(f"{name}: {times[name]:.1f} s, frames {frames}", flush=True)
            gen.close()
    same = texts["anchor"] == texts["ours"]
    n = len(rows)
    lens = sorted(len(r["history"]) and sum(len(h["text"]) for h in r["history"]) for r in rows)
    print(
        f"\nP2 generation, {Path(model).name}, greedy, max_new_tokens {a.max_new_tokens}, {n} samples on "
        f"{len({r['video_id'] for r in rows})} videos (history chars {lens[0]}..{lens[-1]})"
    )
    print("| way | time (s) | samples/s |")
    print("|---|---|---|")
    print(f"| anchor: batch 1, decode per sample | {times['anchor']:.1f} | {n / times['anchor']:.2f} |")
    print(f"| ours: by video, bucketed batch {a.batch} | {times['ours']:.1f} | {n / times['ours']:.2f} |")
    print(f"ratio: {times['anchor'] / times['ours']:.1f}x (goal >= 10x)")
    print(
        f"identical texts: {same} ({sum(v == texts['ours'].get(k) for k, v in texts['anchor'].items())}/{n})"
    )
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
