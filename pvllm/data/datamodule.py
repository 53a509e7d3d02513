"""Datasets, collation and the LightningDataModule for PV-LLM training and validation."""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from pvllm.data.dataset import PerVidCom, load_pervidcom
from pvllm.data.frame_cache import FrameSource, Sampling
from pvllm.data.histories import Sample, build_eval_histories, draw_training_samples, title_samples
from pvllm.data.packing import (
    LOSS_REDUCTIONS,
    PackSampler,
    PackView,
    collate_packed,
    padded_loss_weights,
    plan_packs,
    sample_lengths,
)
from pvllm.data.video_io import VideoReadError, clip_metadata, read_clip
from pvllm.models.families import encode_example, family_of, reply_token_ids, visual_token_count
from pvllm.prompt import INSTRUCTION_TITLE, build_instruction, chat_prompt

log = logging.getLogger(__name__)
IGNORE_INDEX = -100
TASKS = ("comment", "title")
_PLACEHOLDER_SIDE = 32  # frames of a skipped video's placeholder (the processor resizes them)


class SampleDataset(Dataset):
    """Samples -> (frames, prompt, reply). A bad video raises or is skipped-and-counted (``on_bad_video``)."""

    def __init__(self, ds: PerVidCom, samples: list[Sample], num_frames: int, include_title: bool,
                 on_bad_video: str = "raise", skipped: Counter[str] | None = None, fps: float | None = None,
                 max_frames: int | None = None, video: bool = True, frames: FrameSource | None = None,
                 feature_cache: Any = None, task: str = "comment"):
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
        self.video = video  # False: text-only (no frames read, no video token), e.g. a comments-only dataset
        self.feature_cache = feature_cache  # pvllm.data.feature_cache.FeatureCache: encoder outputs, no frames
        self.task = task  # comment (PV-LLM) | title (projector alignment: the reply is the video's title)

    def __len__(self) -> int:
        return len(self.samples)

    def _instruction(self, s: Sample) -> str:
        title = self.ds.videos[s.video_id].title if self.include_title else None
        return (INSTRUCTION_TITLE if self.task == "title"
                else build_instruction([h["text"] for h in s.history], title))

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
            return {"sample_id": s.sample_id, "frames": None, "reply": s.reference,
                    "prompt": chat_prompt(instruction, video_token=None)}
        # `prompt`: the Video-LLaVA rendering; other families render `instruction` with their chat template
        item = {"sample_id": s.sample_id, "instruction": instruction, "prompt": chat_prompt(instruction),
                "reply": s.reference}
        try:
            if self.feature_cache is not None:  # the frozen encoder's cached output: no decoding, no encoder
                item["features"] = self.feature_cache.features(path)  # a missing entry is a bad video
                return item
            if self.fps is None:  # num_frames uniformly spaced: the frame cache / decoder, + timestamps
                item["frames"] = self.frames.get(path, s.video_id)
                item["video_metadata"] = clip_metadata(path, self.num_frames)
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
            if self.feature_cache is not None:  # zero features of the cache's shape, labels masked
                k = self.feature_cache.key
                item["features"] = torch.zeros(k["num_frames"], k["tokens_per_frame"], k["width"])
                return item
            item["frames"] = np.zeros((self.num_frames, _PLACEHOLDER_SIDE, _PLACEHOLDER_SIDE, 3), np.uint8)
            # what a processor needs to timestamp frames (SmolVLM2, Qwen3-VL): one frame per second
            n = self.num_frames
            item["video_metadata"] = {"total_num_frames": n, "fps": 1.0, "width": _PLACEHOLDER_SIDE,
                                      "height": _PLACEHOLDER_SIDE, "duration": float(n),
                                      "frames_indices": list(range(n))}
            item["bad_video"] = str(path)
        return item


