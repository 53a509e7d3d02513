"""Table 3: how well an automatic metric ranks models like humans do (average per-sample NDCG, §5.1).

For each sample, the models' scores under an automatic metric are compared with the human scores of
the same models by ``sklearn.metrics.ndcg_score`` (human scores = relevance, metric = ranking); the
mean over samples is reported, per dimension (emotion, style, relevance).

Edge cases (sklearn's definitions, kept):
- a sample whose human scores are all 0 has no relevant item: NDCG = 0 for every metric. Such samples
  are kept by default (as the paper averages over all samples) and counted in ``n_all_zero_human``;
  ``skip_all_zero=True`` drops them instead.
- ties in the metric's scores are averaged (sklearn ``ignore_ties=False``): a metric that gives every
  model the same score gets the mean gain over all orders, not the best case;
- equal human scores for all models give NDCG = 1 whatever the metric (every order is ideal);
- samples with fewer than 2 models scored by both sides are skipped and counted.
With 3 models the floor is high: ``random_baseline`` reports the expected NDCG of random scores
(~0.89 with 3 models), which belongs next to Table 3.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import ndcg_score

from pvllm.metrics.ficl import DIMENSIONS, average_annotations
from pvllm.utils.jsonl import load_jsonl

Key = tuple[str, str]  # (sample_id, generator)


@dataclass
class Alignment:
    mean: float  # average NDCG over the samples used
    n_samples: int
    n_skipped: int  # samples with < 2 models on both sides
    n_all_zero_human: int


def human_scores(annotations_path: str) -> dict[str, dict[Key, float]]:
    """dimension -> (sample_id, generator) -> mean over annotators (annotations.jsonl, data_format.md)."""
    means = average_annotations(load_jsonl(annotations_path))
    return {d: {k: v[i] for k, v in means.items()} for i, d in enumerate(DIMENSIONS)}


def _by_sample(scores: dict[Key, float]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for (sid, gen), v in scores.items():
        out[sid][gen] = v
    return out


def ndcg_alignment(
    metric: dict[Key, float], human: dict[Key, float], skip_all_zero: bool = False
) -> Alignment:
    """Average over samples of ndcg_score(human scores of the models, metric scores of the models)."""
    m_by, h_by = _by_sample(metric), _by_sample(human)
    values, skipped, zero = [], 0, 0
    for sid in sorted(h_by):
        gens = sorted(g for g in h_by[sid] if g in m_by.get(sid, {}) and _finite(m_by[sid][g]))
        if len(gens) < 2:
            skipped += 1
            continue
        y_true = np.array([[h_by[sid][g] for g in gens]], dtype=float)
        y_score = np.array([[m_by[sid][g] for g in gens]], dtype=float)
        if not y_true.any():
            zero += 1
            if skip_all_zero:
                continue
        values.append(float(ndcg_score(y_true, y_score)))
    mean = float(np.mean(values)) if values else math.nan
    return Alignment(mean, len(values), skipped, zero)


def random_baseline(human: dict[Key, float], skip_all_zero: bool = False) -> float:
    """Expected NDCG of scores drawn at random (no ties): exact average over all orders of the models."""
    values = []
    for _sid, row in sorted(_by_sample(human).items()):
        gens = sorted(row)
        if len(gens) < 2:
            continue
        y_true = np.array([[row[g] for g in gens]], dtype=float)
        if not y_true.any() and skip_all_zero:
            continue
        if len(gens) > 7:
            raise ValueError(f"random_baseline enumerates orders; {len(gens)} models is too many")
        perms = list(itertools.permutations(range(len(gens))))
        values.append(float(np.mean([ndcg_score(y_true, np.array([p], dtype=float)) for p in perms])))
    return float(np.mean(values)) if values else math.nan


def _finite(x) -> bool:
    return x is not None and math.isfinite(float(x))
