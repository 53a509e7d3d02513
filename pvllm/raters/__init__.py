"""FICL-Score judges, behind ``RATERS`` (see base.py)."""

from pvllm.raters.base import RATERS, LLMRater, PairRater, Rater

__all__ = ["RATERS", "LLMRater", "PairRater", "Rater"]
