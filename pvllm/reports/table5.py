"""Table 5: PV-LLM with no history, another user's history and its own (default), on the validation set.

    python evaluate.py -m experiment=table5_history          (3 evaluations, the table printed after each)
    python evaluate.py experiment=table5_history stage=report (the table from those runs only)
Rows come from the ``summary.json`` of runs under ``runs_dir`` that match this evaluation's generator,
split, k and seeds (``matching_runs``, shared with Fig. 6 and App. A). The paper prints the caption
metrics; the FICL columns are added.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from pvllm.identity import check_joinable
from pvllm.metrics.scoring import FAILURE_RULE
from pvllm.reports.summary_table import ficl_scored_of, scored_of
from pvllm.reports.table4 import collect_runs

log = logging.getLogger(__name__)

CAPTION_COLS = ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
FICL_COLS = ("FICL-E", "FICL-S", "FICL-R")
SETTINGS = (("none", "No History"), ("others", "Others' History"), ("k", "Default"))


def selection(cfg: Any, generator: str | None = None, rater: str | None = None) -> dict[str, Any]:
    """Summary fields a run must match: this evaluation's generator, split and seeds (+ rater if given)."""
    if generator is None:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            raise ValueError("report.generator is null and no Hydra run is active: set report.generator=NAME")
        generator = HydraConfig.get().runtime.choices.get("generator")
    want = {"generator": generator, "split": cfg.split, "seed": cfg.history.seed}
    if rater is not None:
        want["rater"] = rater
    return want


VARIED = {"history_mode": "histories.history_mode", "k": "histories.k", "history_seed": "histories.history_seed"}


def matching_runs(runs_dir: str | Path, want: dict[str, Any], vary: str) -> dict[Any, dict]:
    """``vary`` value -> the summary of the one run matching ``want``; several raters -> error, not a mix.

    The runs must share their recorded identity except the varied field (same dataset, targets, checkpoint,
    decoding, rater): two checkpoints or datasets under one name are an error naming both runs."""
    runs = [s for s in collect_runs(runs_dir) if all(s.get(k) == v for k, v in want.items())]
    raters = sorted({str(s.get("rater")) for s in runs})
    if len(raters) > 1:
        raise ValueError(
            f"runs under {runs_dir} matching {want} were scored by several raters {raters}: "
            "choose one with report.rater=LABEL"
        )
    check_joinable(runs, ignore=[VARIED[vary]], what=f"runs under {runs_dir} matching {want}")
    out: dict[Any, dict] = {}
    for s in runs:
        out.setdefault(s.get(vary), s)
    return out


def fmt(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, (int, float)) and math.isfinite(v) else "-"


def to_markdown(rows: list[tuple[str, dict]], cols: tuple[str, ...], first: str = "Setting") -> str:
    out = [
        f"({FAILURE_RULE})",
        f"| {first} | " + " | ".join(cols) + " | scored/requested | FICL scored/requested | history len | FICL pool |",
        "|" + "---|" * (len(cols) + 5),
    ]
    for name, s in rows:
        out.append(
            f"| {name} | "
            + " | ".join(fmt(s.get(c)) for c in cols)
            + f" | {scored_of(s)} | {ficl_scored_of(s)} | {history_len(s)} | {s.get('ficl_pool') or '-'} |"
        )
    return "\n".join(out)


def history_len(s: dict) -> str:
    """The history lengths actually drawn (mean, min-max): fewer than k where users have fewer comments."""
    if "history_len_mean" not in s:
        return "-"
    return f"{s['history_len_mean']:.2f} ({s['history_len_min']}-{s['history_len_max']})"


def report(
    cfg=None,
    *,
    runs_dir: str,
    out_dir: str | None = None,
    k: int | None = None,
    generator: str | None = None,
    rater: str | None = None,
) -> list[tuple[str, dict]]:
    """Print Table 5 (none / others / own history, the same k) and write table5.md + table5.json."""
    want = selection(cfg, generator, rater)
    want.update(k=cfg.history.k if k is None else k, history_seed=cfg.history.history_seed)
    found = matching_runs(runs_dir, want, vary="history_mode")
    missing = [label for mode, label in SETTINGS if mode not in found]
    if len(missing) == len(SETTINGS):
        raise FileNotFoundError(
            f"no run under {runs_dir} matches {want}: run python evaluate.py -m "
            "experiment=table5_history first"
        )
    if missing:
        log.warning("Table 5: no run yet for %s (matching %s)", ", ".join(missing), want)
    rows = [(label, found[mode]) for mode, label in SETTINGS if mode in found]
    md = to_markdown(rows, CAPTION_COLS + FICL_COLS)
    print(
        f"\nTable 5: {want['generator']} with different history comments, {want['split']} split, "
        f"k={want['k']} (all scores x100)\n{md}"
    )
    if out_dir:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "table5.md").write_text(md + "\n")
        (out / "table5.json").write_text(
            json.dumps(
                [
                    {
                        "setting": name,
                        "run_dir": s["run_dir"],
                        **{c: s.get(c) for c in CAPTION_COLS + FICL_COLS},
                    }
                    for name, s in rows
                ],
                indent=2,
            )
            + "\n"
        )
    return rows
