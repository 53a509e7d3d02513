"""The table of supported HF video-LLM families: one entry names what the PV-LLM recipe needs.

For each family: its HF model / processor classes, the module paths (inside the
``*ForConditionalGeneration`` model) of the vision encoder, the projector, the language model and the
parts video never uses, the LoRA target regex, the processor output that carries the frames, and
how the user turn is rendered (Video-LLaVA's fixed ``USER: <video>\\n... ASSISTANT:`` or the family's
own chat template). The builder, the collator, the LightningModule and the generators read only this
table: adding a family is adding one ``register_family`` entry (and a tiny random maker for its tests).

Parameters are assigned to parts by the LONGEST matching module path, so a projector nested inside the
vision model (Qwen's ``visual.merger``) is the projector, not the vision encoder; the input word
embeddings are found with ``get_input_embeddings()``. A parameter matching no path is an error: the
table must cover the whole model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from pvllm.prompt import chat_prompt
from pvllm.utils.registry import Registry

FAMILIES = Registry("model family")
IGNORE_INDEX = -100
LLM_ATTENTION = r"(q_proj|k_proj|v_proj|o_proj)"


@dataclass(eq=False)
class Family:
    name: str
    model_types: tuple[str, ...]  # HF config.model_type values this family loads
    model_class: str  # transformers class name (or a dotted path to another class), loaded with from_pretrained
    processor_class: str  # the same, for its processor
    vision_encoder: tuple[str, ...]  # module paths in the HF model
    projector: tuple[str, ...]  # modules or nn.Parameters (OneVision's image_newline)
    language_model: tuple[str, ...]  # the LLM and its head (word embeddings split out by identity)
    unused: tuple[str, ...] = ()  # parts video input never reaches: always frozen (DDP unused params)
    lora_target: str = rf".*language_model.*\.{LLM_ATTENTION}"  # regex: the LLM's projections only
    video_kwarg: str = "pixel_values_videos"  # processor output / model input carrying the frames
    template: str = "chat"  # "video_llava": pvllm.prompt.chat_prompt; "chat": the processor's template
    needs_video_metadata: bool = False  # processor needs fps / frame indices (timestamps in the prompt)
    processor_kwargs: dict[str, Any] = field(default_factory=dict)  # passed on every processor call
    tiny: str = ""  # dotted path of a function writing a tiny random directory of this family (tests)
    checkpoints: tuple[str, ...] = ()  # hub ids of real checkpoints (conf/model/*.yaml)


def resolve_class(name: str):
    """A class named in the table: a ``transformers`` class name, or a dotted path (``pkg.module.Class``)."""
    if "." in name:
        import importlib

        module, _, cls = name.rpartition(".")
        return getattr(importlib.import_module(module), cls)
    import transformers

    return getattr(transformers, name)


def register_family(family: Family) -> Family:
    FAMILIES.register(family.name)(family)
    return family


def get_family(name: str) -> Family:
    return FAMILIES.get(name)


def family_for_model_type(model_type: str) -> Family:
    for name in FAMILIES.names():
        fam = FAMILIES.get(name)
        if model_type in fam.model_types:
            return fam
    known = sorted(t for n in FAMILIES.names() for t in FAMILIES.get(n).model_types)
    raise ValueError(f"model_type {model_type!r} is not a supported video LLM family; supported model types: "
                     f"{', '.join(known)} (families: {', '.join(FAMILIES.names())})")


def family_of(obj: Any) -> Family:
    """The family of an HF model (possibly peft-wrapped), config or processor."""
    if hasattr(obj, "tokenizer") and not hasattr(obj, "config"):  # a processor
        cls = type(obj).__name__
        for name in FAMILIES.names():
            if FAMILIES.get(name).processor_class == cls:
                return FAMILIES.get(name)
        names = ", ".join(FAMILIES.names())
        raise ValueError(f"processor class {cls} belongs to no supported family ({names})")
    config = getattr(obj, "config", obj)
    return family_for_model_type(config.model_type)


def unwrap(model):
    """The HF model under a peft wrapper (module paths in the table are relative to it)."""
    return model.base_model.model if hasattr(model, "peft_config") else model


# --- parts of a model -------------------------------------------------------------------------------

PART_NAMES = ("vision_encoder", "image_encoder (unused for video)", "projector", "llm.word_embeddings",
              "llm (other layers)")


def model_parts(model, family: Family | None = None) -> dict[str, list[torch.nn.Parameter]]:
    """Parameters by part: vision_encoder, unused, projector, llm.word_embeddings, llm (other layers)."""
    model = unwrap(model)
    family = family or family_of(model)
    emb_ids = {id(p) for p in model.get_input_embeddings().parameters()}
    paths = [(p, part) for part, ps in (("vision_encoder", family.vision_encoder),
                                        ("image_encoder (unused for video)", family.unused),
                                        ("projector", family.projector),
                                        ("llm (other layers)", family.language_model)) for p in ps]
    paths.sort(key=lambda x: -len(x[0]))
    parts: dict[str, list[torch.nn.Parameter]] = {name: [] for name in PART_NAMES}
    unmatched, seen = [], set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue
        seen.add(id(p))
        if id(p) in emb_ids:
            parts["llm.word_embeddings"].append(p)
            continue
        for path, part in paths:
            if name == path or name.startswith(path + "."):
                parts[part].append(p)
                break
        else:
            unmatched.append(name)
    if unmatched:
        raise ValueError(f"family {family.name}: parameters outside every listed part: {unmatched[:5]} "
                         f"({len(unmatched)} in all); fix the module paths in pvllm/models/families.py")
    if not family.unused:
        del parts["image_encoder (unused for video)"]
    return parts


# --- the Figure-5 prompt and the reply under a family's chat format ----------------------------------

def _conversation(instruction: str, reply: str | None = None) -> list[dict]:
    conv = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": instruction}]}]
    if reply is not None:
        conv.append({"role": "assistant", "content": [{"type": "text", "text": reply}]})
    return conv


def render_prompt(processor, instruction: str) -> str:
    """The Figure-5 user turn (``pvllm.prompt.build_instruction``) in the family's chat format, ending
    where the reply starts; one video placeholder that the processor expands into visual tokens."""
    family = family_of(processor)
    if family.template == "video_llava":
        return chat_prompt(instruction)
    conv = _conversation(instruction)
    return processor.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)


def reply_texts(processor, instruction: str, reply: str) -> tuple[str, str]:
    """(content, end): the reply as the chat format writes it after the prompt, and the end-of-turn text
    after it. Video-LLaVA: (" " + reply, eos); chat templates: read off the rendered conversation."""
    tok = processor.tokenizer
    family = family_of(processor)
    reply = reply.strip()
    if family.template == "video_llava":
        return " " + reply, tok.eos_token
    prompt = render_prompt(processor, instruction)
    full = processor.apply_chat_template(_conversation(instruction, reply), tokenize=False)
    i = full.rfind(reply)
    if i < 0:
        raise ValueError(f"family {family.name}: the chat template changed the reply text; cannot mask it")
    # the end-of-turn text after the reply; templates that end a turn with whitespace only (Vicuna style:
    # LLaVA-NeXT-Video) get the tokenizer's EOS, or generation would never learn to stop
    end = full[i + len(reply):].rstrip() or tok.eos_token
    if full.startswith(prompt):  # what the template writes between the generation prompt and the reply
        return full[len(prompt): i + len(reply)], end
    # templates whose assistant header differs from their generation prompt (LLaVA-OneVision's
    # "assistant " vs "assistant\n"): the reply follows the generation prompt, as at inference
    return reply, end


def processor_inputs(processor, prompts: list[str], clips: list[Any], **kwargs) -> dict:
    """Run the family's processor on rendered prompts and clips (frames, or (frames, metadata))."""
    family = family_of(processor)
    frames = [c[0] if isinstance(c, tuple) else c for c in clips]
    extra = dict(family.processor_kwargs, **kwargs)
    if family.needs_video_metadata:
        from transformers.video_utils import VideoMetadata

        metas = [c[1] if isinstance(c, tuple) else None for c in clips]
        if any(m is None for m in metas):
            raise ValueError(f"family {family.name} writes frame timestamps into the prompt: pass each clip "
                             "as (frames, metadata) from pvllm.data.video_io.read_clip")
        extra["video_metadata"] = [VideoMetadata(**m) for m in metas]
    return processor(text=prompts, videos=frames, return_tensors="pt", **extra)


