"""Comment generators: one class per system, all behind ``GENERATORS`` (see base.py)."""

# Importing registers them (pvllm, video_llava, gemini, openai_compatible, text_only, video_chatgpt);
# SDKs and model weights load lazily, so this works without the optional extras.
from pvllm.generators import gemini, openai_compatible, text_only, video_chatgpt, video_llava  # noqa: F401
from pvllm.generators.base import GENERATORS, GenerationRequest, GenerationResult, Generator

__all__ = ["GENERATORS", "GenerationRequest", "GenerationResult", "Generator"]
