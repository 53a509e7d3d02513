"""One generator for every supported HF video-LLM family (``generator=hf_video``).

Loads through ``pvllm.models.builder.build_pvllm`` (the code path training uses, family from the
directory's config.json), reads frames with our reader (``pvllm.data.video_io.read_clip``: the same
``num_frames`` as training), renders the Figure-5 prompt with the family's chat template
(``pvllm.models.families.render_prompt``) and generates in left-padded batches. Greedy decoding gives
the same text at any batch size. ``pretrained`` may be any HF checkpoint of a supported family,
including one fine-tuned elsewhere (LLaMA-Factory, ms-swift) or a train run's ``hf_model/``.
"""

from __future__ import annotations

import logging
import pickle
import time
import zlib
from pathlib import Path
from typing import Any

import torch

from pvllm.data.video_io import VideoReadError, read_clip
from pvllm.generators.base import GENERATORS, GenerationRequest, GenerationResult, Generator
from pvllm.models.builder import build_pvllm
from pvllm.models.families import processor_inputs, render_prompt, reply_logprob, unwrap

log = logging.getLogger(__name__)


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint that needs arbitrary code to unpickle: refused (loading it could run that code)."""


def read_checkpoint_state(ckpt_path: str) -> dict[str, torch.Tensor]:
    """The weights of a checkpoint, never running code from it.

    ``.safetensors`` (preferred: a plain tensor file) is read with safetensors; anything else with
    ``torch.load(weights_only=True)`` (tensors and plain containers only), taking its ``state_dict``.
    A pickle that references other objects (classes, functions) is refused with UnsafeCheckpointError.
    """
    path = Path(ckpt_path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"{ckpt_path}: refused, it is not a weights-only checkpoint (unpickling it would need "
            f"{str(e).splitlines()[0][:200]!r}; loading it could run code). Give a .safetensors file, an HF "
            "directory (train.py's hf_model/) or a Lightning .ckpt written by train.py") from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UnsafeCheckpointError(f"{ckpt_path}: no state_dict of tensors in this checkpoint")
    return state


def load_lightning_weights(model: torch.nn.Module, ckpt_path: str) -> None:
    """Load a PVLLMModule checkpoint (keys ``model.*``; Lightning .ckpt or .safetensors) into an HF model."""
    state = read_checkpoint_state(ckpt_path)
    state = {k.removeprefix("model."): v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or missing:
        raise RuntimeError(f"{ckpt_path}: does not match the model (missing {missing[:5]}, unexpected {unexpected[:5]})")


@GENERATORS.register("hf_video")
class HFVideoGenerator(Generator):
    """Any HF checkpoint of a family in pvllm.models.families (directory or hub id)."""

    default_sampling: dict[str, Any] = {"do_sample": False, "max_new_tokens": 64}

    def __init__(
        self,
        pretrained: str,
        checkpoint: str | None = None,
        create: Any = None,
        sampling: dict | None = None,
        greedy: bool = False,
        batch_size: int = 4,
        num_frames: int = 8,
        fps: float | None = None,
        max_frames: int | None = None,
        dtype: str = "float32",
        device: str = "auto",
        seed: int = 0,
        family: str | None = None,
    ):
        bundle = build_pvllm(pretrained, create=create, dtype=dtype, family=family)
        self.model, self.processor, self.family = bundle.model, bundle.processor, bundle.family
        if checkpoint:
            load_lightning_weights(self.model, checkpoint)
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.model.to(self.device).eval()
        self.processor.tokenizer.padding_side = "left"
        self.batch_size, self.num_frames, self.seed = batch_size, num_frames, seed
        self.fps, self.max_frames = fps, max_frames
        params = dict(self.default_sampling, **(sampling or {}))
        if greedy:
            params.update(do_sample=False, temperature=None, top_p=None)
        self._params = {k: v for k, v in params.items() if v is not None}
        src = Path(bundle.source)
        # the exact weights: resolve links such as outputs/train/latest
        self._model_id = str(Path(checkpoint).resolve() if checkpoint else src.resolve() if src.exists() else src)

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def generation_config(self) -> dict[str, Any]:
        cfg = dict(self._params, num_frames=self.num_frames, seed=self.seed)
        if self.fps is not None:
            cfg.update(fps=self.fps, max_frames=self.max_frames)
        if self.family.name != "video_llava":
            cfg["family"] = self.family.name
        return cfg

    @torch.inference_mode()
    def generate(self, batch: list[GenerationRequest]) -> list[GenerationResult]:
        results: dict[str, GenerationResult] = {}
        ok: list[tuple[GenerationRequest, Any]] = []
        for req in batch:
            try:
                ok.append((req, read_clip(req.video_path, self.num_frames, self.fps, self.max_frames)))
            except VideoReadError as e:
                results[req.sample_id] = GenerationResult(req.sample_id, None, error=f"VideoReadError: {e}")
        tok = self.processor.tokenizer
        for i in range(0, len(ok), self.batch_size):
            chunk = ok[i: i + self.batch_size]
            t0 = time.perf_counter()
            prompts = [render_prompt(self.processor, r.prompt) for r, _ in chunk]
            enc = processor_inputs(self.processor, prompts, [c for _, c in chunk], padding=True).to(self.device)
            if self._params.get("do_sample"):
                # reproducible sampling: the seed depends on the run seed and the chunk's first id
                torch.manual_seed(self.seed * 1_000_003 + zlib.crc32(chunk[0][0].sample_id.encode()))
            out = self.model.generate(**enc, **self._params, pad_token_id=tok.pad_token_id)
            texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            dt = (time.perf_counter() - t0) / len(chunk)
            for (req, _), text in zip(chunk, texts):
                results[req.sample_id] = GenerationResult(req.sample_id, text.strip(), latency_s=dt)
        return [results[r.sample_id] for r in batch]

    @property
    def hf_model(self):
        return unwrap(self.model)

    def score_candidates(self, req: GenerationRequest, candidates: list[str]) -> list[float]:
        """Log-likelihood of each candidate comment as this model's reply to the request (Figure-5 prompt,
        the same frames as ``generate``); the labels are the ones training uses."""
        clip = read_clip(req.video_path, self.num_frames, self.fps, self.max_frames)
        return [reply_logprob(self.model, self.processor, req.prompt, clip, c) for c in candidates]
