"""The real shapes of the 8×A100 models, as HF configs (random weights only: no hub here).

``real_config(name, llm_layers=...)`` keeps every width of the released checkpoint and can cut the depth,
so the memory arithmetic (pvllm.distributed.memory) counts the real parameters on the meta device and the
GPU acceptance check (pvllm.distributed.gpu_checks) runs real layer widths at a depth that fits one GPU.
Values from each checkpoint's config.json (parameter totals checked: 7.3B, 8.29B, 8.77B).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

VIDEO_LLAVA_7B, QWEN2_5_VL_7B, QWEN3_VL_8B = "video_llava_7b", "qwen2_5_vl_7b", "qwen3_vl_8b"


@dataclass(frozen=True)
class Shape:
    """What the arithmetic needs besides the parameter counts."""

    family: str  # pvllm.models.families name
    model_class: str
    visual_tokens_8_frames: int  # LLM tokens of 8 frames at the default frame size (conf/model/<name>.yaml)
    llm_layers: int
    vision_layers: int


SHAPES: dict[str, Shape] = {
    VIDEO_LLAVA_7B: Shape("video_llava", "VideoLlavaForConditionalGeneration", 8 * 257, 32, 24),
    QWEN2_5_VL_7B: Shape("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", 4 * 256, 28, 32),
    QWEN3_VL_8B: Shape("qwen3_vl", "Qwen3VLForConditionalGeneration", 4 * 196, 36, 27),
}


def real_config(name: str, llm_layers: int | None = None, vision_layers: int | None = None) -> Any:
    """The HF config of ``name`` (a key of SHAPES) at its real widths; depths cut when given."""
    import transformers

    if name not in SHAPES:
        raise ValueError(f"unknown model shape {name!r}; known: {', '.join(SHAPES)}")
    s = SHAPES[name]
    L, V = llm_layers or s.llm_layers, vision_layers or s.vision_layers
    if name == VIDEO_LLAVA_7B:  # LanguageBind/Video-LLaVA-7B-hf: CLIP ViT-L/14 at 224 px + Vicuna-7B
        vision = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=V, num_attention_heads=16,
                      image_size=224, patch_size=14, projection_dim=768)
        text = dict(model_type="llama", vocab_size=32064, hidden_size=4096, intermediate_size=11008,
                    num_hidden_layers=L, num_attention_heads=32, num_key_value_heads=32,
                    max_position_embeddings=4096)
        return transformers.VideoLlavaConfig(vision_config=vision, text_config=text, image_token_index=32000,
                                              video_token_index=32001, vision_feature_select_strategy="default",
                                              vision_feature_layer=-2)
    if name == QWEN2_5_VL_7B:  # Qwen/Qwen2.5-VL-7B-Instruct
        full = [i for i in (7, 15, 23, 31) if i < V] or [V - 1]
        vision = dict(depth=V, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                      fullatt_block_indexes=full)
        text = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=L, num_attention_heads=28,
                    num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False,
                    rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]})
        return transformers.Qwen2_5_VLConfig(vision_config=vision, text_config=text, tie_word_embeddings=False)
    # Qwen/Qwen3-VL-8B-Instruct
    deep = [i for i in (8, 16, 24) if i < V] or [V - 1]
    vision = dict(depth=V, hidden_size=1152, intermediate_size=4304, num_heads=16, out_hidden_size=4096,
                  patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304,
                  deepstack_visual_indexes=deep)
    text = dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=L, num_attention_heads=32,
                num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=False,
                rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [24, 20, 20],
                                 "mrope_interleaved": True})
    return transformers.Qwen3VLConfig(vision_config=vision, text_config=text, tie_word_embeddings=False)


def meta_model(name: str, **depth: int | None):
    """The model of ``name`` on the meta device (no memory): parameter counts per part, in seconds."""
    import torch

    from pvllm.models.families import resolve_class

    cfg = real_config(name, **depth)
    with torch.device("meta"):
        return resolve_class(SHAPES[name].model_class)(cfg)
