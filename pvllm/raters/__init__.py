"""FICL-Score judges, behind ``RATERS`` (see base.py)."""

# importing a backend registers it; heavy libraries load lazily inside each backend
from pvllm.raters import (  # noqa: F401
    embedding,
    gemini,
    lexical,
    local_hf,
    openai_compatible,
)
from pvllm.raters.base import RATERS, LLMRater, PairRater, Rater

__all__ = ["RATERS", "LLMRater", "PairRater", "Rater"]
