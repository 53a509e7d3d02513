"""Table 3: NDCG alignment of every automatic metric with (human) annotations, per dimension.

    python evaluate.py experiment=table3_alignment [rater=gemini_flash]
    python -m pvllm.reports.table3 [rater=gemini_flash]      (the same, without evaluate.py)
Rows: BLEU-4, METEOR, ROUGE-L, CIDEr, then per rater FICL (0), (5x3), (10x3), (15x3) (LLM raters) or one
FICL row (pair raters, which read no examples); columns E/S/R; plus the expected NDCG of random scores.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from pvllm.metrics.alignment import human_scores, ndcg_alignment, random_baseline
from pvllm.metrics.caption import METRICS as CAPTION_METRICS
from pvllm.metrics.caption import caption_metrics_per_item
from pvllm.metrics.correlation import annotator_agreement, rank_correlations
from pvllm.metrics.ficl import DIMENSIONS, FewShotPool
from pvllm.metrics.scoring import ficl_results
from pvllm.raters.base import PairRater, Rater
from pvllm.utils.jsonl import load_jsonl

log = logging.getLogger(__name__)
COLS = ("E", "S", "R")


def load_alignment_set(path: str | Path) -> tuple[dict[str, list[dict]], dict[str, str], str]:
    """``predictions.jsonl`` (several generators), ``references.jsonl`` and ``annotations.jsonl`` of a dir."""
    path = Path(path)
    preds: dict[str, list[dict]] = {}
    for p in load_jsonl(path / "predictions.jsonl"):
        preds.setdefault(p["generator"], []).append(p)
    refs = {r["sample_id"]: r["text"] for r in load_jsonl(path / "references.jsonl")}
    return preds, refs, str(path / "annotations.jsonl")


def alignment_table(
    predictions: dict[str, list[dict]],
    references: dict[str, str],
    annotations_path: str | Path,
    raters: list[Rater],
    *,
    k_values: tuple[int, ...] = (0, 5, 10, 15),
    fewshot: FewShotPool | None = None,
    cache_path: str | Path | None = None,
    seed: int = 0,
    skip_all_zero: bool = False,
) -> list[dict[str, Any]]:
    """One dict per Table-3 row: group, metric, E, S, R (mean NDCG), n_samples, note."""
    human = human_scores(str(annotations_path))
    annotated = {sid for sid, _ in human["emotion"]}
    ok = {
        g: [
            p
            for p in rows
            if p["sample_id"] in annotated and p.get("error") is None and p.get("text") is not None
        ]
        for g, rows in predictions.items()
    }
    rows: list[dict[str, Any]] = []

    def add(group: str, metric: str, scores: dict[str, dict[tuple[str, str], float]], note: str = "") -> None:
        row: dict[str, Any] = {"group": group, "metric": metric, "note": note}
        for col, dim in zip(COLS, DIMENSIONS):
            a = ndcg_alignment(scores[dim], human[dim], skip_all_zero=skip_all_zero)
            row[col], row["n_samples"] = a.mean, a.n_samples
            row["n_all_zero_human"] = a.n_all_zero_human
            for name, v in rank_correlations(scores[dim], human[dim]).items():
                row[f"{col}_{name}"] = v
        rows.append(row)

    per_gen = {
        g: caption_metrics_per_item(
            {p["sample_id"]: references[p["sample_id"]] for p in ps}, {p["sample_id"]: p["text"] for p in ps}
        )[1]  # fmt: skip
        for g, ps in ok.items()
        if ps
    }
    for m in CAPTION_METRICS:
        s = {(sid, g): v[m] for g, items in per_gen.items() for sid, v in items.items()}
        add("", m, {d: s for d in DIMENSIONS})

    fewshot_ids = fewshot.sample_ids if fewshot else set()
    if annotated & fewshot_ids:
        raise ValueError(f"few-shot samples are also annotated items: {sorted(annotated & fewshot_ids)[:5]}")
    for rater in raters:
        ks = [None] if isinstance(rater, PairRater) else list(k_values)
        for k in ks:
            label = "FICL" if k is None else f"FICL ({k})" if k == 0 else f"FICL ({k}x3)"
            available = len(fewshot.examples) if fewshot else 0
            if k and k > available:
                rows.append({"group": rater.name, "metric": label, "E": math.nan, "S": math.nan, "R": math.nan,
                             "n_samples": 0, "note": f"n/a: the few-shot pool has {available} samples"})  # fmt: skip
                continue
            scores: dict[str, dict[tuple[str, str], float]] = {d: {} for d in DIMENSIONS}
            n_failed = 0
            for g, ps in ok.items():
                res = ficl_results(rater, [(p["text"], references[p["sample_id"]]) for p in ps],
                                   fewshot=fewshot, k_shots=k or 0, seed=seed, cache_path=cache_path)  # fmt: skip
                for p, r in zip(ps, res):
                    if r.status != "ok":
                        n_failed += 1
                        continue
                    for d in DIMENSIONS:
                        scores[d][(p["sample_id"], g)] = getattr(r, d)
            add(rater.name, label, scores, note=f"{n_failed} FICL failures" if n_failed else "")
    base = {d: random_baseline(human[d], skip_all_zero=skip_all_zero) for d in DIMENSIONS}
    rows.append({"group": "", "metric": "random scores (expected)", "note": "floor with these models",
                 **{c: base[d] for c, d in zip(COLS, DIMENSIONS)},
                 "n_samples": rows[0]["n_samples"] if rows else 0})  # fmt: skip
    return rows


CORR_COLS = ("tau_sample", "rho_sample", "tau_system", "rho_system")


def format_correlations(rows: list[dict[str, Any]]) -> str:
    """Kendall τ / Spearman ρ with the human scores, sample and system level, per dimension."""
    head = " | ".join(f"{c} {n.replace('_', ' (')})" for c in COLS
                      for n in ("τ_sample", "ρ_sample", "τ_system", "ρ_system"))
    out = [f"| Metric | {head} |", "|---|" + "---|" * (4 * len(COLS))]
    for r in rows:
        if f"E_{CORR_COLS[0]}" not in r:
            continue
        name = f"{r['group']}: {r['metric']}" if r["group"] else r["metric"]
        vals = [r[f"{c}_{n}"] for c in COLS for n in CORR_COLS]
        out.append(f"| {name} | " + " | ".join("-" if math.isnan(v) else f"{v:.2f}" for v in vals) + " |")
    r0 = next((r for r in rows if "E_n_systems" in r), None)
    if r0:
        out.append(f"\nSample level: mean over the {r0['E_n_samples_corr']} samples where neither side ties "
                   f"every model ({r0['E_n_samples_undefined']} left out for BLEU-4/E); system level: "
                   f"{r0['E_n_systems']} models (means over samples).")
    return "\n".join(out)


def format_agreement(agreement: dict[str, dict[str, Any]]) -> str:
    parts = []
    for c, d in zip(COLS, DIMENSIONS):
        alpha = agreement[d]["alpha"]
        parts.append(f"{c} " + ("n/a" if math.isnan(alpha) else f"{alpha:.3f}"))
    a0 = agreement[DIMENSIONS[0]]
    why = " (one annotator: agreement is undefined)" if a0["n_annotators"] < 2 else ""
    return (f"Inter-annotator agreement, Krippendorff's α (interval): {', '.join(parts)}; "
            f"{a0['n_annotators']} annotator(s), {a0['n_units']} units rated by 2+{why}")


def format_table3(rows: list[dict[str, Any]], source: str = "") -> str:
    """Markdown in the paper's layout (rater groups as italic header rows)."""
    out = ["| Metric | Emotion | Style | Relevance | n | note |", "|---|---|---|---|---|---|"]
    group = ""
    for r in rows:
        if r["group"] != group and r["group"]:
            out.append(f"| *{r['group']}* | | | | | |")
        group = r["group"]
        vals = " | ".join("-" if math.isnan(r[c]) else f"{r[c]:.2f}" for c in COLS)
        out.append(f"| {r['metric']} | {vals} | {r.get('n_samples', '')} | {r.get('note', '')} |")
    if source:
        out.append(f"\nAnnotations: {source}")
    return "\n".join(out)