def reply_token_ids(processor, instruction: str, reply: str, max_reply_tokens: int | None = 64) -> list[int]:
    """The supervised token ids of a reply: its text (truncated; None = whole) + the end-of-turn tokens."""
    tok = processor.tokenizer
    content, end = reply_texts(processor, instruction, reply)
    return tok(content, add_special_tokens=False)["input_ids"][:max_reply_tokens] + \
        tok(end, add_special_tokens=False)["input_ids"]


def encode_example(processor, instruction: str | None, clip: Any, reply: str, max_reply_tokens: int | None = 64,
                   prompt: str | None = None) -> dict:
    """(input_ids, labels, visual inputs) of one sample: the Figure-5 prompt with the video expanded by the
    family's processor, then the reply (truncated to ``max_reply_tokens``) and its end-of-turn tokens. The
    labels are the reply + end tokens and nothing else. Training and likelihood scoring both use this.
    ``prompt``: an already rendered prompt instead of ``instruction`` (Video-LLaVA format only)."""
    if prompt is None:
        prompt = render_prompt(processor, instruction)
    elif family_of(processor).template != "video_llava":
        raise ValueError(f"family {family_of(processor).name}: give the instruction, not a rendered prompt")
    enc = processor_inputs(processor, [prompt], [clip])
    prompt_ids = enc["input_ids"][0]
    reply_t = torch.tensor(reply_token_ids(processor, instruction or "", reply, max_reply_tokens),
                           dtype=torch.long)
    out = {"input_ids": torch.cat([prompt_ids, reply_t]),
           "labels": torch.cat([torch.full_like(prompt_ids, IGNORE_INDEX), reply_t])}
    for k, v in enc.items():
        if k in ("input_ids", "attention_mask") or not isinstance(v, torch.Tensor):
            continue
        if v.dim() == 2 and v.shape == enc["input_ids"].shape:  # per-token (mm_token_type_ids)
            out[k] = torch.cat([v[0], torch.zeros(len(reply_t), dtype=v.dtype)])
        else:
            out[k] = v
    return out


