"""Comment generators: one class per system, all behind ``GENERATORS`` (see base.py)."""

from pvllm.generators.base import GENERATORS, GenerationRequest, GenerationResult, Generator
from pvllm.generators import video_llava  # noqa: F401  (registers pvllm, video_llava)
from pvllm.generators import gemini, openai_compatible  # noqa: F401  (SDKs load lazily)

__all__ = ["GENERATORS", "GenerationRequest", "GenerationResult", "Generator"]
