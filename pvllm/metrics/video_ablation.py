"""Does the video reach the output? Paired statistics of the video ablation (``python -m pvllm.video_test``).

Three measurements, each paired per evaluation sample and reported with a percentile-bootstrap interval
over samples (the number of users beside it: samples of one user are not independent):

(a) log-probability gap: the true comment's mean log-probability per token with its own video minus with
    a mismatched one (:func:`paired_interval` of the per-sample differences);
(b) which video (LiveBot's retrieval direction): the true video ranked among N candidate videos by
    log p(true comment | video, history) (:func:`video_retrieval`), R@1 and MRR against chance;
(c) content accuracy: whether a generation's content words fit the target's video rather than the
    mismatched one (:func:`content_fit`), with the own video minus with the mismatched video.

Content words come from a small word list per label (``data/sample/content_words.json`` for the bundled
sample: one list per source, one per clip; ``docs/data_format.md``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pvllm.metrics.bootstrap import bootstrap_ci
from pvllm.metrics.ranking import chance_levels, expected_metrics, truth_rank_stats


def paired_interval(values: Mapping[str, float], users: Mapping[str, str], *, resamples: int = 2000,
                    seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """Mean of per-sample values (e.g. differences true - mismatched) and its percentile-bootstrap interval
    over SAMPLES (each resample draws samples with replacement); ``n`` samples of ``n_users`` users.
    ``excludes_zero``: the interval lies entirely above or below 0."""
    ci = bootstrap_ci(values, {sid: sid for sid in values}, resamples=resamples, seed=seed,
                      confidence=confidence)
    n = sum(1 for v in values.values() if v is not None and math.isfinite(v))
    lo, hi = ci["lo"], ci["hi"]
    return {"mean": ci["mean"], "lo": lo, "hi": hi, "n": n,
            "n_users": len({users[s] for s, v in values.items() if v is not None and math.isfinite(v)}),
            "excludes_zero": bool(n and (lo > 0 or hi < 0))}


def video_retrieval(items: Sequence[dict], users: Mapping[str, str], **kw: Any) -> dict[str, Any]:
    """(b): ``items`` = {sample_id, scores (one per candidate video), truth_index}. R@1 and MRR (x100, ties
    in expectation as in pvllm.metrics.ranking), chance for N candidates, and intervals of R@1 - chance
    and MRR - chance over samples."""
    ns = {len(it["scores"]) for it in items}
    if len(ns) != 1:
        raise ValueError(f"every sample needs the same number of candidate videos, got {sorted(ns)}")
    n = ns.pop()
    chance = chance_levels(n)
    per = {it["sample_id"]: expected_metrics(*truth_rank_stats(it["scores"], it["truth_index"])) for it in items}
    r1 = {s: 100.0 * m["R@1"] - chance["R@1"] for s, m in per.items()}
    mrr = {s: 100.0 * m["MRR"] - chance["MRR"] for s, m in per.items()}
    return {"n_candidates": n, "chance_R@1": chance["R@1"], "chance_MRR": chance["MRR"],
            "R@1": chance["R@1"] + sum(r1.values()) / len(r1), "MRR": chance["MRR"] + sum(mrr.values()) / len(mrr),
            "R@1_minus_chance": paired_interval(r1, users, **kw), "MRR_minus_chance": paired_interval(mrr, users, **kw)}


def _phrase_re(phrase: str) -> re.Pattern:
    # a word list entry matches as whole words, an optional plural s/es after the last word
    words = [re.escape(w) for w in phrase.casefold().split()]
    return re.compile(r"\b" + r"\s+".join(words) + r"(?:e?s)?\b")


def content_hits(text: str | None, words: Sequence[str]) -> int:
    """How many entries of ``words`` occur in ``text`` (case-insensitive whole words, plural allowed)."""
    if not text:
        return 0
    t = text.casefold()
    return sum(1 for w in words if _phrase_re(w).search(t))


def content_fit(text: str | None, target: Sequence[str], other: Sequence[str]) -> int:
    """1 if ``text`` names more of the target's content words than of the other's, else 0 (ties and no
    content word count as 0). Entries in both lists say nothing about which video and are dropped."""
    both = {w.casefold() for w in target} & {w.casefold() for w in other}
    t = [w for w in target if w.casefold() not in both]
    o = [w for w in other if w.casefold() not in both]
    return int(content_hits(text, t) > content_hits(text, o))
