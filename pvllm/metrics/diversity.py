"""Guards against degenerate "personalization": copy rates, diversity and length of a run's generations.

- ``copy_history``: share (x100) of generations that copy one of the sample's history comments verbatim
  or nearly (normalized edit similarity >= threshold, default 0.9);
- ``copy_title``: share (x100) of generations that copy the target video's title (samples whose video
  has no title are not counted; ``n/a`` when none has one);
- ``distinct-1/2``: distinct uni/bigrams over all tokens of the run (x100, Li et al. 2016);
- ``mean_len`` / ``ref_mean_len``: mean tokens per generation and per reference.
Texts are NFKC-normalized, case-folded and space-collapsed; tokens are words, single CJK characters and
single symbols (emoji, punctuation), so Japanese comments without spaces are not one "word".
Failed generations are left out (they are counted elsewhere), never scored.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

_TOKEN = re.compile(
    r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uac00-\ud7af]|[^\W\u3040-\u30ff\u3400-\u9fff]+|[^\w\s]"
)


def normalize(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(normalize(text))


def levenshtein(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def edit_similarity(a: str, b: str) -> float:
    """1 - Levenshtein(a, b) / max(len) on normalized text (1 = identical, 0 = nothing in common)."""
    a, b = normalize(a), normalize(b)
    if not a and not b:
        return 1.0
    return 1.0 - levenshtein(a, b) / max(len(a), len(b))


def is_copy(text: str, sources: Sequence[str], threshold: float) -> bool:
    return any(edit_similarity(text, s) >= threshold for s in sources if s)


def distinct_n(texts: Sequence[str], n: int) -> float:
    grams = [tuple(t[i : i + n]) for t in map(tokens, texts) for i in range(len(t) - n + 1)]
    return 100.0 * len(set(grams)) / len(grams) if grams else float("nan")


def copy_diversity(
    predictions: Sequence[dict], titles: dict[str, str | None] | None = None, threshold: float = 0.9
) -> dict[str, Any]:
    """The run's copy/diversity summary from predictions.jsonl rows (``text``, ``history``, ``reference``,
    ``video_id``); ``titles`` maps video_id -> title (None = no title)."""
    ok = [p for p in predictions if p.get("error") is None and p.get("text") is not None]
    texts = [p["text"] for p in ok]
    with_hist = [p for p in ok if p.get("history")]
    titled = [p for p in ok if (titles or {}).get(p.get("video_id"))]
    out: dict[str, Any] = {
        "copy_history": (
            100.0 * sum(is_copy(p["text"], p["history"], threshold) for p in with_hist) / len(with_hist)
            if with_hist
            else None
        ),
        "copy_title": (
            100.0 * sum(is_copy(p["text"], [titles[p["video_id"]]], threshold) for p in titled) / len(titled)
            if titled
            else None
        ),
        "distinct-1": distinct_n(texts, 1) if texts else None,
        "distinct-2": distinct_n(texts, 2) if texts else None,
        "mean_len": sum(len(tokens(t)) for t in texts) / len(texts) if texts else None,
        "ref_mean_len": sum(len(tokens(p["reference"])) for p in ok) / len(ok) if ok else None,
        "copy_threshold": threshold,
        "copy_n_with_history": len(with_hist),
        "copy_n_with_title": len(titled),
    }
    return out


def per_item_copy(predictions: Sequence[dict], threshold: float = 0.9) -> dict[str, float]:
    """sample_id -> 100 if the generation copies a history comment else 0 (samples with a history only)."""
    return {
        p["sample_id"]: 100.0 * is_copy(p["text"], p["history"], threshold)
        for p in predictions
        if p.get("error") is None and p.get("text") is not None and p.get("history")
    }
