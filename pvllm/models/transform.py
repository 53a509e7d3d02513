"""The model transform: what the data layer needs from a model family, as one object built here and handed in
by the entry point (torchtune's way: the dataset receives a transform, and never imports a model).

``train.py`` builds it from the model's processor and passes it to ``PVLLMDataModule.attach_transform``; the
collator (``pvllm.data.collate.PVLLMCollator``) encodes every sample through it, and packing plans its rows with
its text-token counter. So ``pvllm/data/`` imports nothing from ``pvllm.models`` (docs/architecture.md).
"""

from __future__ import annotations

from typing import Any

import torch

from pvllm.models.families import Family, encode_example, family_of, reply_token_ids, visual_token_count
from pvllm.models.packing import TextTokens


class ModelTransform:
    """A family's processor + chat format: samples -> model inputs and labels (``pvllm.models.families``)."""

    def __init__(self, processor: Any, max_reply_tokens: int | None = 64):
        self.processor = processor
        self.family: Family = family_of(processor)
        # packing (pvllm.data.packing): a sample's prompt + supervised reply tokens, video placeholder unexpanded
        self.text_tokens = TextTokens(processor, max_reply_tokens)

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    @property
    def video_token(self) -> str:
        return self.processor.video_token

    def encode_example(self, instruction: str | None, clip: Any, reply: str, max_reply_tokens: int | None = 64,
                       prompt: str | None = None) -> dict[str, torch.Tensor]:
        """input_ids / labels (the reply + end of turn only) / the processor's visual inputs of one sample."""
        return encode_example(self.processor, instruction, clip, reply, max_reply_tokens, prompt=prompt)

    def reply_token_ids(self, instruction: str, reply: str, max_reply_tokens: int | None = 64) -> list[int]:
        return reply_token_ids(self.processor, instruction, reply, max_reply_tokens)

    def visual_token_count(self, input_ids: torch.Tensor) -> int:
        return visual_token_count(self.processor, input_ids)
