"""Video-ChatGPT (Maaz et al., 2023): the paper's Video-ChatGPT-7B baseline, reimplemented on plain transformers.

Architecture (github.com/mbzuai-oryx/Video-ChatGPT): CLIP ViT-L/14 penultimate-layer patch features (CLS
dropped) of up to 100 frames; average over space -> one token per frame (zero-padded to 100), average over
time -> 256 spatial tokens; the 356 tokens go through one ``nn.Linear(1024, 4096)`` into a LLaVA-7B
(Vicuna) LLM at the ``<vid_patch>`` positions between ``<vid_start>``/``<vid_end>``.

Released layout, loaded by ``load_video_chatgpt``:
- ``llm_path``: the LLaVA-Lightning-7B-v1-1 HF directory (``config.json`` with ``model_type: llava`` and
  ``mm_vision_tower``, LLaMA weights, sentencepiece tokenizer);
- ``projector_path``: ``video_chatgpt-7B.bin``, a torch state dict with ``model.mm_projector.{weight,bias}``
  and ``model.embed_tokens.weight`` (the embeddings incl. the 3 added video tokens), as saved by their
  trainer with ``tune_mm_mlp_adapter``;
- ``vision_tower``: ``openai/clip-vit-large-patch14`` (default: the LLM config's ``mm_vision_tower``).

Decoding defaults are theirs (``video_chatgpt/inference.py``): sampling, temperature 0.2,
max_new_tokens 1024; conversation template ``video-chatgpt_v1``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from pvllm.generators.base import (
    GENERATORS,
    GenerationRequest,
    GenerationResult,
    Generator,
    decode_new_tokens,
    length_batches,
)

log = logging.getLogger(__name__)

VID_PATCH, VID_START, VID_END = "<vid_patch>", "<vid_start>", "<vid_end>"
# conv_video_chatgpt_v1, verbatim (including the missing space after "language.").
SYSTEM = (
    "You are Video-ChatGPT, a large vision-language assistant. "
    "You are able to understand the video content that the user provides, and assist the user with a "
    "variety of tasks using natural language."
    "Follow the instructions carefully and explain your answers in detail based on the provided video."
)
VIDEO_CHATGPT_SAMPLING = {"do_sample": True, "temperature": 0.2, "max_new_tokens": 1024}  # their inference.py


class VideoChatGPTLoadError(RuntimeError):
    """The checkpoint layout does not match Video-ChatGPT's (names the file and what is wrong)."""


