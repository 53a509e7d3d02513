"""``python -m pvllm.annotate.merge A.jsonl B.jsonl ... --out annotations.jsonl``

Joins the annotators' files and keeps only the latest row per (sample_id, generator, annotator)
(:func:`pvllm.annotate.store.latest_annotations`), after checking every row against DESIGN.md. The
result is what Table 3 / Table 4 readers (``pvllm.metrics.alignment.human_scores``,
``pvllm.metrics.ficl.average_annotations``) should read: they average every row they are given, so
a raw file with resubmissions would count an annotator's old and new scores together.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pvllm.annotate.store import ANNOTATION_FIELDS, latest_annotations, parse_score, read_annotations
from pvllm.metrics.ficl import DIMENSIONS
from pvllm.utils.jsonl import write_jsonl


def check_row(row: dict[str, Any], where: str) -> None:
    for f in ANNOTATION_FIELDS:
        if row.get(f) is None:
            raise ValueError(f"{where}: missing field {f!r}")
    for d in DIMENSIONS:
        if isinstance(row[d], bool) or not isinstance(row[d], (int, float)) or parse_score(row[d]) is None:
            raise ValueError(f"{where}: {d}={row[d]!r} is not one of 0, 0.25, 0.5, 0.75, 1")


def merge(paths: list[str | Path]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"{p}: no such annotations file")
        for i, r in enumerate(read_annotations(p), start=1):
            check_row(r, f"{p}: row {i}")
            rows.append(r)
    return latest_annotations(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pvllm.annotate.merge", description=__doc__.split("\n\n")[1])
    ap.add_argument("inputs", nargs="+", help="annotations.jsonl files (one per annotator, or already merged)")
    ap.add_argument("--out", required=True, help="merged file (written atomically)")
    args = ap.parse_args(argv)
    try:
        rows = merge(args.inputs)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_jsonl(args.out, rows)
    annotators = sorted({r["annotator"] for r in rows})
    print(f"{len(rows)} rows from {len(annotators)} annotators ({', '.join(annotators)}) -> {args.out}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