@dataclass
class PVLLMCollator:
    """Tokenizes prompt (with the expanded video tokens) and reply separately, then concatenates,
    so the label mask covers exactly the reply tokens (+ end of turn) and nothing of the prompt
    (``pvllm.models.families.encode_example``: the family's processor and chat template)."""

    processor: Any
    max_reply_tokens: int = 64
    padding_side: str = "right"
    text_instructions: dict | None = None  # encoding limits of text-only items (pvllm.data.text_instructions)
    max_visual_tokens: int | None = None  # per-sample visual-token budget: more is an error naming the sample
    packing: bool = False  # one row of the samples back to back (pvllm.data.packing), no padding
    pack_tokens: int | None = None  # the packed row's token budget (checked)
    loss_reduction: str = "token"  # token | sample: "sample" adds loss_weights (pvllm.data.packing)
    _logged: bool = False

    def encode(self, item: dict[str, Any]) -> dict[str, torch.Tensor]:
        tok = self.processor.tokenizer
        if item.get("conversations") is not None:  # text-only (Table 6): no video token, no pixel values
            from pvllm.data.text_instructions import encode_conversation

            if family_of(self.processor).template != "video_llava":
                raise ValueError(f"text-only instructions are rendered in Video-LLaVA's chat format only; "
                                 f"family {family_of(self.processor).name} is not supported with them")

            ti = self.text_instructions or {}
            limits = {k: ti[k] for k in ("max_tokens", "max_turn_tokens") if k in ti}
            return encode_conversation(tok, item["conversations"], **limits)
        family = family_of(self.processor)
        if item.get("features") is not None:  # cached encoder features (T, N, C): Video-LLaVA's format only
            if family.template != "video_llava":
                raise ValueError(f"data.feature_cache feeds cached encoder features in Video-LLaVA's format; "
                                 f"family {family.name} is not supported with it")
            feats = item["features"]
            vt = self.processor.video_token
            text = item["prompt"].replace(vt, vt * (feats.shape[0] * feats.shape[1]))  # <video> T*N times
            prompt_ids = tok([text], return_tensors="pt")["input_ids"][0]
            reply = torch.tensor(reply_token_ids(self.processor, item.get("instruction") or "", item["reply"],
                                                 self.max_reply_tokens), dtype=torch.long)
            masked = torch.full_like(reply, IGNORE_INDEX) if item.get("bad_video") else reply  # a placeholder
            return {"input_ids": torch.cat([prompt_ids, reply]),
                    "labels": torch.cat([torch.full_like(prompt_ids, IGNORE_INDEX), masked]),
                    "pixel_values_videos": feats[None]}  # (1, T, N, C): batched by torch.cat
        if item["frames"] is None:  # text-only PV-LLM item (data.video=false): Video-LLaVA's chat format
            if family.template != "video_llava":
                raise ValueError(f"data.video=false (text-only) uses Video-LLaVA's chat format; family "
                                 f"{family.name} is not supported with it")
            prompt_ids = tok([item["prompt"]], return_tensors="pt")["input_ids"][0]
            reply_ids = tok(" " + item["reply"].strip(), add_special_tokens=False)["input_ids"]
            reply = torch.tensor(reply_ids[: self.max_reply_tokens] + [tok.eos_token_id], dtype=torch.long)
            return {"input_ids": torch.cat([prompt_ids, reply]),
                    "labels": torch.cat([torch.full_like(prompt_ids, IGNORE_INDEX), reply])}
        clip = (item["frames"], item["video_metadata"]) if item.get("video_metadata") else item["frames"]
        instruction = item.get("instruction")
        enc = encode_example(self.processor, instruction, clip, item["reply"], self.max_reply_tokens,
                             prompt=None if instruction is not None else item["prompt"])
        if item.get("bad_video"):  # a skipped video's placeholder: nothing of it is learned
            enc["labels"] = torch.full_like(enc["labels"], IGNORE_INDEX)
            return enc
        n_visual = visual_token_count(self.processor, enc["input_ids"])
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

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        if self.loss_reduction not in LOSS_REDUCTIONS:
            raise ValueError(f"data.loss_reduction must be one of {', '.join(LOSS_REDUCTIONS)}, "
                             f"got {self.loss_reduction!r}")
        encs = [self.encode(it) for it in items]
        if self.packing:
            batch = collate_packed(encs, loss_weights=self.loss_reduction == "sample")
            n_tok = batch["input_ids"].shape[1]
            if self.pack_tokens is not None and n_tok > self.pack_tokens:  # the planned lengths were wrong
                raise RuntimeError(f"packed row of {n_tok} tokens > data.pack_tokens={self.pack_tokens} "
                                   f"(samples {[it['sample_id'] for it in items]}): the length estimate missed")
            batch["sample_id"] = [it["sample_id"] for it in items]
            batch["skipped_videos"] = [it["bad_video"] for it in items if it.get("bad_video")]
            return batch
        n = max(len(e["input_ids"]) for e in encs)
        pad = self.processor.tokenizer.pad_token_id
        ids = torch.full((len(encs), n), pad, dtype=torch.long)
        labels = torch.full((len(encs), n), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(encs), n), dtype=torch.long)
        for i, e in enumerate(encs):
            L_ = len(e["input_ids"])
            sl = slice(n - L_, n) if self.padding_side == "left" else slice(0, L_)
            ids[i, sl], labels[i, sl], mask[i, sl] = e["input_ids"], e["labels"], 1
        batch = {"sample_id": [it["sample_id"] for it in items], "input_ids": ids, "attention_mask": mask,
                 "labels": labels, family_of(self.processor).video_kwarg: None}
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


