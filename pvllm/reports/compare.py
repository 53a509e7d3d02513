"""Compare two evaluation runs on the samples both scored: paired bootstrap interval and permutation test.

    python -m pvllm.reports.compare RUN_A RUN_B [--resamples 10000] [--seed 0] [--json out.json]
For every per-item metric of both runs (scores.jsonl: caption metrics, FICL-Score; ranking.jsonl:
Recall@1/5/10, MRR; the history copy rate) it prints mean A, mean B, B - A with its 95% interval
(bootstrap over users, each user's samples resampled together) and the two-sided p-value of a paired
sign-flip permutation test over users (exact over all 2^users sign patterns up to
16 users). Only sample ids present in both runs are compared, and how many
is printed. Runs are joined by sample id only when their identities (identity.json) say the ids name the
same samples: dataset records, split, target draw and ranking candidates file agree (else an error naming
both); what differs by design (history mode, model, decoding, video) is printed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from pvllm.identity import check_same_samples
from pvllm.metrics.bootstrap import paired_test, per_item_scores
from pvllm.metrics.diversity import per_item_copy
from pvllm.metrics.ranking import expected_metrics, truth_rank_stats
from pvllm.utils.jsonl import load_jsonl


def run_items(
    run_dir: Path, copy_threshold: float = 0.9
) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """metric -> sample_id -> value, and sample_id -> user_id, of one run directory."""
    run_dir = Path(run_dir)
    preds_path, scores_path = run_dir / "predictions.jsonl", run_dir / "scores.jsonl"
    items: dict[str, dict[str, float]] = {}
    users: dict[str, str] = {}
    if preds_path.is_file():
        preds = load_jsonl(preds_path)
        users.update({p["sample_id"]: p["user_id"] for p in preds})
        items["copy_history"] = per_item_copy(preds, copy_threshold)
    if scores_path.is_file():
        items.update(per_item_scores(load_jsonl(scores_path)))
    rank_path = run_dir / "ranking.jsonl"
    if rank_path.is_file():
        for r in load_jsonl(rank_path):
            users[r["sample_id"]] = r["user_id"]
            if r.get("error") is None:
                m = expected_metrics(*truth_rank_stats(r["scores"], r["truth_index"]))
                for k in ("R@1", "R@5", "R@10", "MRR"):
                    items.setdefault(k, {})[r["sample_id"]] = 100.0 * m[k]
    if not items:
        raise FileNotFoundError(f"{run_dir}: no predictions.jsonl, scores.jsonl or ranking.jsonl")
    return items, users


def compare(
    run_a: Path, run_b: Path, *, resamples: int = 10000, seed: int = 0, confidence: float = 0.95
) -> list[dict[str, Any]]:
    check_same_samples(run_a, run_b)  # same samples under the same ids, or an IdentityConflict
    a, ua = run_items(run_a)
    b, ub = run_items(run_b)
    for sid in set(ua) & set(ub):
        if ua[sid] != ub[sid]:
            raise ValueError(f"sample {sid} belongs to user {ua[sid]} in {run_a} but {ub[sid]} in {run_b}")
    users = {**ua, **ub}
    rows = []
    for m in sorted(set(a) & set(b), key=lambda x: (x.startswith("copy"), x)):
        res = paired_test(a[m], b[m], users, resamples=resamples, seed=seed, confidence=confidence)
        rows.append({"metric": m, **res})
    return rows


def to_markdown(rows: list[dict[str, Any]], confidence: float = 0.95) -> str:
    def f(x: float) -> str:
        return "-" if x is None or not math.isfinite(x) else f"{x:.2f}"

    pct = int(round(100 * confidence))
    out = [
        f"| metric | shared | users | A | B | B - A | {pct}% interval | p (permutation) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['metric']} | {r['n_shared']} | {r['n_users']} | {f(r['mean_A'])} | {f(r['mean_B'])} | "
            f"{f(r['diff'])} | [{f(r['lo'])}, {f(r['hi'])}] | {r['p_permutation']:.4f} ({r.get('p_method')}) |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m pvllm.reports.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_a", type=Path)
    p.add_argument("run_b", type=Path)
    p.add_argument("--resamples", type=int, default=10000, help="bootstrap resamples and permutations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = p.parse_args(argv)
    by_design = check_same_samples(args.run_a, args.run_b)
    print("same samples (dataset, split, target draw, candidates); differing by design: "
          + ("; ".join(by_design) if by_design else "nothing"))
    rows = compare(
        args.run_a, args.run_b, resamples=args.resamples, seed=args.seed, confidence=args.confidence
    )
    print(
        f"A = {args.run_a}\nB = {args.run_b}\n(paired over the users of shared sample ids; "
        f"{args.resamples} resamples, seed {args.seed})\n" + to_markdown(rows, args.confidence)
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
