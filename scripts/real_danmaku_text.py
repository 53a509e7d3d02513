"""pvllm on real people: the danmaku comments of ../shared/data (comments only), text-only PV-LLM-small.

    python scripts/real_danmaku_text.py [--max-steps 150] [--out outputs/real_danmaku_text]
        [--doc docs/real_danmaku_text.md]

1. import the 300 pseudonymized users' comments (one-tap preset "easy" comments dropped) and build a
   dataset directory (the paper's >= 11 videos per user; no likes, and ψ skipped: danmaku score ψ
   0.05-0.31, see docs/pervidcom_danmaku/README.md), user split 60/15/25;
2. `python train.py experiment=real_danmaku_text` (text-only: no frames, no video token);
3. `python evaluate.py experiment=real_danmaku_text_eval history.mode=k|none|others` on the validation
   users: caption metrics, copy rate, and ranking among N candidates (chance beside it);
4. writes the result table with the date and the time of each stage to ``--doc``.
Every stage is the real entry point run as a subprocess. A shrunk run (``--users 12 --model tiny
--max-steps 2``) is tests/test_real_danmaku.py.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "comments"
MODES = (("k", "history k=5"), ("none", "no history"), ("others", "others' history (k=5)"))


def run(args: list[str], env: dict, times: dict, stage: str) -> None:
    print(f"\n=== {stage}: {' '.join(args)}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env)
    times[stage] = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"stage {stage!r} failed (exit {proc.returncode})")


def subset(src: Path, dst: Path, users: int) -> Path:
    """The comments of the first ``users`` authors (sorted pseudonyms): the shrunk test run."""
    rows = [json.loads(x) for x in src.open(encoding="utf-8")]
    keep = set(sorted({r["author"] for r in rows})[:users])
    dst.parent.mkdir(parents=True, exist_ok=True)
    with dst.open("w", encoding="utf-8") as f:
        for r in rows:
            if r["author"] in keep:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return dst


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--out", type=Path, default=None, help="default: $PVLLM_OUTPUTS or outputs/, /real_danmaku_text"
    )
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "real_danmaku_text.md")
    p.add_argument("--max-steps", type=int, default=150)
    p.add_argument("--model", default="pvllm_small", help="conf/model/ option (tiny for the shrunk test)")
    p.add_argument("--users", type=int, default=None, help="only the first N users (shrunk test run)")
    p.add_argument("--n-candidates", type=int, default=20)
    p.add_argument(
        "--rater", default="embedding", help="FICL rater (conf/rater/); none = caption metrics only"
    )
    args = p.parse_args(argv)
    out_root = Path(os.environ.get("PVLLM_OUTPUTS", ROOT / "outputs"))
    out = (args.out or out_root / "real_danmaku_text").resolve()
    env = dict(os.environ, WANDB_MODE=os.environ.get("WANDB_MODE", "offline"), PYTHONWARNINGS="ignore")
    # pseudonyms are re-keyed at import; a fresh random key when none is set (never written anywhere)
    env.setdefault("PVLLM_PSEUDONYM_KEY", secrets.token_hex(16))
    times: dict[str, float] = {}
    t_start = time.perf_counter()
    comments = SHARED / "danmaku_sample.jsonl"
    if not comments.is_file():
        sys.exit(f"{comments} is absent: the danmaku comments live in ../shared/data beside the repo")
    if args.users:
        comments = subset(comments, out / "subset" / "danmaku_sample.jsonl", args.users)
    raw, dataset = out / "raw", out / "dataset"
    run(
        [
            "-m",
            "pvllm.data.collect",
            "import",
            "--comments",
            str(comments),
            "--videos",
            str(SHARED / "danmaku_sample_videos.jsonl"),
            "--exclude",
            "fork=easy",
            "--out",
            str(raw),
        ],
        env,
        times,
        "import",
    )
    run(
        [
            "-m",
            "pvllm.data.build",
            "--raw",
            str(raw),
            "--out",
            str(dataset),
            "--unknown-likes",
            "keep",
            "--psi-threshold",
            "-1",
            "--undefined-psi",
            "keep",
            "--skip-psi",
            "--name",
            "danmaku comments (text-only run)",
            "--source",
            "../shared/data/comments/danmaku_sample.jsonl",
        ],
        env,
        times,
        "build",
    )
    common = [f"data.root={dataset}", f"paths.output_root={out.parent}"]
    train_dir = out / "train"
    run(
        [
            "train.py",
            "experiment=real_danmaku_text",
            f"model={args.model}",
            f"trainer.max_steps={args.max_steps}",
            f"hydra.run.dir={train_dir}",
            *common,
        ],
        env,
        times,
        "train",
    )
    summaries = {}
    for mode, _ in MODES:
        d = out / f"eval_{mode}"
        run(
            [
                "evaluate.py",
                "experiment=real_danmaku_text_eval",
                f"history.mode={mode}",
                f"generator.pretrained={train_dir / 'hf_model'}",
                f"ranking.n_candidates={args.n_candidates}",
                "~rater" if args.rater == "none" else f"rater={args.rater}",
                f"hydra.run.dir={d}",
                f"histories_file={out / 'histories' / f'val_{mode}.jsonl'}",
                f"ranking.candidates_file={out / 'candidates_val.jsonl'}",
                *common,
            ],
            env,
            times,
            f"evaluate ({mode})",
        )
        summaries[mode] = json.loads((d / "summary.json").read_text())
    times["total"] = time.perf_counter() - t_start
    text = render(summaries, times, args, dataset)
    print("\n" + text)
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text(text)
    print(f"\nwritten: {args.doc}")
    return 0


def _f(v, d: int = 1) -> str:
    return f"{v:.{d}f}" if isinstance(v, (int, float)) else "-"


def render(summaries: dict, times: dict, args: argparse.Namespace, dataset: Path) -> str:
    build = json.loads((dataset / "build_summary.json").read_text())
    k = summaries["k"]
    r0 = k["ranking"]
    lines = [
        "# pvllm on real people: danmaku comments, text-only PV-LLM-small",
        "",
        f"Run {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} on this machine's CPUs; "
        f"{times['total'] / 60:.1f} min in all. Command: `python scripts/real_danmaku_text.py "
        f"--max-steps {args.max_steps}"
        + (f" --model {args.model}" if args.model != "pvllm_small" else "")
        + (f" --users {args.users}" if args.users else "")
        + "`.",
        "",
        f"Data: {build['final']['users']} real users (pseudonymized), {build['final']['comments']} "
        f"comments on {build['final']['videos']} anime episodes (niconico danmaku, "
        "`../shared/data/comments`; one-tap preset comments dropped; no video files). Users split "
        f"{build['split_users']}. Model: {args.model}, trained text-only for {args.max_steps} steps (the "
        f"episode title stands in for the video). Evaluated: {k['n']} validation users (unseen in "
        "training), one target each.",
        "",
        f"Ranking: the true comment among N={r0['n_candidates']} candidates (other users' comments on "
        "the same episode), by the model's length-normalized log-likelihood; Recall/MRR x100, mean rank "
        "of the truth.",
        "",
        "| history | R@1 | R@5 | R@10 | MRR | mean rank | BLEU-4 | METEOR | ROUGE-L | CIDEr | FICL-E | "
        "FICL-S | FICL-R | copy-H | dist-1 | len (ref) |",
        "|---|" + "---|" * 15,
    ]
    for mode, label in MODES:
        s = summaries[mode]
        r = s["ranking"]
        lines.append(
            f"| {label} | {_f(r['R@1'])} | {_f(r['R@5'])} | {_f(r['R@10'])} | {_f(r['MRR'])} | "
            f"{_f(r['mean_rank'])} | "
            + " | ".join(
                _f(s.get(c), 2)
                for c in ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "FICL-E", "FICL-S", "FICL-R")
            )
            + f" | {_f(s.get('copy_history'))} | {_f(s.get('distinct-1'))} | "
            f"{_f(s.get('mean_len'))} ({_f(s.get('ref_mean_len'))}) |"
        )
    ch = r0["chance"]
    lines.append(
        f"| *chance* | {_f(ch['R@1'])} | {_f(ch['R@5'])} | {_f(ch['R@10'])} | {_f(ch['MRR'])} | "
        f"{_f(ch['mean_rank'])} |" + " |" * 10
    )
    lines += [
        "",
        "Caption metrics tokenize with the PTB tokenizer, which does not split Japanese: a danmaku line"
        " is mostly one token, so BLEU/METEOR/CIDEr are near 0 here and ranking is the informative "
        f"measure. FICL uses the `{k.get('rater', '-')}` rater (an offline floor). copy-H: share of "
        "generations copying a history comment (edit similarity >= 0.9); dist-1: distinct unigrams x100; "
        "len: tokens (CJK characters). "
        f"Candidates file sha256 {r0['candidates_sha256'][:16]}; "
        f"{r0['n_samples_filled_from_other_videos']} samples needed candidates from other episodes.",
        "",
        "Time per stage: " + ", ".join(f"{k_} {v:.0f} s" for k_, v in times.items()) + ".",
        "",
    ]
    return "\n".join(line if line.startswith("|") else textwrap.fill(line, 110) for line in lines)


if __name__ == "__main__":
    sys.exit(main())
