"""From a sample to a batch: the item a dataset yields (prompt, reply, frames) and the collator that tokenizes
and pads or packs items into a batch."""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from pvllm.data.dataset import PerVidCom
from pvllm.data.feature_cache import placeholder_clip
from pvllm.data.frame_cache import FrameSource, Sampling
from pvllm.data.histories import Sample
from pvllm.data.packing import LOSS_REDUCTIONS, collate_packed, padded_loss_weights
from pvllm.data.video_io import VideoReadError, read_clip
from pvllm.prompt import INSTRUCTION_TITLE, build_instruction, chat_prompt, shows_video

log = logging.getLogger(__name__)
IGNORE_INDEX = -100


class SampleDataset(Dataset):
    """Samples -> (frames, prompt, reply). A bad video raises or is skipped-and-counted (``on_bad_video``)."""

    def __init__(self, ds: PerVidCom, samples: list[Sample], num_frames: int, include_title: bool,
                 on_bad_video: str = "raise", skipped: Counter[str] | None = None, fps: float | None = None,
                 max_frames: int | None = None, video: bool | str = True, frames: FrameSource | None = None,
                 feature_cache: Any = None, task: str = "comment", history_negatives: bool = False,
                 seed: int = 0):
        if on_bad_video not in ("raise", "skip"):
            raise ValueError(f"on_bad_video must be 'raise' or 'skip', got {on_bad_video!r}")
        self.ds, self.samples, self.num_frames = ds, samples, num_frames
        # the frame cache when configured (decode-and-count otherwise); its sampling must be this one's
        self.frames = frames or FrameSource(Sampling(num_frames))
        if self.frames.sampling.num_frames != num_frames:
            raise ValueError(f"frame source samples {self.frames.sampling}, the dataset {num_frames} frames")
        self.include_title, self.on_bad_video = include_title, on_bad_video
        self.skipped: Counter[str] = Counter() if skipped is None else skipped
        self.fps, self.max_frames = fps, max_frames
        # video.mode none (or False): text-only (no frames read, no video token), e.g. a comments-only dataset
        self.video = shows_video(video)
        # pvllm.data.feature_cache.FeatureCache: the frozen tower's recorded outputs (+ the frame shape and clip
        # metadata the processor needs): no video opened, no tower run
        self.feature_cache = feature_cache
        self.task = task  # comment (PV-LLM) | title (projector alignment: the reply is the video's title)
        # loss.history_contrast: each text-only item also carries its prompt with ANOTHER user's history
        # (``neg_prompt``, same title and reply), drawn per item from ``seed`` and the sample id
        self.history_negatives, self.seed = history_negatives, seed
        if history_negatives and self.video:
            raise ValueError("loss.history_contrast (data.history_negatives) runs text-only for now: set "
                             "video.mode=none, or loss.history_contrast=0")

    def __len__(self) -> int:
        return len(self.samples)

    def _instruction(self, s: Sample) -> str:
        title = self.ds.videos[s.video_id].title if self.include_title else None
        return (INSTRUCTION_TITLE if self.task == "title"
                else build_instruction([h["text"] for h in s.history], title))

    def negative_history(self, i: int) -> list[dict]:
        """Another user's history for sample ``i``: the history of a sample of another user in this epoch's
        list (seeded by ``seed`` and the sample id), cut to as many comments as sample ``i``'s own."""
        s = self.samples[i]
        others = [t for t in self.samples if t.user_id != s.user_id]
        if not others:
            raise ValueError("loss.history_contrast needs training samples of at least two users")
        other = random.Random(f"{self.seed}:{s.sample_id}").choice(others)
        return other.history[: len(s.history)]

    def text_item(self, i: int) -> dict[str, Any]:
        """Sample ``i`` without its video (nothing read): what packing counts the text tokens of."""
        s = self.samples[i]
        instruction = self._instruction(s)
        return {"sample_id": s.sample_id, "instruction": instruction, "prompt": chat_prompt(instruction),
                "reply": s.reference}

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.samples[i]
        path = self.ds.video_path(s.video_id)
        instruction = self._instruction(s)
        if not self.video:
            item = {"sample_id": s.sample_id, "frames": None, "reply": s.reference,
                    "prompt": chat_prompt(instruction, video_token=None)}
            if self.history_negatives:
                title = self.ds.videos[s.video_id].title if self.include_title else None
                neg = build_instruction([h["text"] for h in self.negative_history(i)], title)
                item["neg_prompt"] = chat_prompt(neg, video_token=None)
            return item
        # `prompt`: the Video-LLaVA rendering; other families render `instruction` with their chat template
        item = {"sample_id": s.sample_id, "instruction": instruction, "prompt": chat_prompt(instruction),
                "reply": s.reference}
        try:
            if self.feature_cache is not None:  # the frozen tower's recorded outputs: no decoding, no tower
                item.update(self.feature_cache.get(s.video_id, path))  # a missing entry is a bad video
                return item
            if self.fps is None:  # num_frames uniformly spaced: the frame cache (frames + metadata) or a decode
                item["frames"], item["video_metadata"] = self.frames.clip(path, s.video_id)
            else:
                item["frames"], item["video_metadata"] = read_clip(path, self.num_frames, self.fps,
                                                                   self.max_frames)
        except VideoReadError as e:
            if self.on_bad_video == "raise":
                raise
            # skip-and-count, never substitute another sample: a placeholder of black frames whose labels
            # are all masked (zero loss weight), so every DDP rank still runs the same forward/backward
            log.warning("skipping sample %s (zero loss weight): %s", s.sample_id, e)
            self.skipped[str(path)] += 1
            item["bad_video"] = str(path)
            if self.feature_cache is not None:  # the tower outputs of the black placeholder frames
                item.update(self.feature_cache.placeholder())
                return item
            # black frames; what a processor needs to timestamp them (SmolVLM2, Qwen3-VL): one frame per second
            item["frames"], item["video_metadata"] = placeholder_clip(self.num_frames)
        return item


