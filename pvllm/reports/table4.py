"""Table 4: every evaluated model on validation and test, as Markdown, LaTeX and CSV (+ App. A mean ± std).

    python evaluate.py experiment=table4 [report.runs_dir=outputs/eval]
    python -m pvllm.reports.table4 [report.runs_dir=outputs/eval]      (the same, without evaluate.py)
Reads every run directory under ``runs_dir`` that holds ``summary.json`` (written by evaluate.py next to
predictions.jsonl and scores.jsonl). Runs that differ only in ``history_seed`` (App. A: histories
resampled for the same targets) are one row, reported as mean ± std (sample std, ddof=1). Runs are joined by
their recorded identity (pvllm.identity): runs of one row that differ in anything else (checkpoint, dataset,
decoding, rater), or rows of one split drawn from different datasets, are an error naming both runs.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from pvllm.identity import check_joinable, summary_identity
from pvllm.metrics.alignment import human_scores
from pvllm.metrics.scoring import FAILURE_RULE
from pvllm.reports.summary_table import ficl_scored_of, scored_of

log = logging.getLogger(__name__)

METRIC_COLS = ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "FICL-E", "FICL-S", "FICL-R")
HUMAN_COLS = ("Human-E", "Human-S", "Human-R")
# copy and diversity (pvllm.metrics.diversity): column -> summary.json key
COPY_COLS = {"copy-H": "copy_history", "copy-T": "copy_title", "dist-1": "distinct-1", "dist-2": "distinct-2",
             "len": "mean_len", "ref len": "ref_mean_len"}
SPLIT_TITLES = {"val": "Validation Set", "test": "Test Set"}


def collect_runs(runs_dir: str | Path) -> list[dict[str, Any]]:
    """summary.json of every run below ``runs_dir``, each with its recorded identity (pvllm.identity; a run
    without one is an error). Two directories holding the *same* run (equal ``run_id``): the newer wins."""
    found: dict[str, tuple[float, dict]] = {}
    for path in sorted(Path(runs_dir).rglob("summary.json")):
        s = json.loads(path.read_text())
        if not (path.parent / "predictions.jsonl").is_file():
            log.warning("%s: no predictions.jsonl beside it; skipped", path)
            continue
        s["run_dir"] = str(path.parent)
        key = summary_identity(s)["run_id"]
        mtime = path.stat().st_mtime
        if key in found:
            log.warning(
                "run %s is in two directories: keeping the newer of %s and %s", key, found[key][1]["run_dir"],
                path.parent
            )
            if found[key][0] > mtime:
                continue
        found[key] = (mtime, s)
    return [s for _, s in found.values()]


def _fmt(vals: list[float]) -> str:
    vals = [v for v in vals if v is not None and math.isfinite(v)]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.2f}"
    return f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}"


def human_means(annotations_path: str | Path) -> dict[str, dict[str, float]]:
    """generator -> Human-E/S/R (x100): mean over samples of the annotator-averaged scores."""
    h = human_scores(str(annotations_path))
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for col, dim in zip(HUMAN_COLS, ("emotion", "style", "relevance")):
        per_gen: dict[str, list[float]] = defaultdict(list)
        for (_sid, gen), v in h[dim].items():
            per_gen[gen].append(v)
        for gen, vs in per_gen.items():
            out[gen][col] = 100.0 * sum(vs) / len(vs)
    return out


def table4_rows(
    runs: list[dict[str, Any]], human: dict[str, dict[str, dict[str, float]]] | None = None
) -> list[dict]:
    """Rows (split, method, metric strings, n, failures, rater, seeds), val before test, in run order."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for s in runs:
        key = (
            s.get("split"),
            s.get("generator"),
            s.get("history_mode"),
            s.get("k"),
            s.get("seed"),
            s.get("rater"),
            s.get("history_selection", "random"),  # recent / retrieved histories: their own row
            s.get("video_mode", "own"),  # the video ablation (mismatched / none): its own row
        )
        groups[key].append(s)
    for split in {s.get("split") for s in runs}:  # one table: one dataset and one draw of targets per split
        check_joinable([s for s in runs if s.get("split") == split],
                       ignore=ROW_FIELDS, what=f"Table 4, {split} split")
    order = {"val": 0, "test": 1}
    rows = []
    for key in sorted(groups, key=lambda k: (order.get(k[0], 2), *map(str, k))):
        split, gen, mode, k, _seed, rater, selection, video = key
        ss = groups[key]
        # one row averages only runs that differ in history_seed (App. A), never checkpoints or datasets
        check_joinable(ss, ignore=("histories.history_seed",), what=f"Table 4 row {key}")
        tags = [] if (mode, k) in (("k", 5), (None, None)) else [f"{mode} k={k}"]
        tags += [f"{selection} history"] if selection != "random" else []
        tags += [f"video {video}"] if video != "own" else []
        name = f"{gen} [{', '.join(tags)}]" if tags else gen
        row = {"split": split, "method": name}
        for c in METRIC_COLS:
            row[c] = _fmt([s.get(c) for s in ss])
        hm = (human or {}).get(split, {}).get(gen, {})
        for c in HUMAN_COLS:
            row[c] = f"{hm[c]:.1f}" if c in hm else "-"
        for c, col_key in COPY_COLS.items():
            row[c] = _fmt([s.get(col_key) for s in ss])
        # 95% intervals over users (bootstrap, summary.json `ci95`): one run per row only (no App. A mean)
        cis = [s.get("ci95") or {} for s in ss]
        row["ci95"] = {m: cis[0][m] for m in (*METRIC_COLS, "copy_history") if len(ss) == 1 and m in cis[0]}
        row["scored/requested"] = ", ".join(scored_of(s) for s in ss)
        row["FICL scored/requested"] = ", ".join(ficl_scored_of(s) for s in ss)
        row["rater"] = rater or "-"
        row["FICL pool"] = ss[0].get("ficl_pool") or "-"
        row["history_seeds"] = ",".join(str(s.get("history_seed")) for s in ss)
        rows.append(row)
    return rows


