"""One builder for every PV-LLM: the 7B Video-LLaVA, PV-LLM-small and the tiny test model.

Each model config names an HF directory (or hub id) that ``from_pretrained`` loads, plus an optional
``create`` function that writes that directory when it is missing (tiny / small models made here).
Freezing is data: each part has a ``trainable`` flag (paper §3.2: vision encoder and LLM word
embeddings frozen, projector and the rest of the LLM trained); a table of counts is logged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


@dataclass
class PartSpec:
    trainable: bool


@dataclass
class LLMSpec:
    trainable: bool = True
    word_embeddings_trainable: bool = False


@dataclass
class LoraSpec:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    # Regex on module names: only the LLM's projections (a bare list would also hit the CLIP towers).
    target_modules: str = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)"


@dataclass
class PVLLM:
    """What the builder returns: the HF model, its processor and a description for logs/W&B."""

    model: Any  # VideoLlavaForConditionalGeneration (possibly a peft wrapper)
    processor: Any  # VideoLlavaProcessor
    source: str
    parameter_table: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _dtype(name: str) -> torch.dtype:
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; valid: float32, bfloat16, float16") from None


def resolve_pretrained(pretrained: str, create: Callable[..., Any] | None) -> str:
    """A local directory (created by ``create`` if missing) or a hub id passed through unchanged."""
    path = Path(os.path.expanduser(pretrained))
    if (path / "config.json").is_file():
        return str(path)
    if create is not None:
        log.info("creating model directory %s", path)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        create(tmp)
        try:
            os.replace(tmp, path)  # atomic: a killed create never leaves a half directory at `path`
        except OSError:  # another process created it first
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        return str(path)
    if path.is_absolute() or pretrained.startswith((".", "~")) or path.exists():
        raise FileNotFoundError(f"model directory {path} has no config.json (and the config has no `create`)")
    return pretrained  # a hub id such as LanguageBind/Video-LLaVA-7B-hf


def model_parts(model) -> dict[str, list[torch.nn.Parameter]]:
    """Parameters by part of the HF VideoLlava module tree (transformers 5: model.model.{...}, lm_head)."""
    inner = model.model
    emb = model.get_input_embeddings()
    emb_ids = {id(p) for p in emb.parameters()}
    llm = [p for p in inner.language_model.parameters() if id(p) not in emb_ids]
    llm += [p for p in model.lm_head.parameters() if id(p) not in emb_ids]
    return {
        "vision_encoder": list(inner.video_tower.parameters()),
        "image_encoder (unused for video)": list(inner.image_tower.parameters()),
        "projector": list(inner.multi_modal_projector.parameters()),
        "llm.word_embeddings": list(emb.parameters()),
        "llm (other layers)": llm,
    }


def apply_freezing(model, vision_encoder: PartSpec, projector: PartSpec, llm: LLMSpec) -> None:
    parts = model_parts(model)
    flags = {
        "vision_encoder": vision_encoder.trainable,
        # The image tower is unused for video: frozen always, or DDP finds unused parameters.
        "image_encoder (unused for video)": False,
        "projector": projector.trainable,
        "llm.word_embeddings": llm.trainable and llm.word_embeddings_trainable,
        "llm (other layers)": llm.trainable,
    }
    for name, params in parts.items():
        for p in params:
            p.requires_grad_(flags[name])


def parameter_table(model) -> list[dict]:
    rows = []
    for name, params in model_parts(model).items():
        n = sum(p.numel() for p in params)
        t = sum(p.numel() for p in params if p.requires_grad)
        rows.append({"part": name, "params": n, "trainable": t, "frozen": n - t})
    return rows


def format_parameter_table(rows: list[dict]) -> str:
    lines = [f"{'part':<34}{'params':>14}{'trainable':>14}{'frozen':>14}"]
    for r in rows:
        lines.append(f"{r['part']:<34}{r['params']:>14,}{r['trainable']:>14,}{r['frozen']:>14,}")
    tot = {k: sum(r[k] for r in rows) for k in ("params", "trainable", "frozen")}
    lines.append(f"{'total':<34}{tot['params']:>14,}{tot['trainable']:>14,}{tot['frozen']:>14,}")
    return "\n".join(lines)


def build_pvllm(
    pretrained: str,
    create: Callable[..., Any] | None = None,
    vision_encoder: dict | None = None,
    projector: dict | None = None,
    llm: dict | None = None,
    lora: dict | None = None,
    dtype: str = "float32",
    attn_implementation: str | None = None,
    gradient_checkpointing: bool = False,
    num_frames: int = 8,
) -> PVLLM:
    """Load (or create, then load) a VideoLlava model + processor and set what trains."""
    from transformers import VideoLlavaProcessor

    from pvllm.models.composite import check_encoder_matches, model_class_for

    source = resolve_pretrained(pretrained, create)
    check_encoder_matches(source, vision_encoder)  # a cached directory built for another encoder: error
    kwargs: dict[str, Any] = {"dtype": _dtype(dtype)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = model_class_for(source).from_pretrained(source, **kwargs)
    processor = VideoLlavaProcessor.from_pretrained(source)
    # the vision_encoder node also names the encoder (conf/model/vision_encoder/); here only its flag
    ve = PartSpec(trainable=bool((vision_encoder or {}).get("trainable", False)))
    pj = PartSpec(**(projector or {"trainable": True}))
    lm = LLMSpec(**(llm or {}))
    apply_freezing(model, ve, pj, lm)
    notes = []
    readme = Path(source) / "README.md"
    if readme.is_file():
        notes.append(readme.read_text().strip().splitlines()[0])
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    table = parameter_table(model)
    if lora:
        from peft import LoraConfig, get_peft_model

        spec = LoraSpec(**lora)
        cfg = LoraConfig(
            r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=spec.target_modules,
            # the projector stays fully trainable next to the adapters (if the config trains it)
            modules_to_save=["multi_modal_projector"] if pj.trainable else None,
        )
        model = get_peft_model(model, cfg)
        table = parameter_table(model.base_model.model)  # adapters count inside the LLM row
        notes.append(f"LoRA r={spec.r} alpha={spec.alpha} on {spec.target_modules}")
    model.config.pvllm_num_frames = num_frames
    return PVLLM(model=model, processor=processor, source=source, parameter_table=table, notes=notes)