@dataclass
class PVLLMCollator:
    """Tokenizes prompt (with the expanded video tokens) and reply separately, then concatenates,
    so the label mask covers exactly the reply tokens (+ end of turn) and nothing of the prompt. ``transform``:
    the model transform (``pvllm.models.transform.ModelTransform``: the family's processor and chat template),
    built in models and handed in; this module imports no model code."""

    transform: Any
    max_reply_tokens: int = 64
    padding_side: str = "right"
    text_instructions: dict | None = None  # encoding limits of text-only items (pvllm.data.text_instructions)
    max_visual_tokens: int | None = None  # per-sample visual-token budget: more is an error naming the sample
    packing: bool = False  # one row of the samples back to back (pvllm.data.packing), no padding
    pack_tokens: int | None = None  # the packed row's token budget (checked)
    loss_reduction: str = "token"  # token | sample: "sample" adds loss_weights (pvllm.data.packing)
    _logged: bool = False

    def encode(self, item: dict[str, Any]) -> dict[str, torch.Tensor]:
        tok, family = self.transform.tokenizer, self.transform.family
        if item.get("conversations") is not None:  # text-only (Table 6): no video token, no pixel values
            from pvllm.data.text_instructions import encode_conversation

            if family.template != "video_llava":
                raise ValueError(f"text-only instructions are rendered in Video-LLaVA's chat format only; "
                                 f"family {family.name} is not supported with them")

            ti = self.text_instructions or {}
            limits = {k: ti[k] for k in ("max_tokens", "max_turn_tokens") if k in ti}
            return encode_conversation(tok, item["conversations"], **limits)
        family = self.transform.family
        if item["frames"] is None:  # text-only PV-LLM item (video.mode=none): Video-LLaVA's chat format
            if family.template != "video_llava":
                raise ValueError(f"video.mode=none (text-only) uses Video-LLaVA's chat format; family "
                                 f"{family.name} is not supported with it")
            reply_ids = tok(" " + item["reply"].strip(), add_special_tokens=False)["input_ids"]
            reply = torch.tensor(reply_ids[: self.max_reply_tokens] + [tok.eos_token_id], dtype=torch.long)
            out = {}
            for key, prompt in (("", item["prompt"]), ("neg_", item.get("neg_prompt"))):
                if prompt is not None:  # neg_: the same reply after another user's history
                    prompt_ids = tok([prompt], return_tensors="pt")["input_ids"][0]
                    out[f"{key}input_ids"] = torch.cat([prompt_ids, reply])
                    out[f"{key}labels"] = torch.cat([torch.full_like(prompt_ids, IGNORE_INDEX), reply])
            return out
        clip = (item["frames"], item["video_metadata"]) if item.get("video_metadata") else item["frames"]
        instruction = item.get("instruction")
        enc = self.transform.encode_example(instruction, clip, item["reply"], self.max_reply_tokens,
                                            prompt=None if instruction is not None else item["prompt"])
        if item.get("bad_video"):  # a skipped video's placeholder: nothing of it is learned
            enc["labels"] = torch.full_like(enc["labels"], IGNORE_INDEX)
            return enc
        n_visual = self.transform.visual_token_count(enc["input_ids"])
        if self.max_visual_tokens is not None and n_visual > self.max_visual_tokens:
            raise ValueError(
                f"sample {item.get('sample_id')}: {n_visual} visual tokens > data.max_visual_tokens="
                f"{self.max_visual_tokens} ({family.name}, {len(item['frames'])} frames of "
                f"{item['frames'].shape[2]}x{item['frames'].shape[1]}); lower data.num_frames / the "
                "processor's max pixels, or raise the budget")
        if not self._logged:
            log.info("visual tokens per sample: %d (%s, %d frames of %dx%d)", n_visual, family.name,
                     len(item["frames"]), item["frames"].shape[2], item["frames"].shape[1])
            self._logged = True
        return enc

    def _pad(self, encs: list[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """input_ids, attention_mask, labels of ``encs`` padded to the longest on ``padding_side``."""
        n = max(len(e["input_ids"]) for e in encs)
        ids = torch.full((len(encs), n), self.transform.tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((len(encs), n), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(encs), n), dtype=torch.long)
        for i, e in enumerate(encs):
            sl = slice(n - len(e["input_ids"]), n) if self.padding_side == "left" else slice(0, len(e["input_ids"]))
            ids[i, sl], labels[i, sl], mask[i, sl] = e["input_ids"], e["labels"], 1
        return ids, mask, labels

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        if self.loss_reduction not in LOSS_REDUCTIONS:
            raise ValueError(f"data.loss_reduction must be one of {', '.join(LOSS_REDUCTIONS)}, "
                             f"got {self.loss_reduction!r}")
        encs = [self.encode(it) for it in items]
        negs = [{"input_ids": e.pop("neg_input_ids"), "labels": e.pop("neg_labels")} for e in encs
                if "neg_input_ids" in e]
        if negs and (self.packing or len(negs) != len(encs)):
            raise ValueError("loss.history_contrast needs every item's other-user history and padded batches "
                             "(not data.packing)")
        if self.packing:
            batch = collate_packed(encs, loss_weights=self.loss_reduction == "sample")
            n_tok = batch["input_ids"].shape[1]
            if self.pack_tokens is not None and n_tok > self.pack_tokens:  # the planned lengths were wrong
                raise RuntimeError(f"packed row of {n_tok} tokens > data.pack_tokens={self.pack_tokens} "
                                   f"(samples {[it['sample_id'] for it in items]}): the length estimate missed")
            batch["sample_id"] = [it["sample_id"] for it in items]
            batch["skipped_videos"] = [it["bad_video"] for it in items if it.get("bad_video")]
            return batch
        ids, mask, labels = self._pad(encs)
        n = ids.shape[1]
        batch = {"sample_id": [it["sample_id"] for it in items], "input_ids": ids, "attention_mask": mask,
                 "labels": labels, self.transform.family.video_kwarg: None}
        if negs:  # the same items after other users' histories (text-only): the history hinge's other side
            batch["negatives"] = dict(zip(("input_ids", "attention_mask", "labels"), self._pad(negs)))
        tower = [it["tower_outputs"] for it in items if it.get("tower_outputs") is not None]
        if tower:  # the feature cache: the tower replays these, in batch order (pvllm.models.tower_cache)
            batch["tower_outputs"] = tower
        # visual inputs of the video items only, in batch order: the model fills the video tokens in order
        for k in dict.fromkeys(k for e in encs for k in e if k not in ("input_ids", "labels")):
            rows = [e[k] for e in encs if k in e]
            if len(rows) == len(encs) and all(r.dim() == 1 and len(r) == len(e["input_ids"])
                                              for r, e in zip(rows, encs)):
                # per-token inputs (mm_token_type_ids): padded like input_ids
                tok_aligned = torch.zeros((len(encs), n), dtype=rows[0].dtype)
                for i, r in enumerate(rows):
                    sl = slice(n - len(r), n) if self.padding_side == "left" else slice(0, len(r))
                    tok_aligned[i, sl] = r
                batch[k] = tok_aligned
            else:
                batch[k] = torch.cat(rows)
        # unreadable videos of this batch (placeholders with masked labels): counted in the main process
        batch["skipped_videos"] = [it["bad_video"] for it in items if it.get("bad_video")]
        if self.loss_reduction == "sample":
            batch["loss_weights"] = padded_loss_weights(labels)
        return batch
