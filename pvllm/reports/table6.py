"""Table 6: PV-LLM trained on video only vs video + text-only instructions, FICL-Score on the validation set.

    python -m pvllm.reports.table6 "Video + Text=outputs/eval/RUN_A" \\
        "Video (Default)=outputs/eval/RUN_B" [--out DIR]
Each argument is ``label=run_dir`` of an evaluate.py run (its ``summary.json``); evaluate the two checkpoints
with their own ``run_name=...`` so that the runs do not share a directory.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pvllm.reports.table5 import FICL_COLS, to_markdown


def table6(runs: dict[str, str | Path]) -> str:
    """Markdown rows (label, FICL E/S/R, counts) from the summary.json of each labelled run directory."""
    rows = []
    for label, d in runs.items():
        path = Path(d) / "summary.json"
        if not path.is_file():
            raise FileNotFoundError(f"{label}: no summary.json in {d} (run evaluate.py for it first)")
        rows.append((label, json.loads(path.read_text())))
    return to_markdown(rows, FICL_COLS, first="Method")


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="label=run_dir")
    ap.add_argument("--out", default=None, help="also write table6.md here")
    args = ap.parse_args(argv)
    bad = [r for r in args.runs if "=" not in r]
    if bad:
        ap.error(f"expected label=run_dir, got {bad}")
    md = table6(dict(r.split("=", 1) for r in args.runs))
    print("Table 6: PV-LLM variants (FICL-Score x100)\n" + md)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "table6.md").write_text(md + "\n")
    return md


if __name__ == "__main__":
    main()
