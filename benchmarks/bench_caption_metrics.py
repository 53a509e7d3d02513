"""P5: caption metrics (BLEU-4, METEOR, ROUGE-L, CIDEr-D) on N comment pairs (default 20,000 real YouTube
comments from shared/data): the anchor way (one PTB tokenizer run, then pycocoevalcap's four scorers one
after another) vs ours (``pvllm.metrics.caption``: two tokenizer JVMs at once, METEOR's JVM in a thread
beside BLEU/ROUGE/CIDEr), alternating, in one process. Checks that both give identical scores.

    python benchmarks/bench_caption_metrics.py [--items 20000] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pvllm.metrics.caption import caption_metrics_per_item  # noqa: E402

COMMENTS = ROOT.parent / "shared" / "data" / "comments" / "youtube_biotech.jsonl"


def comment_pairs(n: int) -> tuple[dict[str, str], dict[str, str]]:
    """n (reference, hypothesis) pairs of real comments, cut to 30 words (comment length)."""
    texts = [json.loads(line)["text"] for line in COMMENTS.read_text().splitlines() if line.strip()]
    texts = [" ".join(t.split()[:30]) for t in texts if t.strip()]
    refs = {f"s{i}": texts[i % len(texts)] for i in range(n)}
    hyps = {f"s{i}": texts[(7 * i + 3) % len(texts)] for i in range(n)}
    return refs, hyps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=1)
    a = ap.parse_args()
    if not COMMENTS.is_file():
        sys.exit(f"needs {COMMENTS} (shared/data)")
    refs, hyps = comment_pairs(a.items)
    # start METEOR's JVM and warm it (it loads its tables at the first SCORE) once for both ways
    warm = dict(list(refs.items())[:200]), dict(list(hyps.items())[:200])
    caption_metrics_per_item(*warm, concurrent=False)
    t_anchor, t_ours = [], []
    for _ in range(a.rounds):
        t0 = time.perf_counter()
        anchor = caption_metrics_per_item(refs, hyps, concurrent=False)
        t_anchor.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ours = caption_metrics_per_item(refs, hyps, concurrent=True)
        t_ours.append(time.perf_counter() - t0)
    ta, to = statistics.median(t_anchor), statistics.median(t_ours)
    same = anchor == ours
    print(f"P5 caption metrics, {a.items} comment pairs, median of {a.rounds} round(s)")
    print("| way | time (s) | BLEU-4 | METEOR | ROUGE-L | CIDEr |")
    print("|---|---|---|---|---|---|")
    for name, t, (corpus, _) in (("anchor: one after another", ta, anchor), ("ours: concurrent", to, ours)):
        print(f"| {name} | {t:.2f} | " + " | ".join(f"{corpus[m]:.4f}" for m in corpus) + " |")
    print(f"ours/anchor time: {to / ta:.2f}x (goal <= 0.7x); speed-up {ta / to:.2f}x")
    print(f"identical corpus and per-item scores: {same}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
