"""P8: end-to-end ``python evaluate.py`` wall time on a set with several comments per video (the train
split of the bundled dataset, 10 targets per user: 140 samples on 18 videos), same model (the tiny random
Video-LLaVA, greedy), FICL through an OpenAI-compatible judge (a local fake server in another process,
``--latency`` per request). The anchor way: per-sample decode, batch 1, one rating request at a time;
ours: the frame cache (built once beforehand, its time printed apart), samples grouped by video, batches
bucketed by prompt length, 32 rating requests in flight. FICL with K=0 (the bundled few-shot pool comes
from the train split and would exclude every sample). Checks that both write the same predictions
and the same scores.

    python benchmarks/bench_evaluate.py [--latency 0.2] [--samples-per-user 10] [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--samples-per-user", type=int, default=10)
    ap.add_argument(
        "--model", default=None, help="a VideoLlava HF directory (default: the tiny random model)"
    )
    ap.add_argument("--max-new-tokens", type=int, default=16)
    a = ap.parse_args()
    env = dict(
        os.environ, OPENAI_API_KEY="sk-bench", PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", WANDB_MODE="offline"
    )
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks/bench_rating.py"), "--serve", "--latency", str(a.latency)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    url = server.stdout.readline().strip()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            model = a.model
            if model is None:
                from pvllm.models.tiny import make_tiny_video_llava

                model = str(tmp / "tiny")
                make_tiny_video_llava(model, seed=0)
            t0 = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pvllm.data.frame_cache",
                    "build",
                    "--root",
                    str(ROOT / "data/sample"),
                    "--cache",
                    str(tmp / "frames"),
                ],
                check=True,
                env=env,
                capture_output=True,
            )
            t_build = time.perf_counter() - t0
            common = [
                "generator=pvllm",
                f"generator.pretrained={model}",
                "generator.greedy=true",
                f"generator.sampling.max_new_tokens={a.max_new_tokens}",
                "split=train",
                f"samples_per_user={a.samples_per_user}",
                "rater=openai_compatible",
                "rater.model=judge",
                f"rater.base_url={url}/v1",
                "~logger",
                f"histories_file={tmp / 'histories.jsonl'}",
                # the bundled few-shot pool is drawn from the train split: K=0 rates every sample
                "ficl.k_shots=0",
                "ficl.fewshot_dir=null",
            ]
            ways = {
                "anchor": [
                    "generator.batch_size=1",
                    "generator.frame_memo=0",
                    "generation.group_by_video=false",
                    "generation.window=1",
                    "rater.max_concurrency=1",
                ],
                "ours": [
                    f"data.frame_cache={tmp / 'frames'}",
                    "generator.batch_size=8",
                    "rater.max_concurrency=32",
                ],
            }
            times, preds, scores = {}, {}, {}
            for name, extra in ways.items():
                run = tmp / name
                t0 = time.perf_counter()
                proc = subprocess.run(
                    [
                        sys.executable,
                        str(ROOT / "evaluate.py"),
                        *common,
                        *extra,
                        f"paths.cache_dir={tmp / ('cache-' + name)}",
                        f"hydra.run.dir={run}",
                    ],
                    env=env,
                    capture_output=True,
                    text=True,
                )
                times[name] = time.perf_counter() - t0
                if proc.returncode:
                    sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
                preds[name] = {
                    r["sample_id"]: r["text"] for r in map(json.loads, (run / "predictions.jsonl").open())
                }
                scores[name] = sorted(
                    (s["sample_id"], s["metric"], s["value"])
                    for s in map(json.loads, (run / "scores.jsonl").open())
                )
                summary = json.loads((run / "summary.json").read_text())
                print(
                    f"{name}: {times[name]:.1f} s, n={summary['n']}, FICL ok {summary.get('ficl_n_ok')}",
                    flush=True,
                )
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    n = len(preds["anchor"])
    same = preds["anchor"] == preds["ours"] and scores["anchor"] == scores["ours"]
    print(
        f"\nP8 evaluate.py end to end, {n} samples, {Path(model).name if a.model else 'tiny random model'}, "
        f"judge latency {a.latency * 1000:.0f} ms"
    )
    print("| way | wall (s) |")
    print("|---|---|")
    print(f"| anchor: per-sample decode, batch 1, sequential rating | {times['anchor']:.1f} |")
    print(f"| ours: frame cache, by video, bucketed batch 8, 32 ratings in flight | {times['ours']:.1f} |")
    print(
        f"| (frame cache build, once for all models) | {t_build:.1f} |"
    )
    print(
        f"ratio: {times['anchor'] / times['ours']:.1f}x (goal >= 5x); "
        f"with the build counted: {times['anchor'] / (times['ours'] + t_build):.1f}x"
    )
    print(f"identical predictions and scores: {same}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
