"""Lexical similarity of short texts: character n-gram TF-IDF cosine and Okapi BM25.

Character n-grams need no tokenizer, so they work on Japanese danmaku and English alike. Used by the
baseline rankers (pvllm.generators.baseline_rankers), the retrieved training histories (pvllm.data.histories)
and the LiveBot candidates (pvllm.metrics.ranking). Pure Python: the texts are short and few per call.
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence


def normalize(text: str) -> str:
    """NFKC, casefolded, whitespace collapsed (fullwidth and halfwidth forms compare equal)."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def char_ngrams(text: str, n_min: int = 1, n_max: int = 3) -> Counter:
    """Counts of the character n-grams (n_min..n_max) of the normalized text."""
    t = normalize(text)
    return Counter(t[i: i + n] for n in range(n_min, n_max + 1) for i in range(len(t) - n + 1))


def idf(docs: Iterable[Counter]) -> dict[str, float]:
    """Smoothed idf (scikit-learn's): ln((1 + N) / (1 + df)) + 1."""
    df: Counter = Counter()
    n = 0
    for d in docs:
        n += 1
        df.update(d.keys())
    return {g: math.log((1 + n) / (1 + c)) + 1.0 for g, c in df.items()}


def tfidf_cosine(query: Counter, docs: Sequence[Counter], weights: dict[str, float]) -> list[float]:
    """Cosine of the tf-idf vectors of ``query`` and each of ``docs`` (0 for an empty vector)."""
    def vec(c: Counter) -> dict[str, float]:
        return {g: tf * weights.get(g, 0.0) for g, tf in c.items()}

    q = vec(query)
    qn = math.sqrt(sum(v * v for v in q.values()))
    out = []
    for d in docs:
        v = vec(d)
        dn = math.sqrt(sum(x * x for x in v.values()))
        dot = sum(x * q.get(g, 0.0) for g, x in v.items())
        out.append(dot / (qn * dn) if qn and dn else 0.0)
    return out


def bm25(query: Counter, docs: Sequence[Counter], k1: float = 1.2, b: float = 0.75) -> list[float]:
    """Okapi BM25 of each of ``docs`` for ``query`` (idf ln(1 + (N - df + 0.5) / (df + 0.5)), over ``docs``)."""
    n = len(docs)
    if n == 0:
        return []
    avgdl = sum(sum(d.values()) for d in docs) / n or 1.0
    df: Counter = Counter()
    for d in docs:
        df.update(d.keys())
    out = []
    for d in docs:
        dl = sum(d.values())
        s = 0.0
        for g in query:
            tf = d.get(g, 0)
            if tf:
                w = math.log(1 + (n - df[g] + 0.5) / (df[g] + 0.5))
                s += w * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))
        out.append(s)
    return out
