"""predictions.jsonl rows + references -> scores.jsonl rows and a flat summary (DESIGN.md)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pvllm.metrics.caption import METRICS as CAPTION_METRICS
from pvllm.metrics.caption import caption_metrics_per_item
from pvllm.metrics.ficl import FewShotPool, FICLResult, ficl_score_llm
from pvllm.raters.base import LLMRater, PairRater, Rater
from pvllm.utils.jsonl import write_jsonl

log = logging.getLogger(__name__)

FICL_METRICS = ("FICL-E", "FICL-S", "FICL-R")


def check_ids(predictions: list[dict], references: dict[str, str]) -> None:
    """Predictions and references must cover the same sample ids, each prediction once."""
    seen: set[str] = set()
    dup = []
    for p in predictions:
        sid = p["sample_id"]
        if sid in seen:
            dup.append(sid)
        seen.add(sid)
    missing = [sid for sid in seen if sid not in references]  # predicted, no reference
    extra = [sid for sid in references if sid not in seen]  # reference, no prediction
    if dup or missing or extra:
        raise ValueError(
            "predictions do not match references: "
            f"{len(missing)} prediction ids missing from references (first: {sorted(missing)[:5]}), "
            f"{len(extra)} reference ids without a prediction (first: {sorted(extra)[:5]}), "
            f"{len(dup)} duplicated prediction ids (first: {dup[:5]})"
        )


def rater_label(rater: Rater, k_shots: int) -> str:
    """backend + model + K, as written in scores.jsonl and the summary."""
    if isinstance(rater, PairRater):
        return rater.name  # a pair rater reads no few-shot examples
    return f"{rater.name} K={k_shots}x3"


def ficl_results(
    rater: Rater,
    pairs: list[tuple[str, str]],
    *,
    fewshot: FewShotPool | None,
    k_shots: int,
    seed: int = 0,
    cache_path: str | Path | None = None,
) -> list[FICLResult]:
    """FICL-Score of each (generated, ground truth) pair with any rater (LLM through the cache)."""
    if isinstance(rater, PairRater):
        out = []
        for e, s, r in rater.score_pairs(pairs):
            out.append(FICLResult(e, s, r, "ok"))
        return out
    if not isinstance(rater, LLMRater):
        raise TypeError(f"rater {type(rater).__name__} is neither an LLMRater nor a PairRater")
    examples = []
    if k_shots > 0:
        if fewshot is None:
            raise ValueError(
                f"FICL with K={k_shots} needs a few-shot pool (fewshot=...); use K=0 without one"
            )
        examples = fewshot.select(k_shots, seed=seed)
    complete: Callable[[list[str]], list[str | None]] = rater.complete
    if cache_path is not None:
        from pvllm.raters.cache import CachedRater

        cached = CachedRater(rater, cache_path)
        try:
            return ficl_score_llm(cached.complete, examples, pairs)
        finally:
            cached.close()
    return ficl_score_llm(complete, examples, pairs)


def score_predictions(
    predictions: list[dict],
    references: dict[str, str],
    *,
    rater: Rater | None = None,
    fewshot: FewShotPool | str | Path | None = None,
    k_shots: int = 5,
    scores_path: str | Path | None = None,
    cache_path: str | Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Caption metrics (and FICL-Score when a rater is given) of predictions.jsonl rows.

    Failed generations (``error`` set / ``text`` None) are excluded from every mean and counted in
    ``n_generation_failed``. Few-shot sample ids are excluded from FICL and counted. All values x100.
    """
    check_ids(predictions, references)
    if isinstance(fewshot, (str, Path)):
        fewshot = FewShotPool.from_dir(fewshot)
    generators = sorted({p.get("generator", "?") for p in predictions})
    ok = [p for p in predictions if p.get("error") is None and p.get("text") is not None]
    failed = [p for p in predictions if not (p.get("error") is None and p.get("text") is not None)]
    for p in failed:
        log.warning("generation failed for %s: %s", p["sample_id"], p.get("error") or "text is None")

    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {
        "n": len(predictions),
        "n_generation_failed": len(failed),
        "generator": ",".join(generators),
    }
    if ok:
        corpus, per_item = caption_metrics_per_item(
            {p["sample_id"]: references[p["sample_id"]] for p in ok}, {p["sample_id"]: p["text"] for p in ok}
        )
    else:
        corpus, per_item = {m: math.nan for m in CAPTION_METRICS}, {}
    summary.update(corpus)
    for p in predictions:
        for m in CAPTION_METRICS:
            item = per_item.get(p["sample_id"])
            rows.append(
                _row(p, m, item[m] if item else None, None, "ok" if item else "error", p.get("error"))
            )

    if rater is not None:
        label = rater_label(rater, k_shots)
        fewshot_ids = fewshot.sample_ids if fewshot is not None and isinstance(rater, LLMRater) else set()
        scored = [p for p in ok if p["sample_id"] not in fewshot_ids]
        excluded = len(ok) - len(scored)
        if excluded:
            log.warning("%d predictions are few-shot samples: excluded from FICL", excluded)
        results = ficl_results(
            rater,
            [(p["text"], references[p["sample_id"]]) for p in scored],
            fewshot=fewshot,
            k_shots=k_shots,
            seed=seed,
            cache_path=cache_path,
        )
        n_ok = sum(r.status == "ok" for r in results)
        for dim, metric in zip(("emotion", "style", "relevance"), FICL_METRICS):
            vals = [getattr(r, dim) for r in results if r.status == "ok"]
            summary[metric] = 100.0 * sum(vals) / len(vals) if vals else math.nan
        n_replied = sum(r.status != "error" for r in results)
        summary.update(
            {
                "ficl_n_ok": n_ok,
                "ficl_n_failed": len(results) - n_ok,
                "ficl_n_parse_failed": sum(r.status == "parse_failed" for r in results),
                "ficl_n_request_failed": sum(r.status == "error" for r in results),
                "ficl_n_reasked": sum(r.reasked for r in results),
                "ficl_n_excluded_fewshot": excluded,
                # share of judged items whose scores were parsed (after the re-ask), as in the paper
                "ficl_parse_success_rate": n_ok / n_replied if n_replied else math.nan,
                "rater": label,
            }
        )
        by_id = dict(zip((p["sample_id"] for p in scored), results))
        for p in predictions:
            res = by_id.get(p["sample_id"])
            for dim, metric in zip(("emotion", "style", "relevance"), FICL_METRICS):
                if res is None:
                    if p["sample_id"] in fewshot_ids and p in ok:
                        continue  # a few-shot sample is not scored at all
                    rows.append(_row(p, metric, None, label, "error", p.get("error")))
                else:
                    v = getattr(res, dim)
                    rows.append(
                        _row(p, metric, None if v is None else 100.0 * v, label, res.status, res.error)
                    )
    if scores_path is not None:
        write_jsonl(scores_path, rows)
    return summary


def _row(
    p: dict, metric: str, value: float | None, rater: str | None, status: str, error: str | None
) -> dict:
    row = {
        "sample_id": p["sample_id"],
        "generator": p.get("generator"),
        "metric": metric,
        "value": value,
        "rater": rater,
        "status": status,
    }
    if error:
        row["error"] = error
    return row