def report(
    cfg=None,
    *,
    alignment_dir: str,
    fewshot_dir: str | None = None,
    k_values: list[int] = (0, 5, 10, 15),
    raters: dict[str, Any] | None = None,
    include_selected_rater: bool = True,
    skip_all_zero: bool = False,
    use_cache: bool = True,
    out_dir: str | None = None,
) -> list[dict[str, Any]]:
    """Hydra ``report`` hook (conf/experiment/table3_alignment.yaml): print Table 3, write table3.{md,json}.

    ``raters`` (name -> rater or rater config) are all scored; ``cfg.rater`` is added when selected.
    """
    from hydra.utils import instantiate

    preds, refs, ann_path = load_alignment_set(alignment_dir)
    built = [r if isinstance(r, Rater) else instantiate(r) for r in (raters or {}).values()]
    if cfg is not None and cfg.get("rater") and include_selected_rater:
        built.append(instantiate(cfg.rater))
    unique: list[Rater] = []
    for r in built:  # the selected rater may also be in the list
        if r.name not in {u.name for u in unique}:
            unique.append(r)
    for r in unique:
        r.check_ready()  # e.g. a missing API key, before any work
    fewshot = FewShotPool.from_dir(fewshot_dir) if fewshot_dir else None
    cache = None
    if use_cache and cfg is not None:
        cache = Path(cfg.paths.cache_dir) / "rater_cache.sqlite"
    seed = int(cfg.get("seed", 0)) if cfg is not None else 0
    try:
        rows = alignment_table(preds, refs, ann_path, unique, k_values=tuple(k_values), fewshot=fewshot,
                               cache_path=cache, seed=seed, skip_all_zero=skip_all_zero)  # fmt: skip
    finally:
        for r in unique:
            r.close()
    annotations = load_jsonl(ann_path)
    sources = sorted({a.get("source", "?") for a in annotations})
    agreement = annotator_agreement(annotations)
    text = (format_table3(rows, source="; ".join(sources)) + "\n\n" + format_agreement(agreement)
            + "\n\nRank correlation with the annotations (Kendall τ-b, Spearman ρ):\n"
            + format_correlations(rows))
    print("\nTable 3: average NDCG between automatic metrics and annotations\n" + text)
    if out_dir is None and cfg is not None:
        out_dir = cfg.paths.output_dir
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "table3.md").write_text(text + "\n")
        (Path(out_dir) / "table3.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
        (Path(out_dir) / "agreement.json").write_text(json.dumps(agreement, indent=2, default=str) + "\n")
    return rows


def run_experiment(experiment: str, overrides: list[str]) -> Any:
    """Compose ``evaluate.yaml`` + ``experiment=<experiment>`` + overrides and run its report node."""
    import os
    import sys

    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    root = Path(__file__).resolve().parents[2]
    os.environ.setdefault("PVLLM_ROOT", str(root))
    with initialize_config_dir(config_dir=str(root / "conf"), version_base=None):
        cfg = compose(config_name="evaluate", overrides=[f"experiment={experiment}", *overrides])
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    # partial, then call: passing cfg into instantiate() itself would instantiate every node inside cfg
    return instantiate(cfg.report, _partial_=True)(cfg=cfg)


if __name__ == "__main__":
    import sys

    run_experiment("table3_alignment", sys.argv[1:])