class _SkipFirst:
    """The indices of ``sampler`` without its first ``n`` (a sampler wrapper: no video is loaded for them)."""

    def __init__(self, sampler: Any, n: int):
        self.sampler, self.n = sampler, n

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.n, None)

    def __len__(self) -> int:
        return max(len(self.sampler) - self.n, 0)


class ResumableLoader(DataLoader):
    """A DataLoader that continues mid-epoch after a resume: it skips the batches that the restored fit
    loop reports as completed in this epoch (0 at a normal epoch start), so a resumed run sees exactly
    the batches an uninterrupted one would. The skip wraps whatever sampler the loader has (under DDP
    Lightning's DistributedSampler: each rank keeps its own shard), never replaces it.

    ``state_dict``/``load_state_dict`` make Lightning treat it as resumable (no "dataloader is not
    resumable" warning); the position itself comes from the restored fit loop's batch progress.
    """

    def __init__(self, *args, completed_batches=lambda: 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.completed_batches = completed_batches

    def __iter__(self):
        skip = self.completed_batches()
        if not skip:
            yield from super().__iter__()
            return
        if isinstance(self.sampler, PackSampler):  # packed: one pack per batch
            log.info("resuming mid-epoch: skipping the %d pack(s) already trained in this epoch", skip)
            self.sampler.skip = skip
            try:
                yield from super().__iter__()
            finally:
                self.sampler.skip = 0
            return
        sampler = self.batch_sampler.sampler
        log.info("resuming mid-epoch: skipping the %d batch(es) already trained in this epoch", skip)
        self.batch_sampler.sampler = _SkipFirst(sampler, skip * self.batch_sampler.batch_size)
        try:
            yield from super().__iter__()
        finally:
            self.batch_sampler.sampler = sampler

    def state_dict(self) -> dict[str, int]:
        return {"completed_batches": int(self.completed_batches())}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Nothing to restore: the fit loop's batch progress (in the same checkpoint) is the position."""


class _EpochSamples(Dataset):
    """Training samples re-drawn from (seed, epoch) each epoch (paper §3.2)."""

    def __init__(self, make: Any):
        self.make, self.epoch, self.inner = make, -1, None

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.inner = epoch, self.make(epoch)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int):
        return self.inner[i]


