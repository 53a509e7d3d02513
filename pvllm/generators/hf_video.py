"""One generator for every supported HF video-LLM family (``generator=hf_video``).

Loads through ``pvllm.models.builder.build_pvllm`` (the code path training uses, family from the
directory's config.json), reads frames with our reader (``pvllm.data.video_io.read_clip``: the same
``num_frames`` as training), renders the Figure-5 prompt with the family's chat template
(``pvllm.models.families.render_prompt``) and generates in left-padded batches. Greedy decoding gives
the same text at any batch size. ``pretrained`` may be any HF checkpoint of a supported family,
including one fine-tuned elsewhere (LLaMA-Factory, ms-swift) or a train run's ``hf_model/``.
Families in Video-LLaVA's format also take requests without a video (the ablation ``video.mode=none``).
With ``feature_cache`` every family replays its frozen tower's cached outputs (``pvllm.models.tower_cache``)
instead of running it, and opens no video.
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
from pvllm.data.video_io import VideoReadError, read_clip
from pvllm.generators.base import (
    GENERATORS,
    CandidateLogprobs,
    GenerationRequest,
    GenerationResult,
    Generator,
    decode_new_tokens,
    length_batches,
    without_history,
)
from pvllm.models.builder import build_pvllm
from pvllm.models.families import processor_inputs, render_prompt, reply_token_ids, unwrap
from pvllm.models.tower_cache import TowerFeatures, replay
from pvllm.prompt import build_instruction, chat_prompt, fit_history, shows_video

log = logging.getLogger(__name__)


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint that needs arbitrary code to unpickle: refused (loading it could run that code)."""


class CachedClip(tuple):
    """(black frames of the recorded shape, clip metadata) from the feature cache, carrying the tower's
    recorded outputs (``pvllm.models.tower_cache.replay``)."""

    def __new__(cls, clip: tuple, outputs: dict):
        obj = super().__new__(cls, clip)
        obj.tower_outputs = outputs
        return obj


def tower_outputs(clips: list[Any]) -> list[dict] | None:
    """The recorded tower outputs of the cached clips among ``clips``, in order (None: no feature cache)."""
    return [c.tower_outputs for c in clips if isinstance(c, CachedClip)] or None


