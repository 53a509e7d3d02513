"""predictions.jsonl rows + references -> scores.jsonl rows and a flat summary (docs/data_format.md)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pvllm.metrics.caption import METRICS as CAPTION_METRICS
from pvllm.metrics.caption import caption_metrics_per_item
from pvllm.metrics.ficl import EXTRACT_PROMPT, FewShotPool, FICLResult, build_ficl_prompt, ficl_score_llm
from pvllm.raters.base import LLMRater, PairRater, Rater
from pvllm.utils.jsonl import write_jsonl

log = logging.getLogger(__name__)

FICL_METRICS = ("FICL-E", "FICL-S", "FICL-R")


EMPTY_OUTPUT = "empty generation"
FAILURE_RULE = ("failed or empty generations are excluded from every mean and counted (scored/requested); "
                "an empty output is a failure for every generator")


def apply_failure_rule(text: str | None, error: str | None, sample_id: str) -> tuple[str | None, str | None]:
    """The one rule for every generator: an empty (or whitespace) output is a failure, recorded with error
    ``empty generation`` and text None, never scored as a 0 (FAILURE_RULE, stated in every table)."""
    if error is None and (text is None or not text.strip()):
        return None, f"{EMPTY_OUTPUT} for {sample_id}"
    return text, error


def is_empty(p: dict) -> bool:
    err = p.get("error")
    return (err is None and not (p.get("text") or "").strip()) or str(err or "").startswith(EMPTY_OUTPUT)


def scorable(p: dict) -> bool:
    """The one rule: a prediction is scored iff it has no error and a non-empty text."""
    return p.get("error") is None and bool((p.get("text") or "").strip())


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
            results = ficl_score_llm(cached.complete, examples, pairs)
            # an unparseable reply is not an answer: never served from the cache again (a fixed judge retries)
            bad = [i for i, r in enumerate(results) if r.status in ("parse_failed", "out_of_range")]
            if bad:
                cached.evict([build_ficl_prompt(examples, *pairs[i]) for i in bad]
                             + [EXTRACT_PROMPT + (results[i].reply or "") for i in bad])
            return results
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
    tokenize: str = "coco",
) -> dict[str, Any]:
    """Caption metrics (and FICL-Score when a rater is given) of predictions.jsonl rows.

    ``tokenize``: ``coco`` (coco-caption exact, the default) or ``cjk`` (CJK words segmented first,
    pvllm.metrics.caption.TOKENIZATIONS); the summary records which (``caption_tokenize``).

    One rule for every generator (``pvllm.evaluation.FAILURE_RULE``): failed generations (``error`` set)
    and empty outputs are excluded from every mean and counted in ``n_generation_failed`` (empty ones also
    in ``n_empty_generations``); ``n_scored``/``n_requested`` say how many each mean covers. Few-shot
    sample ids are excluded from FICL and counted. All values x100.
    """
    check_ids(predictions, references)
    if isinstance(fewshot, (str, Path)):
        fewshot = FewShotPool.from_dir(fewshot)
    generators = sorted({p.get("generator", "?") for p in predictions})
    ok = [p for p in predictions if scorable(p)]
    failed = [p for p in predictions if not scorable(p)]
    for p in failed:
        log.warning("generation failed for %s: %s", p["sample_id"], p.get("error") or "empty generation")
    n_empty = sum(1 for p in failed if is_empty(p))
    if n_empty:
        log.warning("%d generation(s) are empty: counted as failed, not scored", n_empty)

    rows: list[dict[str, Any]] = []
    notes: dict[str, int] = {}
    for p in predictions:
        for note in p.get("notes") or []:
            notes[note] = notes.get(note, 0) + 1
    summary: dict[str, Any] = {
        "n": len(predictions),
        "n_requested": len(predictions),
        "n_scored": len(ok),
        "n_generation_failed": len(failed),
        "n_empty_generations": n_empty,
        "failure_rule": FAILURE_RULE,
        "caption_tokenize": tokenize,
        "generator": ",".join(generators),
        **{f"n_{k}": v for k, v in sorted(notes.items())},
    }
    if ok:
        corpus, per_item = caption_metrics_per_item(
            {p["sample_id"]: references[p["sample_id"]] for p in ok}, {p["sample_id"]: p["text"] for p in ok},
            tokenize=tokenize,
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
        n_reasked = sum(r.reasked for r in results)
        summary.update(
            {
                "ficl_n_scored": n_ok,
                "ficl_n_requested": len(results),
                "ficl_n_snapped": sum(r.snapped for r in results if r.status == "ok"),
                # the judge's own format compliance, before the re-ask (the paper's 99.2%)
                "ficl_first_pass_parse_rate": (n_replied - n_reasked) / n_replied if n_replied else math.nan,
                "ficl_n_ok": n_ok,
                "ficl_n_failed": len(results) - n_ok,
                "ficl_n_parse_failed": sum(r.status == "parse_failed" for r in results),
                "ficl_n_out_of_range": sum(r.status == "out_of_range" for r in results),
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
                    if res.raw_values is not None:  # out_of_range: the judge's number, as it gave it
                        rows[-1]["judge_value"] = res.raw_values[("emotion", "style", "relevance").index(dim)]
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
