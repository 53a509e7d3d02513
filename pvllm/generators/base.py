"""The one interface every comment generator implements (PV-LLM, Video-LLaVA, Gemini, ...)."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pvllm.utils.registry import Registry

GENERATORS = Registry("generator")


class RankingUnsupported(NotImplementedError):
    """The generator gives no log-probabilities (e.g. an API model): its ranking metrics are n/a, not 0."""


@dataclass
class GenerationRequest:
    """One evaluation sample as a generator sees it (built from a histories.jsonl row)."""

    sample_id: str
    video_path: str | None  # absolute path of the video shown; None = no video (ablation video.mode=none)
    history: list[str]  # the user's past comments (possibly empty: history mode `none`)
    prompt: str  # the user-turn text from pvllm.prompt.build_instruction (no chat markup)
    title: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    include_title: bool = False  # whether ``prompt`` carries the title (a generator re-building it keeps that)


@dataclass
class CandidateLogprobs:
    """The log-likelihood of one request's candidate replies (``Generator.candidate_logprobs``)."""

    logprob: list[float]  # sum of log p(reply token | prompt, earlier reply tokens), end-of-turn included
    n_tokens: list[int]  # tokens of each reply (end-of-turn included)
    logprob_no_history: list[float] | None = None  # the same after the prompt without the history (PMI)

    @property
    def mean(self) -> list[float]:
        return [s / n for s, n in zip(self.logprob, self.n_tokens)]


def without_history(req: GenerationRequest) -> GenerationRequest:
    """The same request (video, title) without the user's history: PMI's reference prompt."""
    from pvllm.prompt import build_instruction

    return GenerationRequest(req.sample_id, req.video_path, [],
                             build_instruction([], req.title if req.include_title else None), req.title,
                             dict(req.extra), req.include_title)


@dataclass
class GenerationResult:
    sample_id: str
    text: str | None  # None when generation failed; never "" standing in for a failure
    error: str | None = None
    latency_s: float = 0.0
    notes: list[str] = field(default_factory=list)  # e.g. "cut_multibyte_char", "history_truncated"


class Generator(abc.ABC):
    """A batch of (video, history, prompt) -> comments.

    Implementations record in ``model_id`` the exact weights or remote model and in
    ``generation_config`` the exact decoding parameters; both go into every predictions.jsonl row.
    """

    registry_name: str = "?"
    name: str = ""  # the recorded name (evaluate.py: the generator config's name, e.g. gemini_flash)
    batch_size: int = 1
    # True: generate() buckets what it gets by prompt length (length_batches), so evaluation hands it a
    # window of several batches; False (API generators): batch_size items at a time, saved as they finish
    bucketed: bool = False
    reads_video: bool = True  # False: the video files are never opened (text-only baselines)
    accepts_no_video: bool = False  # True: handles video_path=None (text only) for the video ablation

    @property
    @abc.abstractmethod
    def model_id(self) -> str: ...

    @property
    @abc.abstractmethod
    def generation_config(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def generate(self, batch: list[GenerationRequest]) -> list[GenerationResult]:
        """Return one result per request, in order. Per-item failures are results with ``error`` set;
        raise only for failures that make every later item fail too (bad weights, missing key)."""

    supports_ranking: bool = False  # True where score_candidates is implemented (local HF models)

    def score_candidates(self, batch: list[GenerationRequest],
                         candidates: list[list[str]]) -> list[list[float] | None]:
        """Ranking evaluation (pvllm.metrics.ranking): for each request, one score per candidate reply,
        higher = more likely: the length-normalized log-likelihood of the candidate as the model's reply
        to ``request.prompt`` (with the video where the model sees it), computed exactly as ``generate``
        would condition. Implement it with ``pvllm.generators.likelihood.mean_reply_logprobs`` and set
        ``supports_ranking = True``; the default raises ``RankingUnsupported`` (reported as "n/a")."""
        raise RankingUnsupported(f"generator {self.registry_name!r} gives no log-probabilities: "
                                 "ranking is n/a")

    def candidate_logprobs(self, batch: list[GenerationRequest], candidates: list[list[str]],
                           no_history: bool = False) -> list[CandidateLogprobs | None]:
        """Per request (None where it failed, e.g. an unreadable video): the summed log-probability of each
        candidate reply and its token count after ``request.prompt``, and with ``no_history`` also after the
        same request without its history (PMI, ``ranking.score``). Local HF models implement it; the
        default raises ``RankingUnsupported``."""
        raise RankingUnsupported(f"generator {self.registry_name!r} gives no token log-probabilities: "
                                 "ranking.score=sum|pmi is n/a")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients/servers."""


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices into ``lengths`` in batches of at most ``batch_size``, longest prompts first, so each batch
    pads little (less padding: less compute, and greedy outputs equal batch 1's). Ties keep input order.
    Every batching generator uses this; results are put back in request order by the caller."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]


def decode_new_tokens(tokenizer: Any, rows: Any) -> list[tuple[str, list[str]]]:
    """Decode generated token ids row by row, stripped, with notes.

    A reply cut by ``max_new_tokens`` inside a multi-byte character decodes to a trailing U+FFFD: its
    incomplete trailing tokens are dropped (never stored or scored) and the row is noted
    ``cut_multibyte_char``."""
    out = []
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    for row in rows:
        ids = [int(t) for t in row if int(t) not in special]
        text = tokenizer.decode(ids, skip_special_tokens=True)
        notes = []
        while text.endswith("\ufffd") and ids:
            ids = ids[:-1]
            text = tokenizer.decode(ids, skip_special_tokens=True)
            notes = ["cut_multibyte_char"]
        out.append((text.strip(), notes))
    return out