COLUMNS = ("method", *METRIC_COLS, *HUMAN_COLS, *COPY_COLS, "scored/requested", "FICL scored/requested", "rater",
           "FICL pool")
# identity fields that may differ between the rows of one table (not within a row)
ROW_FIELDS = (
    "histories.history_mode", "histories.k", "histories.history_seed", "histories.selection",
    "histories.retrieval_model", "generation", "scoring",
)


def to_markdown(rows: list[dict]) -> str:
    out = [f"({FAILURE_RULE})", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    split = None
    for r in rows:
        if r["split"] != split:
            split = r["split"]
            out.append(f"| *{SPLIT_TITLES.get(split, split)}* |" + " |" * (len(COLUMNS) - 1))
        out.append("| " + " | ".join(str(r[c]) for c in COLUMNS) + " |")
    ci_rows = [r for r in rows if r.get("ci95")]
    if ci_rows:
        cols = [c for c in (*METRIC_COLS, "copy_history") if any(c in r["ci95"] for r in ci_rows)]
        out += ["", "95% bootstrap intervals over users (mean of per-item scores [low, high]; "
                "summary.json ci95):",
                "| split | method | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 2)]
        for r in ci_rows:
            ci = r["ci95"]
            cells = [f"{ci[c]['mean']:.2f} [{ci[c]['lo']:.2f}, {ci[c]['hi']:.2f}]" if c in ci else "-"
                     for c in cols]
            out.append(f"| {r['split']} | {r['method']} | " + " | ".join(cells) + " |")
    return "\n".join(out)


_TEX_ESCAPES = (
    ("\\", r"\textbackslash{}"),
    ("&", r"\&"),
    ("%", r"\%"),
    ("_", r"\_"),
    ("#", r"\#"),
    ("$", r"\$"),
)


def _tex(s: str) -> str:
    for a, b in _TEX_ESCAPES:
        s = s.replace(a, b)
    return s.replace("±", r"$\pm$")  # after escaping "$"


def to_latex(rows: list[dict]) -> str:
    cols = ("method", *METRIC_COLS, *HUMAN_COLS)
    head = ["Method", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "E", "S", "R", "E", "S", "R"]
    out = [
        r"\begin{tabular}{l" + "r" * (len(cols) - 1) + "}",
        r"\toprule",
        r" & & & & & \multicolumn{3}{c}{FICL-Score} & \multicolumn{3}{c}{Human Score} \\",
        " & ".join(head) + r" \\",
        r"\midrule",
    ]
    split = None
    for r in rows:
        if r["split"] != split:
            if split is not None:
                out.append(r"\midrule")
            split = r["split"]
            out.append(rf"\multicolumn{{{len(cols)}}}{{l}}{{\textit{{{SPLIT_TITLES.get(split, split)}}}}} \\")
        out.append(" & ".join(_tex(str(r[c])) for c in cols) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(out)


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["split", *COLUMNS, "history_seeds"], lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r[k] for k in ["split", *COLUMNS, "history_seeds"]})
    return buf.getvalue()


def report(
    cfg=None,
    *,
    runs_dir: str,
    out_dir: str | None = None,
    human_annotations: dict[str, str] | None = None,
) -> list[dict]:
    """Hydra ``report`` hook (conf/experiment/table4.yaml): print Table 4, write table4.{md,tex,csv}."""
    runs = collect_runs(runs_dir)
    if not runs:
        raise FileNotFoundError(f"no run directory with summary.json and predictions.jsonl under {runs_dir}")
    human = {split: human_means(p) for split, p in (human_annotations or {}).items() if p}
    rows = table4_rows(runs, human)
    md = to_markdown(rows)
    print(f"\nTable 4 ({len(runs)} runs under {runs_dir}; all scores x100)\n" + md)
    if out_dir is None and cfg is not None:
        out_dir = cfg.paths.output_dir
    if out_dir:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "table4.md").write_text(md + "\n")
        (out / "table4.tex").write_text(to_latex(rows) + "\n")
        (out / "table4.csv").write_text(to_csv(rows))
    return rows


if __name__ == "__main__":
    import sys

    from pvllm.reports.table3 import run_experiment

    run_experiment("table4", sys.argv[1:])
