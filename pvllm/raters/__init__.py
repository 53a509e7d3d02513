"""FICL-Score judges, behind ``RATERS`` (see base.py)."""

from pvllm.raters.base import RATERS, LLMRater, PairRater, Rater
from pvllm.raters import gemini, openai_compatible  # noqa: F401  (register gemini_*, openai_compatible)

__all__ = ["RATERS", "LLMRater", "PairRater", "Rater"]
