"""``python -m pvllm.annotate.merge A.jsonl B.jsonl ... --out annotations.jsonl``
``python -m pvllm.annotate.merge A.jsonl ... --alignment-dir DIR --predictions RUN_DIR ...``

Joins the annotators' files and keeps only the latest row per (sample_id, generator, annotator)
(:func:`pvllm.annotate.store.latest_annotations`), after checking every row against docs/data_format.md. The
result is what Table 3 / Table 4 readers (``pvllm.metrics.alignment.human_scores``,
``pvllm.metrics.ficl.average_annotations``) should read: they average every row they are given, so
a raw file with resubmissions would count an annotator's old and new scores together.

With ``--alignment-dir`` it writes the directory Table 3 reads (``report.alignment_dir``):
``annotations.jsonl`` (merged), ``predictions.jsonl`` (the runs' rows of the annotated samples, all
generators together) and ``references.jsonl`` (``sample_id``, ``text``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pvllm.annotate.store import check_row, latest_annotations, read_annotations
from pvllm.utils.jsonl import write_jsonl


def merge(paths: list[str | Path]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"{p}: no such annotations file")
        for i, r in enumerate(read_annotations(p), start=1):
            check_row(r, f"{p}: row {i}")
            rows.append(r)
    return latest_annotations(rows)


def write_alignment_dir(
    out_dir: str | Path, annotations: list[dict[str, Any]], runs: list[str | Path]
) -> Path:
    """Table 3's input directory from merged annotations and the evaluation runs they were made on."""
    from pvllm.annotate.store import predictions_file
    from pvllm.utils.jsonl import read_jsonl_tolerant

    out = Path(out_dir)
    annotated = {(str(a["sample_id"]), str(a["generator"])) for a in annotations}
    sids = {sid for sid, _ in annotated}
    preds: dict[tuple[str, str], dict[str, Any]] = {}
    refs: dict[str, str] = {}
    for run in runs:
        for row in read_jsonl_tolerant(predictions_file(run)):
            sid, gen = str(row["sample_id"]), str(row["generator"])
            if sid in sids:
                preds[(sid, gen)] = row  # the last row of a (sample, generator) wins, as in the tool
                refs.setdefault(sid, row["reference"])
    missing = sorted(annotated - set(preds))
    if missing:
        raise ValueError(
            f"{len(missing)} annotated (sample_id, generator) pairs have no prediction in the "
            f"given runs, e.g. {missing[0]}"
        )
    write_jsonl(out / "annotations.jsonl", annotations)
    write_jsonl(out / "predictions.jsonl", preds.values())
    write_jsonl(out / "references.jsonl", ({"sample_id": k, "text": v} for k, v in refs.items()))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pvllm.annotate.merge", description=__doc__.split("\n\n")[1])
    ap.add_argument(
        "inputs", nargs="+", help="annotations.jsonl files (one per annotator, or already merged)"
    )
    ap.add_argument("--out", help="merged file (written atomically)")
    ap.add_argument(
        "--alignment-dir", help="write Table 3's directory here (annotations, predictions, references)"
    )
    ap.add_argument(
        "--predictions",
        nargs="+",
        default=[],
        metavar="RUN_DIR",
        help="with --alignment-dir: the evaluation runs that were annotated",
    )
    args = ap.parse_args(argv)
    if not args.out and not args.alignment_dir:
        ap.error("give --out, --alignment-dir, or both")
    if args.alignment_dir and not args.predictions:
        ap.error("--alignment-dir needs --predictions RUN_DIR ...")
    try:
        rows = merge(args.inputs)
        if args.alignment_dir:
            write_alignment_dir(args.alignment_dir, rows, args.predictions)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.out:
        write_jsonl(args.out, rows)
    annotators = sorted({r["annotator"] for r in rows})
    where = " and ".join(x for x in (args.out, args.alignment_dir) if x)
    print(
        f"{len(rows)} rows from {len(annotators)} annotators ({', '.join(annotators)}) -> {where}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
