"""FICL-Score judges, behind ``RATERS`` (see base.py)."""

from pvllm.raters import gemini, openai_compatible  # noqa: F401  (register gemini_*, openai_compatible)
from pvllm.raters.base import RATERS, LLMRater, PairRater, Rater

__all__ = ["RATERS", "LLMRater", "PairRater", "Rater"]
