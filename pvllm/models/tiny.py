"""A tiny random Video-LLaVA of the real architecture, written as an HF directory.

Same classes as ``LanguageBind/Video-LLaVA-7B-hf`` (VideoLlavaForConditionalGeneration with a CLIP
vision tower and a Llama LLM, VideoLlavaProcessor), small sizes, random weights: the code path the
7B model takes, at a size that trains on a CPU in milliseconds. Tests and the plumbing demo use it.
"""

from __future__ import annotations

import os
from pathlib import Path

from pvllm.models.vision_encoders import FAMILY_TOWER

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>", "<video>"]

# Text the tiny BPE is trained on: the prompt template plus generic comment words, so prompts and
# comments tokenize into a few hundred merges instead of raw bytes. Fixed text -> fixed tokenizer.
_CORPUS = [
    "USER: ASSISTANT: Here are comments this user wrote on other videos:",
    "Watch the video and write the comment this user would write on it, in the user's own style.",
    "Watch the video and write a comment a viewer would write on it. Video title:",
    "the bunny rabbit meadow grass cartoon hill forest bikes cyclists traffic crossing bike lane street",
    "riders waking up stretching looking around yawning waiting at the light junction riding home",
    "OMG this is SO GOOD I can't stop watching best clip EVER nice cool good one ok",
    "there is something gentle about a quiet morning soft light slow breath small peace",
    "Honestly another clip nothing new here and the editing is lazy Not impressed mediocre at best",
    "Where was this filmed? Is it real or CGI? Does anyone know what happens after? longer version",
    "this clip really hops some-bunny loves this hare-raising wheely good footage two-tired on a roll",
    "Look at the camera cuts motion blur frame rate H.264 25 fps banding exposed tracked smoothly",
    "This reminds me of my grandma's garden Saturday mornings summer camp commuting in college",
]


def build_tiny_tokenizer(vocab_size: int = 512):
    """A byte-level BPE (handles emoji and CJK) with Video-LLaVA's special tokens, built offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>", "video_token": "<video>"},
    )


def make_tiny_video_llava(
    out_dir: str | os.PathLike,
    *,
    vocab_size: int = 512,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    image_size: int = 32,
    patch_size: int = 8,
    vision_hidden_size: int = 32,
    vision_layers: int = 2,
    seed: int = 0,
    vision_encoder: dict | None = None,
    num_frames: int = 8,
) -> Path:
    """Write a tiny random VideoLlava model + processor to ``out_dir`` with ``save_pretrained``.

    ``vision_encoder``: a spec of ``conf/model/vision_encoder/`` (``name: clip`` or None = the family's own
    tiny random CLIP sized by the arguments above; otherwise a swapped encoder, e.g. the real MobileNetV2).
    """
    import torch
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        VideoLlavaConfig,
        VideoLlavaForConditionalGeneration,
        VideoLlavaImageProcessor,
        VideoLlavaProcessor,
    )
    from transformers.models.video_llava.video_processing_video_llava import VideoLlavaVideoProcessor

    out_dir = Path(out_dir)
    tokenizer = build_tiny_tokenizer(vocab_size)
    vision = CLIPVisionConfig(
        hidden_size=vision_hidden_size, intermediate_size=2 * vision_hidden_size, num_hidden_layers=vision_layers,
        num_attention_heads=2, image_size=image_size, patch_size=patch_size, projection_dim=vision_hidden_size,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=4096, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    if vision_encoder and vision_encoder.get("name", FAMILY_TOWER) != FAMILY_TOWER:
        from pvllm.models.composite import make_composite

        model, processor, described = make_composite(text, tokenizer, vision_encoder, num_frames, seed)
        return save_tiny(model, processor, tokenizer, out_dir,
                         f"Tiny Video-LLaVA-style model (RANDOM tiny LLM) with the vision encoder: {described}; "
                         "written by pvllm.models.tiny.make_tiny_video_llava for tests.\n")
    config = VideoLlavaConfig(
        vision_config=vision, text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="default", vision_feature_layer=-2,
    )
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(seed)
    model = VideoLlavaForConditionalGeneration(config)
    size = {"shortest_edge": image_size}
    crop = {"height": image_size, "width": image_size}
    processor = VideoLlavaProcessor(
        image_processor=VideoLlavaImageProcessor(size=size, crop_size=crop),
        video_processor=VideoLlavaVideoProcessor(size=size, crop_size=crop),
        tokenizer=tokenizer, patch_size=patch_size, vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    return save_tiny(model, processor, tokenizer, out_dir,
                     "Tiny RANDOM Video-LLaVA written by pvllm.models.tiny.make_tiny_video_llava: real architecture, "
                     "random weights, for tests and the plumbing demo. Its outputs are not meaningful.\n")


def make_tiny_pvllm_video(out_dir: str | os.PathLike, *, seed: int = 0) -> Path:
    """A tiny model of the ``pvllm_video`` family (issue 12's composite): the tiny random LLM with a tiny
    RANDOM open_clip ViT as its swapped video tower (no weights to download)."""
    spec = {"name": "open_clip", "model_name": "ViT-B-32", "pretrained": None, "tokens": "patch",
            "vision_cfg": {"width": 32, "layers": 2, "head_width": 16, "image_size": 32, "patch_size": 8}}
    return make_tiny_video_llava(out_dir, seed=seed, vision_encoder=spec)


def save_tiny(model, processor, tokenizer, out_dir: str | os.PathLike, readme: str) -> Path:
    """Write a tiny random model: the tokenizer's special ids in its generation config, ``save_pretrained`` of
    model and processor, and a README.md saying what it is."""
    gc = model.generation_config
    gc.pad_token_id, gc.eos_token_id, gc.bos_token_id = (tokenizer.pad_token_id, tokenizer.eos_token_id,
                                                         tokenizer.bos_token_id)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    (out_dir / "README.md").write_text(readme)
    return out_dir
