"""Tiny random models of the real classes of every supported family (pvllm.models.families), as HF
dirs: the one tiny-model builder of the tests, the plumbing demo and the smoke preset (pvllm/debug.py).

The real ``*ForConditionalGeneration`` / processor classes (Video-LLaVA's as LanguageBind/Video-LLaVA-7B-hf)
at tiny sizes (LLM hidden 64, 2 layers; vision hidden 32, 2 layers; 32-px frames), random weights, a small
offline byte-level BPE tokenizer with the family's special tokens and a chat template in its format,
written with ``save_pretrained`` so the builder loads them like a hub checkpoint. Their outputs are
meaningless; they run the real checkpoints' code path in milliseconds. ``make_tiny(family, out_dir)``.
"""

from __future__ import annotations

import os
from functools import partial
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


# Chat templates in each family's format (shortened from the hub checkpoints' templates: text + one video).
QWEN2_5_VL_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}{% if content['type'] == 'video' %}"
    "<|vision_start|><|video_pad|><|vision_end|>{% elif content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN3_VL_TEMPLATE = QWEN2_5_VL_TEMPLATE.replace(
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant."
    "<|im_end|>\n{% endif %}", "")
LLAVA_ONEVISION_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + ' ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>' }}"
    "{% endfor %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ '\n' + content['text'] }}{% endfor %}{{ '<|im_end|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)
SMOLVLM_TEMPLATE = (  # transformers.models.smolvlm.processing_smolvlm.DEFAULT_CHAT_TEMPLATE (SmolVLM2's)
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'] is string %}{{': ' + message['content']}}{% else %}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% elif line['type'] == 'video' %}{{ '<video>' }}"
    "{% endif %}{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
LLAVA_NEXT_VIDEO_TEMPLATE = (  # llava-hf/LLaVA-NeXT-Video-7B-hf's (Vicuna style), shortened
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}"
    "{% endif %}{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>\n' }}{% endfor %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' ' }}{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
INTERNVL_TEMPLATE = (  # OpenGVLab/InternVL3-*-hf's ChatML, shortened (no default system message)
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for content in message['content'] %}{% if content['type'] == 'video' %}"
    "{{ '<video>\n' }}{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]


def tiny_tokenizer(special: list[str], vocab_size: int = 512, **named: str):
    """A byte-level BPE over the corpus above with ``special`` tokens; ``named`` e.g. eos_token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **named)


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
    tokenizer = tiny_tokenizer(
        SPECIAL_TOKENS, vocab_size, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>", "video_token": "<video>"})
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


def make_tiny(family: str, out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """The tiny random directory of model family ``family``, by its entry's maker (``Family.tiny``)."""
    from pvllm.models.families import FAMILIES, resolve_class

    return resolve_class(FAMILIES.get(family).tiny)(out_dir, seed=seed)


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


def _text(tok, **kw) -> dict:
    return dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
                **kw)


def _save(model_cls, config, seed: int, processor, tok, out_dir, name: str) -> Path:
    """``model_cls(config)`` with random weights drawn from ``seed``, saved with its processor and tokenizer."""
    import torch

    torch.manual_seed(seed)
    return save_tiny(model_cls(config), processor, tok, out_dir,
                     f"Tiny RANDOM {name} written by pvllm.models.tiny: real classes, random weights, for "
                     "tests. Its outputs are not meaningful.\n")


def _qwen_vision(**kw) -> dict:
    return dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=8,
                spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=64, **kw)


