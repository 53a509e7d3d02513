"""A character/word-overlap rater: the honest floor of Table 3 (no model at all).

On a small hand-labelled set, word overlap and difflib's ratio tracked human similarity better than
either small local LLM judge (see conf/rater/lexical.yaml), so this floor is worth reporting beside the LLM raters.
"""

from __future__ import annotations

import difflib
import math
import re
import unicodedata
from typing import Any

from pvllm.raters.base import RATERS, PairRater, similarity_to_rubric

_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def word_f1(a: str, b: str) -> float:
    """F1 of the word multisets (SQuAD-style token overlap)."""
    wa, wb = words(a), words(b)
    if not wa or not wb:
        return float(wa == wb)
    common = sum(min(wa.count(w), wb.count(w)) for w in set(wa))
    if common == 0:
        return 0.0
    p, r = common / len(wa), common / len(wb)
    return 2 * p * r / (p + r)


def char_ratio(a: str, b: str) -> float:
    """difflib's ratio on lowercased characters (punctuation and emoji included: they carry tone)."""
    return difflib.SequenceMatcher(None, a.lower(), b.lower(), autojunk=False).ratio()


def style_features(text: str) -> list[float]:
    """Surface style, each in [0, 1]: length, exclamations, questions, emoji/symbols, capitals, digits."""
    n = max(len(text), 1)
    letters = [c for c in text if c.isalpha()]
    return [
        min(math.log1p(len(words(text))) / math.log1p(60), 1.0),
        min(text.count("!") / 3, 1.0),
        min(text.count("?") / 2, 1.0),
        min(sum(unicodedata.category(c) in ("So", "Sk") for c in text) / 3, 1.0),
        sum(c.isupper() for c in letters) / max(len(letters), 1),
        min(sum(c.isdigit() for c in text) / n * 10, 1.0),
    ]


def style_similarity(a: str, b: str) -> float:
    fa, fb = style_features(a), style_features(b)
    return 1.0 - sum(abs(x - y) for x, y in zip(fa, fb)) / len(fa)


@RATERS.register("lexical")
class LexicalRater(PairRater):
    """Emotion ~ character similarity, style ~ surface-style features, relevance ~ word-overlap F1."""

    def __init__(
        self,
        emotion_thresholds: list[float] = (0.2, 0.35, 0.5, 0.8),
        style_thresholds: list[float] = (0.6, 0.75, 0.85, 0.95),
        relevance_thresholds: list[float] = (0.05, 0.2, 0.4, 0.7),
    ):
        self.thresholds = {
            "emotion": list(emotion_thresholds),
            "style": list(style_thresholds),
            "relevance": list(relevance_thresholds),
        }
        for t in self.thresholds.values():
            similarity_to_rubric(0.0, t)  # validate now, not mid-run

    @property
    def name(self) -> str:
        return "lexical/char-ratio+style-features+word-f1"

    @property
    def params(self) -> dict[str, Any]:
        return {"thresholds": self.thresholds}

    def similarities(self, generated: str, truth: str) -> tuple[float, float, float]:
        return char_ratio(generated, truth), style_similarity(generated, truth), word_f1(generated, truth)

    def score_pairs(self, pairs: list[tuple[str, str]]) -> list[tuple[float, float, float]]:
        out = []
        for g, t in pairs:
            e, s, r = self.similarities(g, t)
            out.append(
                (
                    similarity_to_rubric(e, self.thresholds["emotion"]),
                    similarity_to_rubric(s, self.thresholds["style"]),
                    similarity_to_rubric(r, self.thresholds["relevance"]),
                )
            )
        return out
