"""The interface of an FICL-Score judge ("rater"). FICL logic (prompt, parse, re-ask) lives in
pvllm/metrics/ficl.py; a rater only answers prompts (LLM judges) or scores pairs (non-LLM floors)."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

from pvllm.utils.registry import Registry

RATERS = Registry("rater")
# The FICL rubric's answers (Table 2): every judge scores each dimension with one of these values, written as the
# rubric writes them. Shared by the judges (constrained decoding, pvllm.raters.local_hf) and the FICL prompt and
# parser (pvllm.metrics.ficl), which sits a floor above (metrics use raters, never the reverse).
RUBRIC_VALUES = (0.0, 0.25, 0.5, 0.75, 1.0)


def format_score(x: float) -> str:
    """0 -> '0', 0.25 -> '0.25', 1.0 -> '1' (as the rubric writes them)."""
    return f"{x:g}"


class Rater(abc.ABC):
    """Base of every rater. ``name`` identifies backend + model in scores.jsonl (``rater`` field)."""

    registry_name: str = "?"
    # Requests in flight at once in ``complete_each`` (remote backends set it from config and schedule
    # through their one RemoteCalls limiter; a local model keeps 1).
    max_concurrency: int = 1

    @property
    @abc.abstractmethod
    def name(self) -> str: ...

    @property
    def params(self) -> dict[str, Any]:
        """Request parameters that change answers (temperature, max tokens, ...): part of the cache key."""
        return {}

    @property
    def server(self) -> str | None:
        """Where the model answers (a remote backend's base URL without credentials): part of the cache key,
        so one model name served by two servers never shares replies. None for a local model."""
        return None

    def check_ready(self) -> None:  # noqa: B027 - optional hook
        """Fail fast before any work (e.g. a missing API key: name the variable)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class LLMRater(Rater):
    """A judge that answers the Table-2 prompt with free text (temperature 0)."""

    @abc.abstractmethod
    def complete(self, prompts: list[str]) -> list[str | None]:
        """One reply per prompt; None (with the reason logged) when the request failed after retries."""

    def complete_each(self, prompts: list[str], on_reply: Callable[[int, str | None], None]) -> None:
        """Answer every prompt, calling ``on_reply(index, reply)`` as each answer arrives (from worker
        threads when ``max_concurrency`` > 1), so a cache can commit it at once. The rater's own
        scheduling decides concurrency, rate and retries: callers add no limiter of their own."""
        from pvllm.clients.retry import map_concurrent

        def one(i: int) -> None:
            (reply,) = self.complete([prompts[i]])
            on_reply(i, reply)

        map_concurrent(one, range(len(prompts)), self.max_concurrency)


class PairRater(Rater):
    """A non-LLM floor that maps (generated, ground truth) directly to rubric scores."""

    @abc.abstractmethod
    def score_pairs(self, pairs: list[tuple[str, str]]) -> list[tuple[float, float, float]]:
        """(emotion, style, relevance), each in {0, .25, .5, .75, 1}."""


def similarity_to_rubric(x: float, thresholds: tuple[float, float, float, float] | list[float]) -> float:
    """Map a similarity to {0, .25, .5, .75, 1}: the number of ``thresholds`` (ascending) it reaches, /4."""
    t = list(thresholds)
    if len(t) != 4 or t != sorted(t):
        raise ValueError(f"thresholds must be 4 ascending cut points, got {t}")
    return sum(x >= c for c in t) / 4