def _make_tiny_qwen(out_dir: str | os.PathLike, seed: int = 0, v3: bool = False) -> Path:
    """Qwen2.5-VL (``v3=False``) or Qwen3-VL: the same layout, the differences spelled out below."""
    import transformers as tf
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    name = "Qwen3VL" if v3 else "Qwen2_5_VL"
    tok = tiny_tokenizer(QWEN_SPECIAL, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3],
            **({"mrope_interleaved": True} if v3 else {})}
    config = getattr(tf, f"{name}Config")(
        vision_config=_qwen_vision(num_position_embeddings=16, deepstack_visual_indexes=[0]) if v3 else
        _qwen_vision(window_size=16, fullatt_block_indexes=[1]),
        text_config=_text(tok, rope_parameters=rope, **({"head_dim": 16} if v3 else {})),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    # 32-px frames: 2×2 merged tokens per 2 frames
    size = {"shortest_edge": 16 * 16, "longest_edge": 32 * 32 * (8 if v3 else 1)}
    pp = dict(size=size, patch_size=8, merge_size=2, temporal_patch_size=2)
    video = (tf.Qwen3VLVideoProcessor if v3 else Qwen2VLVideoProcessor)(**pp, cap_pixels_per_frame=True)
    processor = getattr(tf, f"{name}Processor")(
        image_processor=Qwen2VLImageProcessor(**pp), video_processor=video, tokenizer=tok,
        chat_template=QWEN3_VL_TEMPLATE if v3 else QWEN2_5_VL_TEMPLATE)
    return _save(getattr(tf, f"{name}ForConditionalGeneration"), config, seed, processor, tok, out_dir,
                 "Qwen3-VL" if v3 else "Qwen2.5-VL")


make_tiny_qwen2_5_vl = partial(_make_tiny_qwen, v3=False)
make_tiny_qwen3_vl = partial(_make_tiny_qwen, v3=True)


def make_tiny_llava_onevision(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]
    tok = tiny_tokenizer(special, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    config = LlavaOnevisionConfig(
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8),
        text_config=dict(model_type="qwen2", **_text(tok)),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"),
        vision_feature_layer=-1, vision_feature_select_strategy="full", image_grid_pinpoints=[[32, 32]],
    )
    size = {"height": 32, "width": 32}  # 16 patches per frame, pooled 2×2 -> 4 tokens per frame (+1 newline)
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=[[32, 32]]),
        video_processor=LlavaOnevisionVideoProcessor(size=size), tokenizer=tok, num_image_tokens=16,
        vision_feature_select_strategy="full", chat_template=LLAVA_ONEVISION_TEMPLATE,
    )
    return _save(LlavaOnevisionForConditionalGeneration, config, seed, processor, tok, out_dir, "LLaVA-OneVision")


def make_tiny_smolvlm(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    from transformers import (
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
    )
    from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor

    special = ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<image>", "<video>",
               "<fake_token_around_image>", "<global-img>"]
    tok = tiny_tokenizer(special, eos_token="<end_of_utterance>", pad_token="<|endoftext|>",
                         bos_token="<|im_start|>")
    config = SmolVLMConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        text_config=dict(model_type="llama", **_text(tok)), scale_factor=2,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
    )
    edge = {"longest_edge": 32}  # one 32-px tile per frame: 16 patches, pixel-shuffled 2×2 -> 4 tokens
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(size=edge, max_image_size=edge),
        video_processor=SmolVLMVideoProcessor(size=edge, max_image_size=edge), tokenizer=tok, image_seq_len=4,
        chat_template=SMOLVLM_TEMPLATE,
    )
    return _save(SmolVLMForConditionalGeneration, config, seed, processor, tok, out_dir, "SmolVLM2")


def make_tiny_llava_next_video(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    from transformers import (
        LlavaNextImageProcessor,
        LlavaNextVideoConfig,
        LlavaNextVideoForConditionalGeneration,
        LlavaNextVideoProcessor,
    )
    from transformers.models.llava_next_video.video_processing_llava_next_video import (
        LlavaNextVideoVideoProcessor,
    )

    tok = tiny_tokenizer(SPECIAL_TOKENS, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                         unk_token="<unk>")
    config = LlavaNextVideoConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8,
                           projection_dim=32),
        text_config=dict(model_type="llama", **_text(tok)),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"), image_grid_pinpoints=[[32, 32]],
        vision_feature_select_strategy="default", vision_feature_layer=-2, spatial_pool_stride=2,
    )
    size, crop = {"shortest_edge": 32}, {"height": 32, "width": 32}  # 4×4 patches pooled to 2×2 per frame
    processor = LlavaNextVideoProcessor(
        video_processor=LlavaNextVideoVideoProcessor(size=size, crop_size=crop),
        image_processor=LlavaNextImageProcessor(size=size, crop_size=crop, image_grid_pinpoints=[[32, 32]]),
        tokenizer=tok, patch_size=8, vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=LLAVA_NEXT_VIDEO_TEMPLATE,
    )
    return _save(LlavaNextVideoForConditionalGeneration, config, seed, processor, tok, out_dir, "LLaVA-NeXT-Video")


