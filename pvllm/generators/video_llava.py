"""HF Video-LLaVA generators: PV-LLM (a trained checkpoint) and zero-shot Video-LLaVA-7B.

Both load through ``pvllm.models.builder.build_pvllm`` (the code path training uses), read the
frames through ``pvllm.data.frame_cache.FrameSource`` (the frame cache when configured, each video decoded
once per run otherwise) and batch by prompt length with left padding.
"""

from __future__ import annotations

import logging
import pickle
import time
import zlib
from pathlib import Path
from typing import Any

import torch

from pvllm.data.frame_cache import FrameSource, Sampling
from pvllm.data.video_io import VideoReadError
from pvllm.generators.base import (
    GENERATORS,
    GenerationRequest,
    GenerationResult,
    Generator,
    decode_new_tokens,
    length_batches,
)
from pvllm.models.builder import build_pvllm
from pvllm.prompt import build_instruction, chat_prompt, fit_history

log = logging.getLogger(__name__)

# Video-LLaVA's own inference defaults (its README/cli: do_sample, temperature 0.1); comments are
# short, so fewer new tokens than its 1024.
VIDEO_LLAVA_SAMPLING = {"do_sample": True, "temperature": 0.1, "top_p": None, "max_new_tokens": 64}


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


@GENERATORS.register("video_llava")
class VideoLlavaGenerator(Generator):
    """Any VideoLlavaForConditionalGeneration directory or hub id (zero-shot Video-LLaVA-7B by default)."""

    bucketed = True

    def __init__(
        self,
        pretrained: str = "LanguageBind/Video-LLaVA-7B-hf",
        checkpoint: str | None = None,
        create: Any = None,
        sampling: dict | None = None,
        greedy: bool = False,
        batch_size: int = 4,
        num_frames: int = 8,
        dtype: str = "float32",
        device: str = "auto",
        seed: int = 0,
        score_batch_size: int = 20,
        video: bool = True,
        frame_cache: str | None = None,
        frame_size: int | None = None,
        frame_memo: int = 32,
        feature_cache: str | None = None,
    ):
        bundle = build_pvllm(pretrained, create=create, dtype=dtype)
        # frame_memo: videos kept decoded in memory (evaluation groups samples by video); 0 decodes per sample
        self.frames = FrameSource(Sampling(num_frames, frame_size), frame_cache, memo=frame_memo)
        self.model, self.processor = bundle.model, bundle.processor
        if checkpoint:
            load_lightning_weights(self.model, checkpoint)
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.model.to(self.device).eval()
        self.processor.tokenizer.padding_side = "left"
        self.batch_size, self.num_frames, self.seed = batch_size, num_frames, seed
        self.score_batch_size = int(score_batch_size)  # sequences per forward pass when ranking candidates
        self.video = bool(video)  # False: text-only PV-LLM (no frames read, prompt without the video token)
        self._video_tokens: int | None = None
        self.cache = None
        if feature_cache:  # frozen encoder outputs read from the cache (built for exactly this encoder)
            from pvllm.data.feature_cache import FeatureCache

            self.cache = FeatureCache.for_model(feature_cache, self.model, self.processor, num_frames)
        params = dict(VIDEO_LLAVA_SAMPLING, **(sampling or {}))
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
        if not self.video:
            return dict(self._params, video="none", seed=self.seed)
        cfg = dict(self._params, num_frames=self.num_frames, seed=self.seed)
        if self.frames.sampling.size is not None:  # resized frames are other model inputs
            cfg["frame_size"] = self.frames.sampling.size
        return cfg

    accepts_no_video = True  # video_path=None: the prompt without its video line (video ablation)

    def _frames(self, req: GenerationRequest) -> Any:
        """Frames (frame cache or decoded), cached encoder features (T, N, C), or None (video off, or the
        ablation video.mode=none)."""
        if not self.video or req.video_path is None:
            return None
        if self.cache is not None:
            return self.cache.features(req.video_path)
        # the video shown (the ablation may show another sample's video than the target's)
        return self.frames.get(req.video_path, req.extra.get("shown_video_id", req.extra.get("video_id")))

    def _encode(self, prompts: list[str], frames: list[Any]) -> Any:
        """Chat prompts (+ videos) -> model inputs; text-only when there is no video (all items alike)."""
        if frames[0] is None:
            return self.processor.tokenizer([chat_prompt(p, video_token=None) for p in prompts], padding=True,
                                            return_tensors="pt").to(self.device)
        texts = [chat_prompt(p) for p in prompts]
        if self.cache is None:
            return self.processor(text=texts, videos=frames, padding=True, return_tensors="pt").to(self.device)
        vt = self.processor.video_token  # cached features: expand <video> as the processor would
        texts = [t.replace(vt, vt * (f.shape[0] * f.shape[1])) for t, f in zip(texts, frames)]
        enc = self.processor.tokenizer(texts, padding=True, return_tensors="pt")
        enc["pixel_values_videos"] = torch.stack(frames)
        return enc.to(self.device)

    @torch.inference_mode()
    def generate(self, batch: list[GenerationRequest]) -> list[GenerationResult]:
        results: dict[str, GenerationResult] = {}
        ok: list[tuple[GenerationRequest, Any]] = []
        for req in batch:
            try:
                ok.append((req, self._frames(req)))
            except VideoReadError as e:
                results[req.sample_id] = GenerationResult(req.sample_id, None, error=f"VideoReadError: {e}")
        tok = self.processor.tokenizer
        # requests with and without a video in separate batches; within one kind, every row has the same
        # number of video tokens: the text decides the padding
        groups = [[x for x in ok if x[1] is not None], [x for x in ok if x[1] is None]]
        for chunk in ([g[i] for i in idx] for g in groups for idx in length_batches(
                [len(tok(chat_prompt(r.prompt), add_special_tokens=False)["input_ids"]) for r, _ in g],
                self.batch_size)):
            t0 = time.perf_counter()
            fitted = [self.fitted_instruction(r, f) for r, f in chunk]
            enc = self._encode([p for p, _ in fitted], [f for _, f in chunk])
            if self._params.get("do_sample"):
                # reproducible sampling: the seed depends on the run seed and the chunk's first id
                torch.manual_seed(self.seed * 1_000_003 + zlib.crc32(chunk[0][0].sample_id.encode()))
            out = self.model.generate(**enc, **self._params, pad_token_id=tok.pad_token_id)
            texts = decode_new_tokens(tok, out[:, enc["input_ids"].shape[1]:])
            dt = (time.perf_counter() - t0) / len(chunk)
            for (req, _), (text, notes), (_, fit_notes) in zip(chunk, texts, fitted):
                results[req.sample_id] = GenerationResult(req.sample_id, text, latency_s=dt,
                                                          notes=fit_notes + notes)
        return [results[r.sample_id] for r in batch]

    supports_ranking = True

    @torch.inference_mode()
    def score_candidates(self, batch: list[GenerationRequest],
                         candidates: list[list[str]]) -> list[list[float] | None]:
        """Mean log-prob of ``" " + candidate + EOS`` after the chat prompt with the video (the training
        layout, ``PVLLMCollator``); ``score_batch_size`` sequences per forward pass. An unreadable video
        gives ``None`` for that request (counted as a failure, never a score)."""
        from pvllm.generators.likelihood import mean_reply_logprobs

        tok = self.processor.tokenizer
        out: list[list[float] | None] = []
        for req, cands in zip(batch, candidates):
            try:
                frames = self._frames(req)
            except VideoReadError as e:
                log.warning("ranking: cannot read the video of %s: %s", req.sample_id, e)
                out.append(None)
                continue
            enc = self._encode([req.prompt], [frames]).to("cpu")
            prompt = enc["input_ids"][0].tolist()
            pix = enc.get("pixel_values_videos")
            replies = [tok(" " + c.strip(), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                       for c in cands]
            scores: list[float] = []
            for i in range(0, len(replies), self.score_batch_size):
                part = replies[i: i + self.score_batch_size]
                extra = None if pix is None else {
                    "pixel_values_videos": pix.expand(len(part), *pix.shape[1:])}
                scores += mean_reply_logprobs(self.model, [prompt] * len(part), part, tok.pad_token_id,
                                              self.device, extra=extra)
            out.append(scores)
        return out

    @property
    def reads_video(self) -> bool:  # type: ignore[override]
        return self.video

    def fitted_instruction(self, req: GenerationRequest, frames: Any) -> tuple[str, list[str]]:
        """The instruction, its history cut where the text plus the video tokens plus the reply would not fit
        the language model's context (warned and noted ``history_truncated``)."""
        context = getattr(getattr(self.model.config, "text_config", self.model.config), "max_position_embeddings",
                          None)
        if not context:
            return req.prompt, []
        tok = self.processor.tokenizer

        has_video = self.video and frames is not None  # None: no video (video.mode=none)

        def wrap(instruction: str) -> str:
            return chat_prompt(instruction) if has_video else chat_prompt(instruction, video_token=None)

        video_tokens = 0
        if has_video and self.cache is not None:  # cached features (T, N, C): T*N video tokens
            video_tokens = int(frames.shape[0] * frames.shape[1])
        elif has_video:
            if self._video_tokens is None:  # what <video> expands to, measured once
                probe = wrap("x")
                full = self.processor(text=[probe], videos=[frames], return_tensors="pt")["input_ids"].shape[1]
                self._video_tokens = full - len(tok(probe)["input_ids"])
            video_tokens = self._video_tokens
        budget = context - int(self._params.get("max_new_tokens", 64)) - video_tokens

        def n_tokens(h: list[str]) -> int:
            return len(tok(wrap(build_instruction(h, req.title if req.include_title else None)))["input_ids"])

        history, cut = fit_history(req.history, n_tokens, budget)
        if not cut:
            return req.prompt, []
        log.warning("%s: history cut to fit the context of %d tokens (%d -> %d characters)", req.sample_id,
                    context, sum(map(len, req.history)), sum(map(len, history)))
        return build_instruction(history, req.title if req.include_title else None), ["history_truncated"]



@GENERATORS.register("pvllm")
class PVLLMGenerator(VideoLlavaGenerator):
    """PV-LLM: a fine-tuned checkpoint, either an HF directory (``hf_model/`` of a train run) or a
    Lightning ``.ckpt`` on top of the base directory it was trained from."""
