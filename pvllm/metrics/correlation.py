"""Judge validity beside Table 3's NDCG: rank correlations with the human scores and the agreement
between the human annotators themselves (the ceiling any metric can reach).

- sample level: per sample, Kendall τ (tau-b) / Spearman ρ between a metric's scores of the models and
  their human scores, averaged over samples (the same per-sample view NDCG takes); samples where either
  side ties every model (the correlation is undefined) are left out and counted;
- system level: τ / ρ between each model's mean metric score and its mean human score (n = models);
- agreement: Krippendorff's α (interval) per dimension over (sample, model) units, one value per
  annotator (``pvllm.metrics.agreement``, shared with the annotation tool); n/a with one annotator.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import kendalltau, spearmanr

from pvllm.metrics.agreement import krippendorff_alpha_interval
from pvllm.metrics.ficl import DIMENSIONS, latest_annotations

Key = tuple[str, str]  # (sample_id, generator)


def _corr(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan, math.nan
    return float(kendalltau(x, y).statistic), float(spearmanr(x, y).statistic)


def rank_correlations(metric: Mapping[Key, float], human: Mapping[Key, float]) -> dict[str, Any]:
    """tau/rho at sample level (mean over samples) and system level, with the counts behind them."""
    keys = [k for k in human if k in metric and metric[k] is not None and math.isfinite(float(metric[k]))]
    by_sample: dict[str, list[Key]] = defaultdict(list)
    for k in keys:
        by_sample[k[0]].append(k)
    taus, rhos, undefined = [], [], 0
    for sid in sorted(by_sample):
        ks = sorted(by_sample[sid])
        t, r = _corr([float(metric[k]) for k in ks], [float(human[k]) for k in ks])
        if math.isnan(t):
            undefined += 1
            continue
        taus.append(t)
        rhos.append(r)
    m_sys: dict[str, list[float]] = defaultdict(list)
    h_sys: dict[str, list[float]] = defaultdict(list)
    for k in keys:
        m_sys[k[1]].append(float(metric[k]))
        h_sys[k[1]].append(float(human[k]))
    gens = sorted(m_sys)
    st, sr = _corr([float(np.mean(m_sys[g])) for g in gens], [float(np.mean(h_sys[g])) for g in gens])
    return {
        "tau_sample": float(np.mean(taus)) if taus else math.nan,
        "rho_sample": float(np.mean(rhos)) if rhos else math.nan,
        "n_samples_corr": len(taus),
        "n_samples_undefined": undefined,
        "tau_system": st,
        "rho_system": sr,
        "n_systems": len(gens),
    }


def annotator_agreement(annotations: Sequence[dict]) -> dict[str, dict[str, Any]]:
    """dimension -> {alpha, n_annotators, n_units}: Krippendorff's α (interval) between annotators."""
    rows = latest_annotations(annotations)
    annotators = sorted({str(a.get("annotator", "")) for a in rows})
    out = {}
    for d in DIMENSIONS:
        units: dict[Key, dict[str, float]] = defaultdict(dict)
        for a in rows:
            units[(a["sample_id"], a["generator"])][str(a.get("annotator", ""))] = a.get(d)
        out[d] = {
            "alpha": krippendorff_alpha_interval(units),
            "n_annotators": len(annotators),
            "n_units": sum(1 for u in units.values() if len(u) >= 2),
        }
    return out