def make_tiny_internvl(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
    )
    from transformers.models.internvl.video_processing_internvl import InternVLVideoProcessor

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
    named = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
             "video_token": "<video>"}
    tok = tiny_tokenizer(special, eos_token="<|im_end|>", pad_token="<|endoftext|>", extra_special_tokens=named)
    config = InternVLConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=[32, 32], patch_size=[8, 8]),
        text_config=dict(model_type="qwen2", **_text(tok)),
        image_token_id=tok.context_image_token_id, image_seq_length=4, downsample_ratio=0.5,
        tie_word_embeddings=False,  # as InternVL3-8B (the 1B ties them; then the head stays frozen too)
    )
    size = {"height": 32, "width": 32}  # 4×4 patches per frame, pixel-shuffled (ratio 0.5) to 4 tokens
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(size=size, crop_to_patches=False),
        video_processor=InternVLVideoProcessor(size=size), tokenizer=tok, image_seq_length=4,
        chat_template=INTERNVL_TEMPLATE,
    )
    return _save(InternVLForConditionalGeneration, config, seed, processor, tok, out_dir, "InternVL")


CHATML_TEMPLATE = (  # SmolLM2-Instruct's ChatML (text only)
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def make_tiny_causal_lm(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """A tiny random LLaMA-architecture chat LM (SmolLM2's classes and ChatML template): the text-only
    generator's code path (``generator=text_only generator.model_path=DIR``)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], eos_token="<|im_end|>",
                         pad_token="<|endoftext|>", bos_token="<|im_start|>")
    tok.chat_template = CHATML_TEMPLATE
    config = LlamaConfig(**_text(tok), tie_word_embeddings=True)
    return _save(LlamaForCausalLM, config, seed, tok, tok, out_dir, "LLaMA chat LM")


def make_tiny_video_chatgpt(out_dir: str | os.PathLike, seed: int = 0) -> dict[str, Path]:
    """Video-ChatGPT's released layout at tiny sizes (pvllm.generators.video_chatgpt.load_video_chatgpt):
    a LLaVA-Lightning-style LLM directory (``model_type: llava``, ``mm_vision_tower``), a CLIP vision tower
    directory and a ``video_chatgpt`` projector ``.bin`` (``model.mm_projector.*`` + the embeddings with the
    3 added video tokens). Returns ``{"llm_path", "projector_path", "vision_tower"}`` (written once)."""
    import json

    import torch
    from tokenizers import processors
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModel,
        LlamaConfig,
        LlamaForCausalLM,
    )

    root = Path(out_dir)
    paths = {"llm_path": root / "LLaVA-Lightning-tiny", "vision_tower": root / "clip-tiny",
             "projector_path": root / "video_chatgpt-tiny.bin"}
    if paths["projector_path"].is_file():
        return paths
    hidden, width = 32, 24
    torch.manual_seed(seed)
    tok = tiny_tokenizer(["<unk>", "<s>", "</s>"], bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.bos_token_id)])  # LLaMA's BOS
    tok.save_pretrained(paths["llm_path"])
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,  # LLaMA-1
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(paths["llm_path"])
    raw = json.loads((paths["llm_path"] / "config.json").read_text())
    raw.update(model_type="llava", architectures=["LlavaLlamaForCausalLM"], mm_vision_tower=str(paths["vision_tower"]),
               mm_hidden_size=width, use_mm_proj=True, mm_use_im_start_end=True)  # LLaVA-Lightning's extra keys
    (paths["llm_path"] / "config.json").write_text(json.dumps(raw))
    CLIPVisionModel(CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=width, intermediate_size=48,
                                     num_hidden_layers=2, num_attention_heads=2)).save_pretrained(paths["vision_tower"])
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        paths["vision_tower"])
    state = {"model.mm_projector.weight": torch.randn(hidden, width) * 0.1,
             "model.mm_projector.bias": torch.randn(hidden) * 0.1,
             "model.embed_tokens.weight": torch.randn(len(tok) + 3, hidden) * 0.02}  # + the 3 video tokens
    tmp = paths["projector_path"].with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, paths["projector_path"])  # last: its presence marks a complete layout
    return paths