def seq_frame_indices(num_total: int, num_frames: int) -> list[int]:
    """Video-ChatGPT's ``get_seq_frames``: the middle index of each of ``num_frames`` equal segments."""
    seg = float(num_total - 1) / num_frames
    return [(int(np.round(seg * i)) + int(np.round(seg * (i + 1)))) // 2 for i in range(num_frames)]


def read_video_frames(path: str | os.PathLike, max_frames: int = 100) -> np.ndarray:
    """``min(len, max_frames)`` RGB frames, uint8 (T, H, W, 3), sampled as Video-ChatGPT's ``load_video``."""
    from pvllm.data.video_io import VideoReadError, open_video

    vr, n, _ = open_video(path)
    try:
        return vr.get_batch(seq_frame_indices(n, min(n, max_frames))).asnumpy()
    except Exception as e:  # decord's C++ errors
        raise VideoReadError(f"cannot decode video {os.fspath(path)}: {str(e).splitlines()[0][:200]}") from e


def spatio_temporal_tokens(features: Any, num_frames: int = 100) -> Any:
    """(T, S, C) patch features -> (num_frames + S, C): per-frame means (zero-padded to ``num_frames``),
    then per-patch means over time (``get_spatio_temporal_features_torch``)."""
    import torch

    t, _, c = features.shape
    temporal = features.mean(dim=1)
    if t < num_frames:
        temporal = torch.cat([temporal, features.new_zeros(num_frames - t, c)], dim=0)
    spatial = features.mean(dim=0)
    return torch.cat([temporal, spatial], dim=0)


def build_prompt(question: str, num_video_tokens: int) -> str:
    """Template ``video-chatgpt_v1`` with the video after the question (their ``video_chatgpt_infer``)."""
    qs = f"{question}\n{VID_START}{VID_PATCH * num_video_tokens}{VID_END}"
    return f"{SYSTEM} USER: {qs} ASSISTANT:"


def _load_state_dict(path: Path) -> dict[str, Any]:
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(str(path), map_location="cpu", weights_only=True)


def load_video_chatgpt(
    llm_path: str | os.PathLike,
    projector_path: str | os.PathLike,
    vision_tower: str | os.PathLike | None = None,
    dtype: str = "float32",
) -> dict[str, Any]:
    """Load the released layout -> dict(tokenizer, llm, projector, vision_tower, image_processor, ids)."""
    import torch
    from transformers import (
        AutoTokenizer,
        CLIPImageProcessor,
        CLIPVisionModel,
        LlamaConfig,
        LlamaForCausalLM,
    )

    llm_path, projector_path = Path(llm_path), Path(projector_path)
    torch_dtype = getattr(torch, dtype)
    raw = json.loads((llm_path / "config.json").read_text())
    # LLaVA's config says model_type "llava" (old LLaVA, not transformers' LlavaConfig): read it as LLaMA.
    config = LlamaConfig.from_dict({k: v for k, v in raw.items() if k not in ("model_type", "architectures")})
    vision_tower = str(vision_tower or raw.get("mm_vision_tower") or "openai/clip-vit-large-patch14")

    tokenizer = AutoTokenizer.from_pretrained(str(llm_path))
    tokenizer.add_tokens([VID_PATCH], special_tokens=True)
    tokenizer.add_tokens([VID_START, VID_END], special_tokens=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    tokenizer.padding_side = "left"

    llm = LlamaForCausalLM.from_pretrained(str(llm_path), config=config, dtype=torch_dtype)
    llm.resize_token_embeddings(len(tokenizer))
    hidden = llm.config.hidden_size

    state = _load_state_dict(projector_path)
    w = [k for k in state if k.endswith("mm_projector.weight")]
    b = [k for k in state if k.endswith("mm_projector.bias")]
    emb = [k for k in state if k.endswith("embed_tokens.weight")]
    unknown = sorted(set(state) - set(w + b + emb))
    if len(w) != 1 or len(b) != 1 or unknown:
        raise VideoChatGPTLoadError(
            f"{projector_path}: expected mm_projector.weight/bias (+ embed_tokens.weight), found keys {sorted(state)}"
        )
    weight, bias = state[w[0]], state[b[0]]
    if weight.shape[0] != hidden or bias.shape != (hidden,):
        raise VideoChatGPTLoadError(
            f"{projector_path}: projector {tuple(weight.shape)} does not map into the LLM's hidden size {hidden}"
        )
    projector = torch.nn.Linear(weight.shape[1], hidden)
    projector.load_state_dict({"weight": weight, "bias": bias})
    if emb:
        table, current = state[emb[0]], llm.get_input_embeddings().weight
        with torch.no_grad():
            if table.shape == current.shape:
                current.copy_(table)
            elif table.shape == (3, hidden):  # only the 3 added video tokens
                current[-3:].copy_(table)
            else:
                raise VideoChatGPTLoadError(
                    f"{projector_path}: embed_tokens {tuple(table.shape)} fits neither the resized table "
                    f"{tuple(current.shape)} nor the 3 added tokens"
                )

    tower = CLIPVisionModel.from_pretrained(vision_tower, dtype=torch_dtype)
    image_processor = CLIPImageProcessor.from_pretrained(vision_tower)
    if tower.config.hidden_size != weight.shape[1]:
        raise VideoChatGPTLoadError(
            f"vision tower {vision_tower} has width {tower.config.hidden_size}, the projector expects {weight.shape[1]}"
        )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (VID_PATCH, VID_START, VID_END)}
    return {
        "tokenizer": tokenizer,
        "llm": llm.eval(),
        "projector": projector.to(torch_dtype).eval(),
        "vision_tower": tower.eval(),
        "image_processor": image_processor,
        "ids": ids,
        "vision_tower_name": vision_tower,
    }


@GENERATORS.register("video_chatgpt")
class VideoChatGPTGenerator(Generator):
    """Video-ChatGPT zero-shot: the Figure-5 instruction as the question, the video tokens after it."""

    bucketed = True

    def __init__(
        self,
        llm_path: str,
        projector_path: str,
        vision_tower: str | None = None,
        num_frames: int = 100,
        sampling: dict[str, Any] | None = None,
        greedy: bool = False,
        batch_size: int = 1,
        seed: int = 0,
        dtype: str = "float32",
        device: str = "auto",
    ):
        import torch

        device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        parts = load_video_chatgpt(llm_path, projector_path, vision_tower, dtype)
        self.tokenizer = parts["tokenizer"]
        self.llm = parts["llm"].to(device)
        self.projector = parts["projector"].to(device)
        self.vision_tower = parts["vision_tower"].to(device)
        self.image_processor = parts["image_processor"]
        self.ids = parts["ids"]
        self.llm_path, self.projector_path = str(llm_path), str(projector_path)
        self.vision_tower_name = parts["vision_tower_name"]
        self.num_frames = int(num_frames)
        params = dict(VIDEO_CHATGPT_SAMPLING, **(sampling or {}))
        if greedy:
            params.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        self.params = {k: v for k, v in params.items() if v is not None}
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.device = device
        crop = self.image_processor.crop_size
        self.frame_size = (crop["height"], crop["width"])
        patches = (self.vision_tower.config.image_size // self.vision_tower.config.patch_size) ** 2
        self.num_video_tokens = self.num_frames + patches  # 100 + 256 = 356 for ViT-L/14 at 224 px

    @property
    def model_id(self) -> str:
        return f"llm={self.llm_path} projector={self.projector_path} vision={self.vision_tower_name}"

    @property
    def generation_config(self) -> dict[str, Any]:
        cfg = dict(self.params)
        cfg.update(
            num_frames=self.num_frames, video_tokens=self.num_video_tokens, template="video-chatgpt_v1"
        )
        if self.params.get("do_sample"):
            cfg["seed"] = self.seed
        return cfg

    # -- pieces (public so tests can check them one by one) --------------------------------------------
    def video_tokens(self, frames: np.ndarray) -> Any:
        """uint8 (T, H, W, 3) -> projected (num_frames + S, hidden) video embeddings."""
        import torch

        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
        if tuple(x.shape[-2:]) != self.frame_size:
            # Their load_video: nearest-neighbour resize to the model's frame size before the CLIP processor.
            x = torch.nn.functional.interpolate(x, size=self.frame_size)
        images = list(x.to(torch.uint8).permute(0, 2, 3, 1).numpy())
        pixels = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        pixels = pixels.to(self.device, self.vision_tower.dtype)
        with torch.inference_mode():
            hidden = self.vision_tower(pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
            return self.projector(spatio_temporal_tokens(hidden, self.num_frames))

    def build_inputs(self, prompts: list[str], videos: list[Any]) -> tuple[Any, Any]:
        """Left-padded (inputs_embeds, attention_mask) with each row's ``<vid_patch>`` slots replaced."""
        import torch

        enc = self.tokenizer(prompts, return_tensors="pt", padding=True).to(self.device)
        ids = enc["input_ids"]
        with torch.inference_mode():
            embeds = self.llm.get_input_embeddings()(ids).clone()
            for row, video in enumerate(videos):
                slots = (ids[row] == self.ids[VID_PATCH]).nonzero().squeeze(-1)
                if len(slots) != video.shape[0]:
                    raise ValueError(
                        f"row {row}: {len(slots)} <vid_patch> slots for {video.shape[0]} video tokens"
                    )
                embeds[row, slots] = video.to(embeds.dtype)
        return embeds, enc["attention_mask"]

    def generate(self, batch: list[GenerationRequest]) -> list[GenerationResult]:
        from pvllm.data.video_io import VideoReadError

        out: dict[str, GenerationResult] = {}
        # every prompt has the same number of video tokens: the question's length decides the padding
        lengths = [len(self.tokenizer(r.prompt, add_special_tokens=False)["input_ids"]) for r in batch]
        for idx in length_batches(lengths, self.batch_size):
            chunk = [batch[i] for i in idx]
            t0 = time.perf_counter()
            ok, videos, errors = [], [], {}
            for r in chunk:
                try:
                    videos.append(self.video_tokens(read_video_frames(r.video_path, self.num_frames)))
                    ok.append(r)
                except VideoReadError as e:
                    errors[r.sample_id] = f"video_chatgpt sample {r.sample_id}: {e}"
            fitted = {r.sample_id: self.fitted_prompt(r) for r in ok}
            texts = self._generate([fitted[r.sample_id][0] for r in ok], videos, ok) if ok else []
            by_id = {r.sample_id: (t, fitted[r.sample_id][1] + n) for r, (t, n) in zip(ok, texts)}
            dt = (time.perf_counter() - t0) / len(chunk)
            for r in chunk:
                if r.sample_id in errors:
                    out[r.sample_id] = GenerationResult(r.sample_id, None, errors[r.sample_id], dt)
                else:  # an empty text is judged by the one failure rule (evaluation.apply_failure_rule)
                    text, notes = by_id[r.sample_id]
                    out[r.sample_id] = GenerationResult(r.sample_id, text, None, dt, notes)
        return [out[r.sample_id] for r in batch]

    def fitted_prompt(self, req: GenerationRequest) -> tuple[str, list[str]]:
        """The prompt, its history cut where text + video tokens + reply exceed the LLM's context (noted)."""
        from pvllm.prompt import build_instruction, fit_history

        context = getattr(self.llm.config, "max_position_embeddings", None)
        if not context:
            return build_prompt(req.prompt, self.num_video_tokens), []
        budget = context - int(self.params.get("max_new_tokens", 64))

        def n_tokens(h: list[str]) -> int:
            text = build_prompt(build_instruction(h, req.title if req.include_title else None), self.num_video_tokens)
            return len(self.tokenizer(text)["input_ids"])

        history, cut = fit_history(req.history, n_tokens, budget)
        if not cut:
            return build_prompt(req.prompt, self.num_video_tokens), []
        log.warning("%s: history cut to fit the context of %d tokens", req.sample_id, context)
        instruction = build_instruction(history, req.title if req.include_title else None)
        return build_prompt(instruction, self.num_video_tokens), ["history_truncated"]

    def _generate(
        self, prompts: list[str], videos: list[Any], reqs: list[GenerationRequest]
    ) -> list[tuple[str, list[str]]]:
        import hashlib

        import torch

        embeds, mask = self.build_inputs(prompts, videos)
        if self.params.get("do_sample"):
            digest = hashlib.sha256(
                ("\0".join(r.sample_id for r in reqs) + f"\0{self.seed}").encode()
            ).digest()
            torch.manual_seed(int.from_bytes(digest[:8], "little"))
        with torch.inference_mode():
            gen = self.llm.generate(
                inputs_embeds=embeds,
                attention_mask=mask,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
                **self.params,
            )
        # Given only inputs_embeds, generate returns just the new tokens.
        return decode_new_tokens(self.tokenizer, gen)

    def close(self) -> None:
        self.llm = self.vision_tower = self.projector = None
