"""Figure 6: FICL-Score (emotion, style, relevance) against the number of history comments k.

    python evaluate.py -m experiment=fig6_history_sweep            (k = 0,1,3,5,10,15; replots after each run)
    python evaluate.py experiment=fig6_history_sweep stage=report  (the plot from those runs only)
Points come from the ``summary.json`` of runs under ``runs_dir`` with this evaluation's generator, split
and seeds, history mode ``k``; a k without a run yet is left out of the plot and named in the log.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pvllm.reports.table5 import FICL_COLS, history_len, matching_runs, selection

log = logging.getLogger(__name__)

LABELS = {"FICL-E": "Emotion", "FICL-S": "Style", "FICL-R": "Relevance"}


def plot(series: dict[str, list], path: Path, title: str):
    """Write the PNG; returns the figure (its lines hold exactly the plotted values)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on clusters
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=150)
    for col in FICL_COLS:
        ax.plot(series["k"], series[col], marker="o", label=LABELS[col])
    ax.set_xlabel("number of history comments k")
    ax.set_ylabel("FICL-Score (x100)")
    ax.set_xticks(series["k"])
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return fig


def report(
    cfg=None,
    *,
    runs_dir: str,
    out_dir: str,
    k_values: Sequence[int] = (0, 1, 3, 5, 10, 15),
    generator: str | None = None,
    rater: str | None = None,
) -> dict[str, Any]:
    """Collect FICL E/S/R per k, write fig6.png + fig6.json; returns the plotted series."""
    want = selection(cfg, generator, rater)
    want.update(history_mode="k", history_seed=cfg.history.history_seed)
    found = matching_runs(runs_dir, want, vary="k")
    ks = [k for k in k_values if k in found]
    if not ks:
        raise FileNotFoundError(
            f"no run under {runs_dir} matches {want} for k in {list(k_values)}: "
            "run python evaluate.py -m experiment=fig6_history_sweep first"
        )
    missing = [k for k in k_values if k not in found]
    if missing:
        log.warning("Figure 6: no run yet for k=%s (%d of %d plotted)", missing, len(ks), len(k_values))
    no_ficl = [k for k in ks if not isinstance(found[k].get("FICL-E"), (int, float))]
    if no_ficl:
        raise ValueError(f"runs for k={no_ficl} have no FICL-Score (evaluated with rater=none?): {want}")
    series: dict[str, Any] = {"k": ks, **{c: [found[k][c] for k in ks] for c in FICL_COLS}}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = out / "fig6.png"
    rater_label = found[ks[0]].get("rater")
    plot(series, png, f"{want['generator']}, {want['split']} split, judge {rater_label}")
    # the history lengths actually drawn: users with fewer comments than k get fewer (counted, not hidden)
    actual = [found[k].get("history_len_mean") for k in ks]
    short = {k: found[k].get("n_history_shorter_than_k") for k in ks if found[k].get("n_history_shorter_than_k")}
    if short:
        log.warning("Figure 6: samples with fewer history comments than k (k: count): %s", short)
    series.update(
        png=str(png), run_dirs=[found[k]["run_dir"] for k in ks], rater=rater_label, missing_k=missing,
        history_len_mean=actual, n_history_shorter_than_k=[found[k].get("n_history_shorter_than_k") for k in ks],
    )
    (out / "fig6.json").write_text(json.dumps(series, indent=2) + "\n")
    rows = "\n".join(
        f"| {k} | "
        + " | ".join(f"{series[c][i]:.2f}" if math.isfinite(series[c][i]) else "-" for c in FICL_COLS)
        + f" | {history_len(found[k])} |"
        for i, k in enumerate(ks)
    )
    print(f"\nFigure 6 ({png})\n| k | " + " | ".join(FICL_COLS) + " | actual history len |\n|---|---|---|---|---|\n"
          + rows)
    return series


if __name__ == "__main__":
    import sys

    from pvllm.reports.table3 import run_experiment

    run_experiment("fig6_history_sweep", sys.argv[1:])
