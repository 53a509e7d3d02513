"""HF Video-LLaVA generators: PV-LLM (a trained checkpoint) and zero-shot Video-LLaVA-7B.

The generic ``hf_video`` generator (pvllm.generators.hf_video) with Video-LLaVA's defaults: the
same builder, frame reader, prompt and left-padded batches.
"""

from __future__ import annotations

from typing import Any

from pvllm.generators.base import GENERATORS
from pvllm.generators.hf_video import (
    HFVideoGenerator,
    UnsafeCheckpointError,
    load_lightning_weights,
    read_checkpoint_state,
)

__all__ = ["PVLLMGenerator", "UnsafeCheckpointError", "VideoLlavaGenerator", "load_lightning_weights",
           "read_checkpoint_state"]

# Video-LLaVA's own inference defaults (its README/cli: do_sample, temperature 0.1); comments are
# short, so fewer new tokens than its 1024.
VIDEO_LLAVA_SAMPLING = {"do_sample": True, "temperature": 0.1, "top_p": None, "max_new_tokens": 64}


@GENERATORS.register("video_llava")
class VideoLlavaGenerator(HFVideoGenerator):
    """Zero-shot Video-LLaVA-7B by default; like hf_video, any directory of a supported family loads."""

    default_sampling = VIDEO_LLAVA_SAMPLING

    def __init__(self, pretrained: str = "LanguageBind/Video-LLaVA-7B-hf", **kwargs: Any):
        super().__init__(pretrained, **kwargs)


@GENERATORS.register("pvllm")
class PVLLMGenerator(VideoLlavaGenerator):
    """PV-LLM: a fine-tuned checkpoint, either an HF directory (``hf_model/`` of a train run) or a
    Lightning ``.ckpt`` on top of the base directory it was trained from."""
