"""User-level train/val/test split (paper: 60/15/25), seeded: no user appears in two splits."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable

SPLIT_NAMES = ("train", "val", "test")


def split_sizes(n: int, ratios: tuple[float, float, float]) -> tuple[int, int, int]:
    """Largest-remainder rounding, so sizes sum to n and each is within 1 of ratio * n."""
    if abs(sum(ratios) - 1.0) > 1e-9 or any(r < 0 for r in ratios):
        raise ValueError(f"split ratios must be >= 0 and sum to 1, got {ratios}")
    exact = [r * n for r in ratios]
    sizes = [math.floor(x) for x in exact]
    order = sorted(range(3), key=lambda i: (-(exact[i] - sizes[i]), i))
    for i in order[: n - sum(sizes)]:
        sizes[i] += 1
    return sizes[0], sizes[1], sizes[2]


def split_users(
    user_ids: Iterable[str], ratios: tuple[float, float, float] = (0.6, 0.15, 0.25), seed: int = 0
) -> dict[str, str]:
    """Map each user id to train/val/test. Sorted before the seeded shuffle: input order does not matter."""
    users = sorted(set(user_ids))
    random.Random(seed).shuffle(users)
    n_train, n_val, _ = split_sizes(len(users), ratios)
    out = {}
    for i, u in enumerate(users):
        out[u] = "train" if i < n_train else "val" if i < n_train + n_val else "test"
    return out
