"""Comment generators: one class per system, all behind ``GENERATORS`` (see base.py)."""

# Importing registers them (pvllm, video_llava, hf_video, gemini, openai_compatible, text_only, video_chatgpt);
# SDKs and model weights load lazily, so this works without the optional extras.
from pvllm.generators import (  # noqa: F401
    baseline_ranker,
    gemini,
    hf_video,
    openai_compatible,
    text_only,
    video_chatgpt,
    video_llava,
)
from pvllm.generators.base import GENERATORS, GenerationRequest, GenerationResult, Generator

__all__ = ["GENERATORS", "GenerationRequest", "GenerationResult", "Generator"]
