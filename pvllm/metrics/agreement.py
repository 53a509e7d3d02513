"""Agreement between raters: Krippendorff's alpha (interval scale), shared by Table 3 and the
annotation tool's admin view, so both report the same number."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def krippendorff_alpha_interval(units: Mapping[object, Mapping[object, float | None]]) -> float:
    """Krippendorff's alpha, interval metric (squared differences), from unit -> rater -> value.

    Missing values (absent or None) are allowed; units with fewer than two values are not pairable
    and are left out (Krippendorff 2011, "Computing Krippendorff's Alpha-Reliability"). Returns
    ``nan`` when fewer than two pairable values exist or all pairable values are equal (D_e = 0),
    where alpha is undefined.
    """
    groups = []
    for ratings in units.values():
        vals = [float(v) for v in ratings.values() if v is not None and not np.isnan(float(v))]
        if len(vals) >= 2:
            groups.append(np.asarray(vals, dtype=float))
    if not groups:
        return float("nan")
    pooled = np.concatenate(groups)
    n = pooled.size
    # observed disagreement: within-unit ordered pairs, each unit weighted by 1 / (m_u - 1)
    d_o = sum(((g[:, None] - g[None, :]) ** 2).sum() / (g.size - 1) for g in groups) / n
    # expected disagreement: all ordered pairs of pooled pairable values
    d_e = ((pooled[:, None] - pooled[None, :]) ** 2).sum() / (n * (n - 1))
    if d_e == 0:
        return float("nan")
    return float(1.0 - d_o / d_e)
