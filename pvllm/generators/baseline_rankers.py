"""Baseline rankers: what a ten-line scorer finds in the same history, with no training (issue 22).

Each ranker scores the candidates of one ranking sample (pvllm.metrics.ranking) from the user's history
texts alone, higher = more likely the user's comment; ties are resolved in expectation by the ranking
metrics, so a scorer that cannot tell candidates apart (e.g. any of them with no history) gets exactly
chance. Registry ``BASELINE_RANKERS``; ``generator=baseline_ranker generator.ranker=NAME`` (conf) runs one
through ``evaluate.py stage=rank`` beside the models, on the same candidates file and histories.

- ``random``: a seeded random score per (sample, candidate): chance in expectation.
- ``length``: minus |characters of the candidate - median characters of the history comments|.
- ``tfidf``: cosine of character 1-3-gram TF-IDF vectors of the candidate and of the history (the
  n-gram counts of the history comments summed); idf over the sample's candidates and history comments.
- ``bm25``: Okapi BM25 of the candidate for the history's character 1-3-grams, over the sample's candidates.
- ``popularity``: how often the candidate's text (normalized) occurs among the training-split comments
  (independent of the history: the generic-line prior).
"""

from __future__ import annotations

import random
import statistics
from collections import Counter
from collections.abc import Sequence

from pvllm.utils.registry import Registry
from pvllm.utils.textsim import bm25, char_ngrams, idf, normalize, tfidf_cosine

BASELINE_RANKERS = Registry("baseline ranker")


class BaselineRanker:
    registry_name = "?"
    needs_training_texts = False

    def __init__(self, seed: int = 0):
        self.seed = seed

    def score(self, sample_id: str, history: Sequence[str], candidates: Sequence[str]) -> list[float]:
        raise NotImplementedError

    def fit(self, training_texts: Sequence[str]) -> None:  # noqa: B027 - only popularity needs it
        """Read the training comments (popularity)."""


@BASELINE_RANKERS.register("random")
class RandomRanker(BaselineRanker):
    def score(self, sample_id, history, candidates):
        rng = random.Random(f"random-ranker:{self.seed}:{sample_id}")
        return [rng.random() for _ in candidates]


@BASELINE_RANKERS.register("length")
class LengthRanker(BaselineRanker):
    def score(self, sample_id, history, candidates):
        if not history:
            return [0.0] * len(candidates)
        med = statistics.median(len(normalize(h)) for h in history)
        return [-abs(len(normalize(c)) - med) for c in candidates]


def _history_grams(history: Sequence[str]) -> Counter:
    q: Counter = Counter()
    for h in history:
        q.update(char_ngrams(h))
    return q


@BASELINE_RANKERS.register("tfidf")
class TfidfRanker(BaselineRanker):
    def score(self, sample_id, history, candidates):
        cand = [char_ngrams(c) for c in candidates]
        hist = [char_ngrams(h) for h in history]
        w = idf(cand + hist)
        return tfidf_cosine(_history_grams(history), cand, w)


@BASELINE_RANKERS.register("bm25")
class Bm25Ranker(BaselineRanker):
    def score(self, sample_id, history, candidates):
        return bm25(_history_grams(history), [char_ngrams(c) for c in candidates])


@BASELINE_RANKERS.register("popularity")
class PopularityRanker(BaselineRanker):
    needs_training_texts = True

    def __init__(self, seed: int = 0):
        super().__init__(seed)
        self.counts: Counter | None = None

    def fit(self, training_texts):
        self.counts = Counter(normalize(t) for t in training_texts)

    def score(self, sample_id, history, candidates):
        if self.counts is None:
            raise RuntimeError("popularity ranker: fit() it on the training comments first")
        return [float(self.counts.get(normalize(c), 0)) for c in candidates]


def make_ranker(name: str, seed: int = 0, training_texts: Sequence[str] | None = None) -> BaselineRanker:
    """The ranker ``name`` (unknown names list the valid ones), fitted on ``training_texts`` if it needs them."""
    r = BASELINE_RANKERS.get(name)(seed=seed)
    if r.needs_training_texts:
        if training_texts is None:
            raise ValueError(f"baseline ranker {name!r} needs the training comments")
        r.fit(training_texts)
    return r
