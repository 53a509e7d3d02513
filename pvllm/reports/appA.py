"""Appendix A: the same targets with resampled histories (history_seed), FICL-Score as mean ± std.

    python evaluate.py -m experiment=appA_resample            (history_seed = 1,2,3; the table after each run)
    python evaluate.py experiment=appA_resample stage=report  (the table from those runs only)
Std is the sample std (ddof=1), as Table 4 reports App. A rows (``pvllm.reports.table4._fmt``).
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Sequence
from pathlib import Path

from pvllm.reports.table4 import _fmt
from pvllm.reports.table5 import CAPTION_COLS, FICL_COLS, matching_runs, selection, to_markdown

log = logging.getLogger(__name__)


def report(
    cfg=None,
    *,
    runs_dir: str,
    out_dir: str | None = None,
    history_seeds: Sequence[int] = (0, 1, 2),
    generator: str | None = None,
    rater: str | None = None,
) -> dict[str, str]:
    """Print one row per history seed and their mean ± std; write appA.md + appA.json."""
    want = selection(cfg, generator, rater)
    want.update(history_mode=cfg.history.mode, k=cfg.history.k)
    found = matching_runs(runs_dir, want, vary="history_seed")
    seeds = [s for s in history_seeds if s in found]
    if not seeds:
        raise FileNotFoundError(
            f"no run under {runs_dir} matches {want} for history_seed in "
            f"{list(history_seeds)}: run python evaluate.py -m experiment=appA_resample first"
        )
    missing = [s for s in history_seeds if s not in found]
    if missing:
        log.warning("App. A: no run yet for history_seed=%s", missing)
    cols = CAPTION_COLS + FICL_COLS
    mean_std = {c: _fmt([found[s].get(c) for s in seeds]) for c in cols}
    rows = [(f"history_seed={s}", found[s]) for s in seeds]
    md = to_markdown(rows, cols, first="Histories")
    md += "\n| mean ± std | " + " | ".join(mean_std[c] for c in cols) + f" | {len(seeds)} runs | | | |"
    print(
        f"\nAppendix A: {want['generator']}, {want['split']} split, {want['history_mode']} k={want['k']}, "
        f"histories resampled (all scores x100)\n{md}"
    )
    if out_dir:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "appA.md").write_text(md + "\n")
        per_seed = {s: {c: found[s].get(c) for c in cols} for s in seeds}
        (out / "appA.json").write_text(
            json.dumps(
                {
                    "history_seeds": seeds,
                    "missing": missing,
                    "per_seed": per_seed,
                    "mean_std": mean_std,
                    "mean": {
                        c: statistics.mean(v[c] for v in per_seed.values())
                        for c in FICL_COLS
                        if all(isinstance(v[c], (int, float)) for v in per_seed.values())
                    },
                },
                indent=2,
            )
            + "\n"
        )
    return mean_std
