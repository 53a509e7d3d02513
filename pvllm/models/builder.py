"""One builder for every PV-LLM: any supported HF video-LLM family (pvllm.models.families).

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

from pvllm.models.families import Family, family_for_model_type, get_family, model_parts

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
    # Regex on module names: only the LLM's projections (a bare list would also hit the vision towers);
    # None = the family's regex (pvllm.models.families)
    target_modules: str | None = None


@dataclass
class PVLLM:
    """What the builder returns: the HF model, its processor and a description for logs/W&B."""

    model: Any  # the family's *ForConditionalGeneration (possibly a peft wrapper)
    processor: Any  # the family's processor
    source: str
    family: Family | None = None
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


def apply_freezing(model, vision_encoder: PartSpec, projector: PartSpec, llm: LLMSpec) -> None:
    flags = {
        "vision_encoder": vision_encoder.trainable,
        # parts video never reaches (Video-LLaVA's image tower): frozen always, or DDP finds unused parameters
        "image_encoder (unused for video)": False,
        "projector": projector.trainable,
        "llm.word_embeddings": llm.trainable and llm.word_embeddings_trainable,
        "llm (other layers)": llm.trainable,
    }
    for name, params in model_parts(model).items():
        for p in params:
            p.requires_grad_(flags[name])


def _numel(p) -> int:
    return getattr(p, "ds_numel", None) or p.numel()  # a ZeRO-3 partitioned parameter holds only a shard


def parameter_table(model) -> list[dict]:
    rows = []
    for name, params in model_parts(model).items():
        n = sum(_numel(p) for p in params)
        t = sum(_numel(p) for p in params if p.requires_grad)
        rows.append({"part": name, "params": n, "trainable": t, "frozen": n - t})
    return rows


def format_parameter_table(rows: list[dict]) -> str:
    lines = [f"{'part':<34}{'params':>14}{'trainable':>14}{'frozen':>14}"]
    for r in rows:
        lines.append(f"{r['part']:<34}{r['params']:>14,}{r['trainable']:>14,}{r['frozen']:>14,}")
    tot = {k: sum(r[k] for r in rows) for k in ("params", "trainable", "frozen")}
    lines.append(f"{'total':<34}{tot['params']:>14,}{tot['trainable']:>14,}{tot['frozen']:>14,}")
    return "\n".join(lines)


def load_family(source: str, family: str | None = None) -> Family:
    """The family of an HF directory / hub id: named in the config, or read from its config.json."""
    if family:
        return get_family(family)
    from transformers import AutoConfig

    import pvllm.models.composite  # noqa: F401  (registers issue 12's model type pvllm_video)

    return family_for_model_type(AutoConfig.from_pretrained(source).model_type)


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
    family: str | None = None,
) -> PVLLM:
    """Load (or create, then load) a model + processor of any supported family and set what trains.

    ``family`` (a name in pvllm.models.families) is checked against the directory's model type; None =
    detected from its config.json. The family table says which modules the trainable flags address.
    ``vision_encoder`` also names a swapped encoder (conf/model/vision_encoder/, issue 12's composite
    ``pvllm_video`` family); a cached directory built for another encoder is an error.
    """
    from pvllm.models.composite import check_encoder_matches
    from pvllm.models.families import resolve_class

    source = resolve_pretrained(pretrained, create)
    check_encoder_matches(source, vision_encoder)  # a cached directory built for another encoder: error
    fam = load_family(source)
    if family and get_family(family) is not fam:
        raise ValueError(f"model.family={family!r} but {source} is a {fam.name} model ({fam.model_types[0]})")
    kwargs: dict[str, Any] = {"dtype": _dtype(dtype)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = resolve_class(fam.model_class).from_pretrained(source, **kwargs)
    processor = resolve_class(fam.processor_class).from_pretrained(source)
    # the vision_encoder node also names the encoder (conf/model/vision_encoder/); here only its flag
    ve = PartSpec(trainable=bool((vision_encoder or {}).get("trainable", False)))
    pj = PartSpec(**(projector or {"trainable": True}))
    lm = LLMSpec(**(llm or {}))
    apply_freezing(model, ve, pj, lm)
    notes = [f"family {fam.name}: {fam.model_class}"]
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
        target = spec.target_modules or fam.lora_target
        modules = {n for n, _ in model.named_modules()}
        proj_modules = [p.rsplit(".", 1)[-1] for p in fam.projector if p in modules]
        cfg = LoraConfig(
            r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=target,
            # the projector stays fully trainable next to the adapters (if the config trains it)
            modules_to_save=proj_modules if pj.trainable and proj_modules else None,
        )
        model = get_peft_model(model, cfg)
        if pj.trainable:  # projector parameters that are not modules (OneVision's image_newline)
            for path in fam.projector:
                if path not in modules:
                    model.base_model.model.get_parameter(path).requires_grad_(True)
        table = parameter_table(model)  # adapters count inside the LLM row
        notes.append(f"LoRA r={spec.r} alpha={spec.alpha} on {target}")
    model.config.pvllm_num_frames = num_frames
    return PVLLM(model=model, processor=processor, source=source, parameter_table=table, notes=notes,
                 family=fam)


def load_processor(pretrained: str, create: Callable[..., Any] | None = None, **_: Any) -> tuple[Any, str]:
    """The processor of a model config (``cfg.model``) and its resolved directory, without the weights:
    what the datamodule needs before ZeRO-3 builds the model in ``configure_model``."""
    from pvllm.models.families import resolve_class

    source = resolve_pretrained(pretrained, create)
    return resolve_class(load_family(source).processor_class).from_pretrained(source), source


def build_under_zero3(build: Callable[[], PVLLM], ds_config: dict) -> PVLLM:
    """``build()`` with transformers' ZeRO-3 path on: ``from_pretrained`` creates the model under
    ``deepspeed.zero.Init`` and loads each weight into its partitions, so no rank ever holds the whole model.

    Called by ``PVLLMModule.configure_model`` (inside Lightning's own ``zero.Init``) and by the 2-process CPU
    test (pvllm.distributed.ds_cpu). transformers reads ZeRO-3 from a weak reference to an
    ``HfDeepSpeedConfig``; the bundle keeps it alive (``bundle.zero3_config``) for as long as the model lives.
    """
    from transformers.integrations import HfDeepSpeedConfig

    stage = (ds_config.get("zero_optimization") or {}).get("stage")
    if stage != 3:
        raise ValueError(f"build_under_zero3 needs a ZeRO stage-3 DeepSpeed config, got stage {stage}")
    handle = HfDeepSpeedConfig(ds_config)
    bundle = build()
    if bundle.notes is not None:
        bundle.notes.append("built under ZeRO-3: weights partitioned as they loaded")
    bundle.zero3_config = handle  # type: ignore[attr-defined]
    return bundle