def read_checkpoint_state(ckpt_path: str) -> dict[str, torch.Tensor]:
    """The weights of a checkpoint, never running code from it.

    ``.safetensors`` (preferred: a plain tensor file) is read with safetensors; anything else with
    ``torch.load(weights_only=True)`` (tensors and plain containers only), taking its ``state_dict``.
    A pickle that references other objects (classes, functions) is refused with UnsafeCheckpointError.
    """
    path = Path(ckpt_path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:  # e.g. a pickle renamed .safetensors: never unpickled as a fallback
            raise UnsafeCheckpointError(
                f"{ckpt_path}: refused, not a safetensors file ({type(e).__name__}: {str(e)[:200]}); a file named "
                ".safetensors is only ever read as safetensors. Give a real .safetensors file, an HF directory "
                "(train.py's hf_model/) or a Lightning .ckpt written by train.py") from None
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
        raise RuntimeError(f"{ckpt_path}: does not match the model "
                           f"(missing {missing[:5]}, unexpected {unexpected[:5]})")


@GENERATORS.register("hf_video")
class HFVideoGenerator(Generator):
    """Any HF checkpoint of a family in pvllm.models.families (directory or hub id)."""

    default_sampling: dict[str, Any] = {"do_sample": False, "max_new_tokens": 64}
    bucketed = True

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
        score_tokens: int = 2048,
        video: bool | str = True,  # ${video.mode}: none = text-only (no frames read); a bool from Python
        frame_cache: str | None = None,
        frame_size: int | None = None,
        frame_memo: int = 32,
        feature_cache: str | None = None,
        require_video_files: bool = True,
    ):
        bundle = build_pvllm(pretrained, create=create, dtype=dtype, family=family)
        # frame_memo: videos kept decoded in memory (evaluation groups samples by video); 0 decodes per sample
        self.frames = FrameSource(Sampling(num_frames, frame_size), frame_cache, memo=frame_memo,
                                  require_files=require_video_files or not frame_cache)
        self._video_tokens: int | None = None
        self.model, self.processor, self.family = bundle.model, bundle.processor, bundle.family
        if checkpoint:
            load_lightning_weights(self.model, checkpoint)
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.model.to(self.device).eval()
        self.processor.tokenizer.padding_side = "left"
        self.batch_size, self.num_frames, self.seed = batch_size, num_frames, seed
        self.fps, self.max_frames = fps, max_frames
        self.score_tokens = int(score_tokens)  # ranking: cached prompts + packed candidate tokens per forward pass
        self.video = shows_video(video)  # False: text-only (no frames read, prompt without the video token)
        if not self.video and self.family.template != "video_llava":
            raise ValueError(f"video.mode=none (text-only) uses Video-LLaVA's chat format; family {self.family.name} "
                             "is not supported with it")
        self.cache = None
        if feature_cache:  # the frozen tower's recorded outputs, replayed (built for exactly this tower)
            from pvllm.data.feature_cache import FeatureCache

            if fps is not None:
                raise ValueError("feature_cache holds num_frames uniformly spaced frames' tower outputs: unset fps")
            settings = TowerFeatures(self.model, self.processor, num_frames, frame_size).settings()
            self.cache = FeatureCache(feature_cache, settings, require_files=require_video_files)
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
        if not self.video:
            return dict(self._params, video="none", seed=self.seed)
        cfg = dict(self._params, num_frames=self.num_frames, seed=self.seed)
        if self.frames.sampling.size is not None:  # resized frames are other model inputs
            cfg["frame_size"] = self.frames.sampling.size
        if self.fps is not None:
            cfg.update(fps=self.fps, max_frames=self.max_frames)
        if self.family.name != "video_llava":
            cfg["family"] = self.family.name
        return cfg

    # video_path=None: the prompt without its video line (video ablation; Video-LLaVA's format only)
    accepts_no_video = True

    def _frames(self, req: GenerationRequest) -> Any:
        """(frames, metadata): the frame cache / decoder for uniform sampling, our reader for fps sampling;
        with a feature cache black frames of the recorded shape carrying the tower's outputs (``CachedClip``,
        no video opened); None with video off or no video shown."""
        if not self.video:
            return None
        if req.video_path is None:  # the ablation video.mode=none
            if self.family.template != "video_llava":
                raise ValueError(f"{req.sample_id}: a request without a video (video.mode=none) uses Video-LLaVA's "
                                 f"chat format; family {self.family.name} is not supported with it")
            return None
        # the video shown (the ablation may show another sample's video than the target's)
        vid = req.extra.get("shown_video_id", req.extra.get("video_id")) or Path(req.video_path).stem
        if self.cache is not None:
            entry = self.cache.get(vid, req.video_path)
            return CachedClip((entry["frames"], entry["video_metadata"]), entry["tower_outputs"])
        if self.fps is not None:
            return read_clip(req.video_path, self.num_frames, self.fps, self.max_frames)
        frames, meta = self.frames.clip(req.video_path, vid)  # the cache's metadata: no video opened on a hit
        return (frames, meta) if self.family.needs_video_metadata else frames

    def _encode(self, prompts: list[str], clips: list[Any]) -> Any:
        """Instructions (+ clips) -> model inputs in the family's chat format; text-only when there is no
        video (all items alike)."""
        if clips[0] is None:
            return self.processor.tokenizer([chat_prompt(p, video_token=None) for p in prompts], padding=True,
                                            return_tensors="pt").to(self.device)
        rendered = [render_prompt(self.processor, p) for p in prompts]
        return processor_inputs(self.processor, rendered, clips, padding=True).to(self.device)

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
        # requests with and without a video in separate batches; within one kind, batches of similar prompt
        # length (the text decides most of the padding)
        groups = [[x for x in ok if x[1] is not None], [x for x in ok if x[1] is None]]
        for chunk in ([g[i] for i in idx] for g in groups for idx in length_batches(
                [len(tok(chat_prompt(r.prompt), add_special_tokens=False)["input_ids"]) for r, _ in g],
                self.batch_size)):
            t0 = time.perf_counter()
            fitted = [self.fitted_instruction(r, c) for r, c in chunk]
            enc = self._encode([p for p, _ in fitted], [c for _, c in chunk])
            if self._params.get("do_sample"):
                # reproducible sampling: the seed depends on the run seed and the chunk's first id
                torch.manual_seed(self.seed * 1_000_003 + zlib.crc32(chunk[0][0].sample_id.encode()))
            with replay(self.model, tower_outputs([c for _, c in chunk])):
                out = self.model.generate(**enc, **self._params, pad_token_id=tok.pad_token_id)
            texts = decode_new_tokens(tok, out[:, enc["input_ids"].shape[1]:])
            dt = (time.perf_counter() - t0) / len(chunk)
            for (req, _), (text, notes), (_, fit_notes) in zip(chunk, texts, fitted):
                results[req.sample_id] = GenerationResult(req.sample_id, text, latency_s=dt,
                                                          notes=fit_notes + notes)
        return [results[r.sample_id] for r in batch]

    @property
    def reads_video(self) -> bool:  # type: ignore[override]
        return self.video

    def fitted_instruction(self, req: GenerationRequest, clip: Any) -> tuple[str, list[str]]:
        """The instruction, its history cut where the text plus the video tokens plus the reply would not fit
        the language model's context (warned and noted ``history_truncated``)."""
        context = getattr(getattr(self.model.config, "text_config", self.model.config), "max_position_embeddings",
                          None)
        if not context:
            return req.prompt, []
        tok = self.processor.tokenizer
        has_video = self.video and clip is not None  # None: no video (video.mode=none)

        def wrap(instruction: str) -> str:
            return render_prompt(self.processor, instruction) if has_video else chat_prompt(instruction, None)

        video_tokens = 0
        if has_video:
            if self._video_tokens is None:  # what the video placeholder expands to, measured once
                probe = wrap("x")
                full = processor_inputs(self.processor, [probe], [clip])["input_ids"].shape[1]
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

    @property
    def hf_model(self):
        return unwrap(self.model)

    supports_ranking = True

    def score_candidates(self, batch: list[GenerationRequest],
                         candidates: list[list[str]]) -> list[list[float] | None]:
        """Mean log-probability of each candidate's reply tokens (+ end of turn) after the request's prompt,
        conditioned exactly as ``generate`` is (pvllm.generators.base.Generator.score_candidates)."""
        return [None if r is None else r.mean for r in self.candidate_logprobs(batch, candidates)]

    def candidate_logprobs(self, batch: list[GenerationRequest], candidates: list[list[str]],
                           no_history: bool = False) -> list[CandidateLogprobs | None]:
        """Summed log-probabilities of the candidates (pvllm.generators.base.Generator.candidate_logprobs):
        each prompt and its video once, the candidates of the whole batch packed into forward passes of at
        most ``score_tokens`` tokens (pvllm.generators.likelihood.score_prompt_replies). With ``no_history``
        the two prompts share their common start (the video) and branch after it."""
        from pvllm.generators.likelihood import PromptReplies, score_prompt_replies

        out: list[CandidateLogprobs | None] = [None] * len(batch)
        items: list[tuple[int, list[PromptReplies], list[list[int]]]] = []
        roots: list[Any] = []  # the clip of each scoring item, in order (the feature cache replays them)
        for i, (req, cands) in enumerate(zip(batch, candidates)):
            try:
                clip = self._frames(req)
            except VideoReadError as e:
                log.warning("ranking: cannot read the video of %s: %s", req.sample_id, e)
                continue
            replies = [reply_token_ids(self.processor, req.prompt, c, None) for c in cands]  # untruncated
            prompts = [req] + ([without_history(req)] if no_history else [])
            if no_history:
                other = [reply_token_ids(self.processor, prompts[1].prompt, c, None) for c in cands]
                if other != replies:
                    raise ValueError(f"{req.sample_id}: family {self.family.name} writes the reply differently "
                                     "without the history; PMI would compare other token sequences")
            items.append((i, self._prompt_items(prompts, clip, replies), replies))
            roots += [clip] * len(items[-1][1])
        flat = [it for _, its, _ in items for it in its]
        with replay(self.model, tower_outputs(roots)):  # each item's prompt runs its video once, in order
            score_prompt_replies(self.model, flat, self.device, max_tokens=self.score_tokens)
        for i, its, replies in items:
            sums = torch.cat([it.sums for it in its])  # one row per prompt: own, then (PMI) none
            out[i] = CandidateLogprobs(sums[0].tolist(), [len(r) for r in replies],
                                       sums[1].tolist() if no_history else None)
        return out

    def _prompt_items(self, prompts: list[GenerationRequest], clip: Any, replies: list[list[int]]) -> list:
        """The model inputs of one or two prompts of the same sample as scoring items: one shared root (up to
        where the prompts' token ids part, which must be after every visual token) with a text branch per
        prompt; else one item per prompt."""
        from pvllm.generators.likelihood import PromptReplies

        encs = [self._encode([r.prompt], [clip]).to("cpu") for r in prompts]
        ids = [e["input_ids"][0] for e in encs]

        def root(enc: dict, n: int) -> dict:
            per_token = enc["input_ids"].shape
            return {k: (v[:, :n] if v.shape == per_token else v) for k, v in enc.items()
                    if k != "attention_mask" and isinstance(v, torch.Tensor)}

        if len(encs) == 1:
            return [PromptReplies(root(encs[0], len(ids[0])), replies)]
        n = min(len(x) for x in ids)
        common = int(torch.nonzero(ids[0][:n] != ids[1][:n])[0]) if (ids[0][:n] != ids[1][:n]).any() else n
        visual = [t for t in (getattr(self.processor, a, None) for a in ("video_token_id", "image_token_id"))
                  if t is not None]
        last_visual = max((int(torch.nonzero(ids[0] == t)[-1]) for t in visual if (ids[0] == t).any()), default=-1)
        same_inputs = all(torch.equal(encs[0][k], encs[1][k]) for k in encs[0]
                          if k not in ("input_ids", "attention_mask") and isinstance(encs[0][k], torch.Tensor)
                          and encs[0][k].shape != encs[0]["input_ids"].shape)
        if common > last_visual and common > 0 and same_inputs:
            return [PromptReplies(root(encs[0], common), replies, [x[common:].tolist() for x in ids])]
        return [PromptReplies(root(e, len(x)), replies) for e, x in zip(encs, ids)]
