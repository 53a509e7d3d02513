"""Ranking table: Recall@1/5/10, MRR and mean rank per history setting, beside chance (pvllm.metrics.ranking).

    python evaluate.py experiment=ranking_history     (3 rank-only evaluations, the table printed after each)
Rows come from the ``ranking_summary.json`` of runs under ``runs_dir`` that ranked the same candidates file
(same sha256) with the same model as this evaluation; a generator without log-probabilities is "n/a".
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pvllm.metrics.ranking import format_ranking

log = logging.getLogger(__name__)
SETTINGS = (("k", "history k"), ("none", "no history"), ("others", "others' history"))


def collect(runs_dir: str | Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(Path(runs_dir).rglob("ranking_summary.json")):
        s = json.loads(path.read_text())
        s["run_dir"] = str(path.parent)
        out.append(s)
    return out


def ranking_rows(summaries: list[dict], model: str, sha256: str | None, score: str | None = "mean"
                 ) -> list[tuple[str, dict | None]]:
    """(setting name, summary or None for n/a) for the runs of ``model`` on the candidates ``sha256`` that
    scored with ``score`` (ranking.score; summaries written before it existed are ``mean``; None: any)."""
    rows = []
    for mode, label in SETTINGS:
        match = [
            s
            for s in summaries
            if s.get("model") == model
            and s.get("history_mode") == mode
            and (score is None or s.get("score", "mean") == score)
            and (s.get("status") != "ok" or s.get("candidates_sha256") == sha256)
        ]
        if match:
            s = max(match, key=lambda x: Path(x["run_dir"], "ranking_summary.json").stat().st_mtime)
            k = s.get("k")
            rows.append(
                (f"{label}" + (f" (k={k})" if mode != "none" else ""), s if s.get("status") == "ok" else None)
            )
    return rows


def baseline_rows(summaries: list[dict], sha256: str | None) -> list[tuple[str, dict | None]]:
    """The no-training baseline rankers (``generator=baseline_ranker``, model ``baseline:<name>``) that ranked
    the same candidates file, one row per (ranker, history setting): the floor a model must beat."""
    rows = []
    for name in sorted({s["model"] for s in summaries if str(s.get("model", "")).startswith("baseline:")}):
        # a baseline has no likelihood: its own score whatever the model's ranking.score
        rows += [(f"{name} (no training), {label}", s) for label, s in ranking_rows(summaries, name, sha256, None)]
    return rows


def report(cfg=None, *, runs_dir: str, out_dir: str | None = None) -> list[tuple[str, dict | None]]:
    """Hydra ``report`` hook: the ranking table of this evaluation's model over the history settings, with
    the baseline rankers that ranked the same candidates beside it."""
    this = json.loads((Path(cfg.paths.output_dir) / "ranking_summary.json").read_text())
    summaries = collect(runs_dir)
    rows = ranking_rows(summaries, this["model"], this.get("candidates_sha256"), this.get("score", "mean"))
    if not str(this["model"]).startswith("baseline:"):
        rows += baseline_rows(summaries, this.get("candidates_sha256"))
    title = (
        f"\nRanking ({cfg.split} split, {this['generator']}: {this['model']}; candidates "
        f"{this.get('candidates_file', '-')} sha256 {str(this.get('candidates_sha256'))[:12]}; "
        f"score {this.get('score', 'mean')}; "
        "Recall/MRR x100, mean rank of the truth among N)"
    )
    text = format_ranking(rows, title=title)
    print(text)
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "ranking.md").write_text(text + "\n")
        (Path(out_dir) / "ranking.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    return rows
