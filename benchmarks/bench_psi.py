"""Personalization Score ψ (eq. 1–3): ours (one similarity matrix per video, numpy) vs the naive way
(a Python double loop over comment pairs, as the equations read), on the same embeddings, side by side.
Embedding the texts is the same for both and excluded; N = comments per video.

    python benchmarks/bench_psi.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from pvllm.data.psi import psi_from_similarities


def naive_psi(emb: np.ndarray, title: np.ndarray) -> float:
    n = len(emb)
    positives = 0
    for i in range(n - 1):
        for j in range(i + 1, n):
            s_ij = float(emb[i] @ emb[j])
            d = max(s_ij - float(emb[i] @ title), s_ij - float(emb[j] @ title))
            positives += d < 0
    return positives / (n * (n - 1) / 2)


def ours(emb: np.ndarray, title: np.ndarray) -> float:
    return psi_from_similarities(emb @ emb.T, emb @ title)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'N comments':>10}{'ours (s)':>12}{'naive (s)':>12}{'naive/ours':>12}")
    for n in (50, 200, 800):
        emb = rng.normal(size=(n, 384))  # all-MiniLM-L6-v2 width, unit-normalised like its outputs
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        title = emb[: n // 10].mean(axis=0)
        title /= np.linalg.norm(title)
        assert ours(emb, title) == naive_psi(emb, title)  # identical value, or the timing means nothing
        a, b = [], []
        for _ in range(args.rounds):
            t = time.perf_counter()
            ours(emb, title)
            a.append(time.perf_counter() - t)
            t = time.perf_counter()
            naive_psi(emb, title)
            b.append(time.perf_counter() - t)
        o, nv = statistics.median(a), statistics.median(b)
        print(f"{n:>10}{o:>12.5f}{nv:>12.4f}{nv / o:>12.0f}")


if __name__ == "__main__":
    main()
