"""Uncertainty over users: percentile-bootstrap intervals and paired tests between two runs.

Users are the resampling unit (a user's samples share a style, so they are not independent): each
resample draws users with replacement and averages the per-item values of their samples. Intervals
are of the mean of per-item scores (scores.jsonl); for corpus-level metrics (BLEU-4, CIDEr) that mean
differs from the corpus score in summary.json, so the interval is reported with its own point estimate.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _grouped(values: Mapping[str, float], users: Mapping[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Per user: (sum of values, number of values), users sorted (order-independent draws)."""
    acc: dict[str, list[float]] = defaultdict(list)
    for sid, v in values.items():
        if v is not None and math.isfinite(v):
            acc[users[sid]].append(float(v))
    keys = sorted(acc)
    return np.array([sum(acc[u]) for u in keys]), np.array([len(acc[u]) for u in keys], dtype=float)


def bootstrap_ci(
    values: Mapping[str, float],
    users: Mapping[str, str],
    *,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, float]:
    """Mean of the per-item ``values`` (sample_id -> value) and its percentile interval over users."""
    sums, counts = _grouped(values, users)
    if counts.sum() == 0:
        return {"mean": math.nan, "lo": math.nan, "hi": math.nan, "n_users": 0}
    finite = [float(v) for v in values.values() if v is not None and math.isfinite(v)]
    mean = float(sums.sum() / counts.sum())
    if max(finite) == min(finite):  # a constant: no uncertainty (and no float noise from resampling)
        return {"mean": finite[0], "lo": finite[0], "hi": finite[0], "n_users": int(len(sums))}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(sums), size=(resamples, len(sums)))
    means = sums[idx].sum(1) / counts[idx].sum(1)
    a = (1 - confidence) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return {"mean": mean, "lo": float(lo), "hi": float(hi), "n_users": int(len(sums))}


def per_item_scores(scores_rows: Sequence[dict]) -> dict[str, dict[str, float]]:
    """metric -> sample_id -> value from scores.jsonl rows with status ok."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for r in scores_rows:
        if r.get("status") == "ok" and r.get("value") is not None:
            out[r["metric"]][r["sample_id"]] = float(r["value"])
    return dict(out)


def run_intervals(
    per_item: Mapping[str, Mapping[str, float]],
    users: Mapping[str, str],
    *,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, dict[str, float]]:
    """metric -> {mean, lo, hi, n_users} for every metric of a run."""
    return {
        m: bootstrap_ci(v, users, resamples=resamples, seed=seed, confidence=confidence)
        for m, v in sorted(per_item.items())
    }


def paired_test(
    a: Mapping[str, float],
    b: Mapping[str, float],
    users: Mapping[str, str],
    *,
    resamples: int = 10000,
    seed: int = 0,
    confidence: float = 0.95,
    exact_max_users: int = 16,
) -> dict[str, Any]:
    """B - A on the sample ids both runs scored: mean difference, its bootstrap interval over users, and
    the two-sided p-value of a paired permutation test (each user's differences flip sign together):
    exact (all 2^users sign patterns) up to ``exact_max_users`` users, else ``resamples`` random ones."""
    shared = sorted(set(a) & set(b))
    diffs = {s: b[s] - a[s] for s in shared if math.isfinite(a[s]) and math.isfinite(b[s])}
    ci = bootstrap_ci(diffs, users, resamples=resamples, seed=seed, confidence=confidence)
    sums, counts = _grouped(diffs, users)
    p, method = math.nan, None
    if counts.sum():
        observed = abs(sums.sum() / counts.sum())
        if len(sums) <= exact_max_users:  # every one of the 2^users sign patterns: the exact p-value
            import itertools

            signs = np.array(list(itertools.product([1.0, -1.0], repeat=len(sums))))
            perm = np.abs((signs * sums).sum(1) / counts.sum())
            p, method = float(np.mean(perm >= observed - 1e-12)), "exact"
        else:
            rng = np.random.default_rng(seed + 1)
            signs = rng.choice([-1.0, 1.0], size=(resamples, len(sums)))
            perm = np.abs((signs * sums).sum(1) / counts.sum())
            p, method = float((1 + np.sum(perm >= observed - 1e-12)) / (resamples + 1)), "monte-carlo"
    return {
        "n_shared": len(shared),
        "n_users": ci["n_users"],
        "mean_A": _mean(a, diffs),
        "mean_B": _mean(b, diffs),
        "diff": ci["mean"],
        "lo": ci["lo"],
        "hi": ci["hi"],
        "p_permutation": p,
        "p_method": method,
    }


def _mean(x: Mapping[str, float], ids: Mapping[str, float]) -> float:
    return float(np.mean([x[s] for s in ids])) if ids else math.nan