class PVLLMDataModule(L.LightningDataModule):
    def __init__(
        self,
        root: str,
        name: str = "dataset",
        num_frames: int = 8,
        include_title: bool = False,
        train_split: str = "train",
        val_split: str = "val",
        k_min: int = 5,
        k_max: int = 15,
        val_k: int = 5,
        seed: int = 0,
        batch_size: int = 1,
        num_workers: int = 0,
        max_reply_tokens: int = 64,
        on_bad_video: str = "raise",
        # Table 6: {path, ratio, max_tokens, max_turn_tokens} of text-only conversations; None = off
        text_instructions: dict | None = None,
        # the list written by `python -m pvllm.data.check_videos`: samples of those videos are left out
        exclude_videos: str | None = None,
        video: bool = True,  # False: text-only PV-LLM (no frames, no video token; comments-only datasets)
        # pvllm.data.frame_cache root (None: decode every video); frame_size: its shorter edge (None: as is)
        frame_cache: str | None = None,
        frame_size: int | None = None,
        fps: float | None = None,  # None: num_frames uniformly spaced frames; set: one frame every 1/fps s
        max_frames: int | None = None,  # frame budget of fps sampling (None = num_frames)
        max_visual_tokens: int | None = None,  # per-sample visual-token budget (None = unchecked)
        feature_cache: str | None = None,  # directory of pvllm.data.feature_cache (frozen encoder outputs)
        # comment: PV-LLM (history -> the user's comment); title: projector alignment before it (LLaVA's
        # stage 1 on the videos' titles: video -> its title, no history), e.g. a fresh projector on CPU
        task: str = "comment",
        # packed training (pvllm.data.packing): samples back to back in one row of <= pack_tokens tokens,
        # attention and positions per sample; the sampler fills the token budget (batch_size unused)
        packing: bool = False,
        pack_tokens: int = 4096,
        loss_reduction: str = "token",  # token: mean over reply tokens | sample: mean of each sample's mean
        # training draws per user and epoch (targets on distinct videos); 1 = the paper
        train_samples_per_user: int = 1,
        # training histories: random (the paper) | retrieved_bm25 (LaMP-style: the user's past comments most
        # similar to the target video's title, BM25; only comments published before the target)
        train_history_selection: str = "random",
    ):
        super().__init__()
        if loss_reduction not in LOSS_REDUCTIONS:
            raise ValueError(f"data.loss_reduction must be one of {', '.join(LOSS_REDUCTIONS)}, got {loss_reduction!r}")
        if packing and (text_instructions or feature_cache):
            raise ValueError("data.packing=true packs video (or data.video=false text) samples; it does not support "
                             "data.text_instructions or data.feature_cache yet: unset them or data.packing")
        if packing and int(pack_tokens) < 1:
            raise ValueError(f"data.pack_tokens must be a positive token budget, got {pack_tokens}")
        if task not in TASKS:
            raise ValueError(f"data.task must be one of {', '.join(TASKS)}, got {task!r}")
        if task == "title" and not video:
            raise ValueError("data.task=title aligns the projector to the video: it needs data.video=true")
        self.save_hyperparameters()
        self.processor = None
        self.ds: PerVidCom | None = None
        # bad video path -> times skipped in the loop (train and val), counted in this (the main) process
        self.skipped: Counter[str] = Counter()
        self.skipped_by_split: dict[str, Counter[str]] = {}  # the same, per split ("train", "val")
        self.excluded: Counter[str] = Counter()  # "train"/"val" -> samples left out (exclude_videos)
        self._exclude: dict[str, str] = {}  # video_id -> why (from the exclude_videos list)
        self.cache = None
        self._length_memo: dict[str, tuple[int, int]] = {}  # packing: video id -> (encoded, text tokens)
        self.text_tokens = None

    def attach_processor(self, processor: Any, model: Any = None, text_tokens: Any = None) -> None:
        """The model's own processor does the preprocessing (set by train.py after building the model);
        with ``feature_cache`` set, the cache is opened for ``model`` (an error if built for another).
        ``text_tokens``: the family's text-token counter (``pvllm.models.packing.TextTokens``), needed by
        ``packing`` to plan packs."""
        self.processor = processor
        self.text_tokens = text_tokens
        if self.hparams.get("packing") and text_tokens is None:
            raise RuntimeError("data.packing=true: attach_processor(processor, model, text_tokens=TextTokens(...))")
        if self.hparams.feature_cache:
            from pvllm.data.feature_cache import FeatureCache

            if model is None:
                raise RuntimeError("data.feature_cache is set: attach_processor(processor, model)")
            self.cache = FeatureCache.for_model(self.hparams.feature_cache, model, processor,
                                                self.hparams.num_frames)

    def _keep(self, samples: list[Sample], what: str) -> list[Sample]:
        """``samples`` without those whose video is on the exclude list (logged and counted)."""
        kept = [s for s in samples if s.video_id not in self._exclude]
        if len(kept) < len(samples):
            n = len(samples) - len(kept)
            self.excluded[what.split()[0]] += n
            log.warning("%s: left out %d of %d samples whose video is listed unreadable in %s", what, n,
                        len(samples), self.hparams.exclude_videos)
        return kept

    def setup(self, stage: str | None = None) -> None:
        if self.ds is None:
            # video files are checked where they are read (read_frames: raise, or skip-and-count; the
            # validation videos up front), so a missing file is handled like a corrupt one
            self.ds = load_pervidcom(self.hparams.root, check_files=False)
            if self.hparams.exclude_videos:
                from pvllm.data.check_videos import load_unreadable

                self._exclude = load_unreadable(self.hparams.exclude_videos, self.ds)
        hp = self.hparams
        if getattr(self, "frames", None) is None:  # the frame cache when configured, else decoding
            self.frames = FrameSource(Sampling(hp.num_frames, hp.frame_size), hp.frame_cache)

        task = hp.get("task", "comment")

        def draw(epoch: int) -> SampleDataset:
            samples = (title_samples(self.ds, hp.train_split, hp.seed, epoch) if task == "title" else
                       draw_training_samples(self.ds, hp.train_split, epoch, hp.seed, hp.k_min, hp.k_max,
                                             per_user=hp.get("train_samples_per_user", 1),
                                             selection=hp.get("train_history_selection", "random")))
            return SampleDataset(self.ds, self._keep(samples, f"train epoch {epoch}"), hp.num_frames,
                                 hp.include_title, hp.on_bad_video, fps=hp.fps, max_frames=hp.max_frames,
                                 video=hp.video, frames=self.frames, feature_cache=self.cache, task=task)

        make = draw
        if hp.text_instructions:
            from pvllm.data.text_instructions import mix_text_instructions

            make = mix_text_instructions(make, **hp.text_instructions, seed=hp.seed)
        self.train_set = _EpochSamples(make)
        val = self._keep(title_samples(self.ds, hp.val_split, hp.seed) if task == "title" else
                         build_eval_histories(self.ds, hp.val_split, k=hp.val_k, seed=hp.seed), "val")
        self.val_set = SampleDataset(self.ds, val, hp.num_frames, hp.include_title, hp.on_bad_video,
                                     fps=hp.fps, max_frames=hp.max_frames, video=hp.video,
                                     frames=self.frames, feature_cache=self.cache, task=task)
        if stage in ("fit", "validate") and hp.on_bad_video == "raise" and hp.video:
            self._check_val_videos()

    def _check_val_videos(self) -> None:
        """on_bad_video=raise: decode every validation video now, not after a whole training epoch."""
        from pvllm.data.check_videos import check_videos

        files = sorted({str(self.ds.video_path(s.video_id)) for s in self.val_set.samples})
        bad = check_videos(files, self.hparams.num_frames, workers=max(1, self.hparams.num_workers))
        if bad:
            raise VideoReadError(
                f"{len(bad)} of {len(files)} validation video(s) of split {self.hparams.val_split!r} are "
                "unreadable (data.on_bad_video=raise; list them with `python -m pvllm.data.check_videos` and "
                "pass data.exclude_videos=..., or set data.on_bad_video=skip):\n  "
                + "\n  ".join(why for _, why in sorted(bad.items())))

    def _identity(self) -> dict[str, Any]:
        """What defines the training draws: the dataset's records, the training split and the seed."""
        if getattr(self, "_ident", None) is None:
            from pvllm.identity import dataset_records_digest

            hp = self.hparams
            self._ident = {"dataset_records": dataset_records_digest(hp.root), "train_split": hp.train_split,
                           "seed": hp.seed}
        return self._ident

    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint (Lightning): the identity a resumed run must share."""
        return {"identity": self._identity()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resuming a checkpoint of another dataset, split or seed would continue other draws: refused."""
        from pvllm.identity import IdentityConflict, differing

        stored, current = state.get("identity"), self._identity()
        if stored != current:
            ckpt = getattr(getattr(self, "trainer", None), "ckpt_path", None) or "the checkpoint"
            raise IdentityConflict(
                f"{ckpt} was trained on {stored} but this run is {current} "
                f"({'; '.join(differing(stored or {}, current))}): resume it with the same data.root, "
                "split and seed, or start a new run without ckpt_path")

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Count the batch's skipped videos here, in the main process (workers' counters are copies)."""
        if isinstance(batch, dict):
            bad = batch.pop("skipped_videos", None) or []
            self.skipped.update(bad)
            t = getattr(self, "trainer", None)
            split = "val" if t is not None and (t.validating or t.sanity_checking) else "train"
            self.skipped_by_split.setdefault(split, Counter()).update(bad)
        return batch

    def gather_skipped(self) -> Counter[str]:
        """Skipped videos summed over all ranks (call on every rank: a collective under DDP)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return Counter(self.skipped)
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, dict(self.skipped))
        return sum((Counter(p) for p in parts), Counter())

    def teardown(self, stage: str | None = None) -> None:
        """Say how frames were served (cache hits, decodes, cache misses) in this process; with loader
        workers each worker counts its own and warns itself."""
        frames = getattr(self, "frames", None)
        if frames is not None and frames.cache is not None and frames.counts:
            log.info("frames (%s): %s", stage, frames.summary())

    def _collator(self, packing: bool = False) -> PVLLMCollator:
        hp = self.hparams
        return PVLLMCollator(self.processor, hp.max_reply_tokens, max_visual_tokens=hp.max_visual_tokens,
                             text_instructions=hp.text_instructions, packing=packing,
                             pack_tokens=hp.get("pack_tokens") if packing else None,
                             loss_reduction=hp.get("loss_reduction", "token"))

    def _loader(self, dataset: Dataset, cls: type = DataLoader, **kwargs) -> DataLoader:
        if self.processor is None:
            raise RuntimeError("attach_processor(model_processor) before creating dataloaders")
        return cls(dataset, batch_size=self.hparams.batch_size, shuffle=False, num_workers=self.hparams.num_workers,
                   collate_fn=self._collator(), **kwargs)

    def _packed_loader(self, world_size: int, rank: int) -> DataLoader:
        """Packs of the epoch's draw filling ``pack_tokens`` (the same plan on every rank, ``PackSampler``)."""
        hp = self.hparams
        inner = self.train_set.inner
        collator = self._collator(packing=True)
        lengths = sample_lengths(inner, collator.encode, self.text_tokens, self._length_memo)
        packs = plan_packs(lengths, int(hp.pack_tokens), [s.sample_id for s in inner.samples])
        sampler = PackSampler(inner, packs, num_replicas=world_size, rank=rank)
        used = sum(lengths)
        log.info("packing: %d samples (%d tokens) in %d packs of <= %d tokens (%.1f%% of the budget used)%s",
                 len(lengths), used, len(packs), hp.pack_tokens, 100 * used / (len(packs) * hp.pack_tokens),
                 f"; {sampler.repeated} pack(s) repeated so the {world_size} ranks run the same number of steps"
                 if sampler.repeated else "")
        return ResumableLoader(PackView(self.train_set), batch_size=None, sampler=sampler,
                               num_workers=hp.num_workers, collate_fn=collator,
                               completed_batches=self._completed_batches)

    def _completed_batches(self) -> int:
        """Batches of the current epoch already trained (non-zero only when resuming mid-epoch)."""
        if self.trainer is None:
            return 0
        return int(self.trainer.fit_loop.epoch_loop.batch_progress.current.completed)

    def train_dataloader(self) -> DataLoader:
        # the draw is already shuffled from (seed, epoch): no sampler randomness, exact resume
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        self.train_set.set_epoch(epoch)
        if len(self.train_set) == 0:  # fail: never save an untrained model as if it had trained
            raise ValueError(
                f"no training samples in epoch {epoch}: split {self.hparams.train_split!r} of {self.hparams.root} "
                "has no user with comments on >= 2 videos" + (" left after exclude_videos" if self._exclude else ""))
        if self.hparams.get("packing"):
            world = self.trainer.world_size if self.trainer is not None else 1
            return self._packed_loader(world, self.trainer.global_rank if self.trainer is not None else 0)
        sampler = None
        if self.trainer is not None and self.trainer.world_size > 1:
            # rank r takes draw items r, r+W, ... (no second shuffle); Lightning keeps a DistributedSampler
            sampler = DistributedSampler(self.train_set, num_replicas=self.trainer.world_size,
                                         rank=self.trainer.global_rank, shuffle=False)
        return self._loader(self.train_set, ResumableLoader, completed_batches=self._completed_batches,
                            sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        sampler = None
        if self.trainer is not None and self.trainer.world_size > 1:
            # Lightning's default here pads the last shard with repeats of the first samples, which would count
            # them twice in val/loss: each sample once instead (ranks may run one batch fewer; val/loss is
            # synced once at the epoch's end)
            from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

            sampler = UnrepeatedDistributedSampler(self.val_set, num_replicas=self.trainer.world_size,
                                                   rank=self.trainer.global_rank, shuffle=False)
        return self._loader(self.val_set, sampler=sampler)
