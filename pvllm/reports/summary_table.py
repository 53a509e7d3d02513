"""The Table-4-style summary table of evaluate.py, the demo and the reports: means, copy/diversity columns,
scored/requested counts under the one failure rule, and the 95% intervals over users (from summary.json)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pvllm.metrics.scoring import FAILURE_RULE

TABLE_COLUMNS = ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "FICL-E", "FICL-S", "FICL-R")
# copy and diversity (pvllm.metrics.diversity): column -> summary key
COPY_COLUMNS = {"copy-H": "copy_history", "copy-T": "copy_title", "dist-1": "distinct-1",
                "dist-2": "distinct-2", "len": "mean_len", "ref len": "ref_mean_len"}


def _cell(v: Any, digits: int = 2) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) else "-"


def format_table(rows: Iterable[tuple[str, dict[str, Any]]], title: str = "") -> str:
    """A Table-4-style Markdown table: one row per (name, summary), with scored/requested counts beside the
    means and the one failure rule stated above it, then the 95% intervals over users."""
    rows = list(rows)
    head = ("| method | " + " | ".join((*TABLE_COLUMNS, *COPY_COLUMNS))
            + " | scored/requested | FICL scored/requested | rater | FICL pool |")
    toks = sorted({s.get("caption_tokenize", "coco") for _, s in rows})
    tok_note = ([] if toks == ["coco"] else  # coco-exact: the default, as every earlier table
                [f"(caption metrics tokenized: {', '.join(f'{n}: {t}' for n, t in _tokenizations(rows))})"])
    lines = ([title] if title else []) + [f"({FAILURE_RULE})", *tok_note, head,
                                          "|" + "---|" * (len(TABLE_COLUMNS) + len(COPY_COLUMNS) + 5)]
    for name, s in rows:
        vals = [_cell(s.get(c)) for c in TABLE_COLUMNS] + [_cell(s.get(k), 1) for k in COPY_COLUMNS.values()]
        lines.append(f"| {name} | " + " | ".join(vals) + f" | {scored_of(s)} | {ficl_scored_of(s)} | "
                     f"{s.get('rater') or '-'} | {s.get('ficl_pool') or '-'} |")
    ci_rows = [(name, s["ci95"]) for name, s in rows if s.get("ci95")]
    if ci_rows:
        cols = [c for c in (*TABLE_COLUMNS, "copy_history") if any(c in ci for _, ci in ci_rows)]
        lines += ["", "95% intervals over users (mean of per-item scores [low, high]):",
                  "| method | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
        for name, ci in ci_rows:
            cells = [f"{ci[c]['mean']:.2f} [{ci[c]['lo']:.2f}, {ci[c]['hi']:.2f}]" if c in ci else "-"
                     for c in cols]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _tokenizations(rows: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, str]]:
    from pvllm.metrics.caption import TOKENIZATIONS

    return [(name, TOKENIZATIONS.get(s.get("caption_tokenize", "coco"), "?")) for name, s in rows]


def scored_of(s: dict[str, Any]) -> str:
    """``scored/requested`` of a summary (older summaries: n minus failures)."""
    n = s.get("n_requested", s.get("n"))
    if n is None:
        return "-"
    return f"{s.get('n_scored', n - int(s.get('n_generation_failed') or 0))}/{n}"


def ficl_scored_of(s: dict[str, Any]) -> str:
    if "ficl_n_requested" in s:
        return f"{s['ficl_n_scored']}/{s['ficl_n_requested']}"
    if "ficl_n_ok" in s:
        return f"{s['ficl_n_ok']}/{s['ficl_n_ok'] + s.get('ficl_n_failed', 0)}"
    return "-"