@torch.inference_mode()
def reply_logprob(model, processor, instruction: str, clip: Any, reply: str,
                  max_reply_tokens: int | None = 64) -> float:
    """Sum of the log-probabilities of ``reply`` (its tokens + end of turn) after the Figure-5 prompt with
    the video: the quantity training minimises (``encode_example``'s labels), for ranking candidates."""
    enc = encode_example(processor, instruction, clip, reply, max_reply_tokens)
    labels = enc.pop("labels")[None]
    device = next(model.parameters()).device
    inputs = {k: (v[None] if k in ("input_ids",) or (v.dim() == 1 and len(v) == labels.shape[1]) else v)
              for k, v in enc.items()}
    inputs = {k: v.to(device) for k, v in inputs.items()}
    logits = model(**inputs, attention_mask=torch.ones_like(inputs["input_ids"])).logits[:, :-1].float()
    targets = labels[:, 1:].to(device)
    mask = targets != IGNORE_INDEX
    logp = torch.log_softmax(logits, -1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    return float((logp * mask).sum())


def visual_token_count(processor, input_ids: torch.Tensor) -> int:
    """Visual tokens in a row of input ids (the placeholders the vision features replace)."""
    ids = {getattr(processor, a, None) for a in ("video_token_id", "image_token_id")}
    ids.discard(None)
    return int(sum((input_ids == i).sum() for i in ids))


# --- the table ---------------------------------------------------------------------------------------

register_family(Family(
    name="video_llava", model_types=("video_llava",), model_class="VideoLlavaForConditionalGeneration",
    processor_class="VideoLlavaProcessor",
    vision_encoder=("model.video_tower",), unused=("model.image_tower",),
    projector=("model.multi_modal_projector",),
    language_model=("model.language_model", "lm_head"), template="video_llava",
    tiny="pvllm.models.tiny.make_tiny_video_llava", checkpoints=("LanguageBind/Video-LLaVA-7B-hf",),
))
register_family(Family(
    # issue 12's composite: Video-LLaVA's module tree with a swapped video tower (pvllm.models.composite)
    name="pvllm_video", model_types=("pvllm_video",),
    model_class="pvllm.models.composite.PVLLMVideoForConditionalGeneration",
    processor_class="VideoLlavaProcessor",
    vision_encoder=("model.video_tower",), unused=("model.image_tower",),
    projector=("model.multi_modal_projector",),
    language_model=("model.language_model", "lm_head"), template="video_llava",
    tiny="pvllm.models.tiny.make_tiny_pvllm_video",
))
register_family(Family(
    name="qwen2_5_vl", model_types=("qwen2_5_vl",), model_class="Qwen2_5_VLForConditionalGeneration",
    processor_class="Qwen2_5_VLProcessor",
    vision_encoder=("model.visual",), projector=("model.visual.merger",),
    language_model=("model.language_model", "lm_head"),
    tiny="pvllm.models.tiny.make_tiny_qwen2_5_vl",
    checkpoints=("Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2.5-VL-7B-Instruct"),
))
register_family(Family(
    name="qwen3_vl", model_types=("qwen3_vl",), model_class="Qwen3VLForConditionalGeneration",
    processor_class="Qwen3VLProcessor",
    vision_encoder=("model.visual",), projector=("model.visual.merger", "model.visual.deepstack_merger_list"),
    language_model=("model.language_model", "lm_head"), needs_video_metadata=True,
    processor_kwargs={"do_sample_frames": False},  # frames come from our reader, never resampled
    tiny="pvllm.models.tiny.make_tiny_qwen3_vl",
    checkpoints=("Qwen/Qwen3-VL-2B-Instruct", "Qwen/Qwen3-VL-4B-Instruct", "Qwen/Qwen3-VL-8B-Instruct"),
))
register_family(Family(
    name="llava_onevision", model_types=("llava_onevision",),
    model_class="LlavaOnevisionForConditionalGeneration",
    processor_class="LlavaOnevisionProcessor",
    vision_encoder=("model.vision_tower",), projector=("model.multi_modal_projector", "model.image_newline"),
    language_model=("model.language_model", "lm_head"),
    tiny="pvllm.models.tiny.make_tiny_llava_onevision",
    checkpoints=("llava-hf/llava-onevision-qwen2-0.5b-ov-hf", "llava-hf/llava-onevision-qwen2-7b-ov-hf"),
))
register_family(Family(
    name="smolvlm", model_types=("smolvlm",), model_class="SmolVLMForConditionalGeneration",
    processor_class="SmolVLMProcessor",
    vision_encoder=("model.vision_model",), projector=("model.connector",),
    language_model=("model.text_model", "lm_head"), lora_target=rf".*text_model.*\.{LLM_ATTENTION}",
    video_kwarg="pixel_values", needs_video_metadata=True,
    tiny="pvllm.models.tiny.make_tiny_smolvlm",
    checkpoints=("HuggingFaceTB/SmolVLM2-256M-Video-Instruct", "HuggingFaceTB/SmolVLM2-500M-Video-Instruct",
                 "HuggingFaceTB/SmolVLM2-2.2B-Instruct"),
))
register_family(Family(
    name="llava_next_video", model_types=("llava_next_video",),
    model_class="LlavaNextVideoForConditionalGeneration", processor_class="LlavaNextVideoProcessor",
    vision_encoder=("model.vision_tower",), projector=("model.multi_modal_projector",),
    unused=("model.image_newline",),  # images only: video features are pooled without newlines
    language_model=("model.language_model", "lm_head"),
    tiny="pvllm.models.tiny.make_tiny_llava_next_video",
    checkpoints=("llava-hf/LLaVA-NeXT-Video-7B-hf",),
))
register_family(Family(
    name="internvl", model_types=("internvl",), model_class="InternVLForConditionalGeneration",
    processor_class="InternVLProcessor",
    vision_encoder=("model.vision_tower",), projector=("model.multi_modal_projector",),
    language_model=("model.language_model", "lm_head"),
    video_kwarg="pixel_values",  # frames of all videos, flattened (InternVL's processor merges them)
    tiny="pvllm.models.tiny.make_tiny_internvl",
    checkpoints=("OpenGVLab/InternVL3-1B-hf", "OpenGVLab/InternVL3-2B-hf", "OpenGVLab/InternVL3-8B-hf"),
))
