"""A baseline ranker (pvllm.generators.baseline_rankers) behind the Generator interface: ``evaluate.py
generator=baseline_ranker generator.ranker=tfidf stage=rank`` ranks the same candidates file under the same
histories as the models and writes ranking.jsonl + ranking_summary.json beside theirs. Ranking only: it
writes no comments."""

from __future__ import annotations

import hashlib
from typing import Any

from pvllm.generators.base import GENERATORS, GenerationRequest, GenerationResult, Generator
from pvllm.generators.baseline_rankers import make_ranker


@GENERATORS.register("baseline_ranker")
class BaselineRankerGenerator(Generator):
    reads_video = False
    accepts_no_video = True
    supports_ranking = True

    def __init__(self, ranker: str = "tfidf", data_root: str | None = None, seed: int = 0,
                 batch_size: int = 64):
        self.ranker_name = ranker
        self.seed = seed
        self.batch_size = batch_size
        texts = None
        self.train_digest = None
        from pvllm.generators.baseline_rankers import BASELINE_RANKERS

        if BASELINE_RANKERS.get(ranker).needs_training_texts:
            if not data_root:
                raise ValueError(f"baseline ranker {ranker!r} needs data_root (the training comments)")
            from pvllm.data.dataset import load_pervidcom

            ds = load_pervidcom(data_root, check_files=False)
            train = set(ds.users("train"))
            texts = sorted(c.text for c in ds.comments.values() if c.user_id in train)
            self.train_digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
        self.ranker = make_ranker(ranker, seed=seed, training_texts=texts)

    @property
    def model_id(self) -> str:
        return f"baseline:{self.ranker_name}"

    @property
    def generation_config(self) -> dict[str, Any]:
        return {"ranker": self.ranker_name, "seed": self.seed, "training_comments": self.train_digest}

    def generate(self, batch: list[GenerationRequest]) -> list[GenerationResult]:
        raise ValueError(f"baseline ranker {self.ranker_name!r} writes no comments: run it with stage=rank")

    def score_candidates(self, batch, candidates):
        return [self.ranker.score(r.sample_id, r.history, c) for r, c in zip(batch, candidates)]
