"""The LightningDataModule for PV-LLM training and validation (items and collation: ``pvllm.data.collate``;
epochs and resuming: ``pvllm.data.sampler``)."""

from __future__ import annotations

import logging
import os
from collections import Counter
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from pvllm.data.collate import PVLLMCollator, SampleDataset
from pvllm.data.dataset import PerVidCom, load_pervidcom
from pvllm.data.frame_cache import FrameSource, Sampling
from pvllm.data.histories import Sample, build_eval_histories, draw_training_samples, title_samples
from pvllm.data.packing import LOSS_REDUCTIONS, PackSampler, PackView, plan_packs, sample_lengths
from pvllm.data.sampler import EpochSamples, ResumableLoader
from pvllm.data.video_io import VideoReadError
from pvllm.prompt import TASKS, TRAIN_VIDEO_MODES, shows_video

log = logging.getLogger(__name__)


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
        # what video a sample is shown: ${video.mode} (own | none: text-only PV-LLM, no frames, no video token;
        # comments-only datasets); a bool from Python callers
        video: bool | str = True,
        # pvllm.data.frame_cache root (None: decode every video); frame_size: its shorter edge (None: as is)
        frame_cache: str | None = None,
        frame_size: int | None = None,
        fps: float | None = None,  # None: num_frames uniformly spaced frames; set: one frame every 1/fps s
        max_frames: int | None = None,  # frame budget of fps sampling (None = num_frames)
        max_visual_tokens: int | None = None,  # per-sample visual-token budget (None = unchecked)
        feature_cache: str | None = None,  # cache store of the frozen tower's outputs (pvllm.data.feature_cache)
        require_video_files: bool = True,  # False: every video read from frame_cache / feature_cache by its id
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
        # loss.history_contrast (> 0: on): each training item also with another user's history (text-only)
        history_negatives: float | bool = 0,
    ):
        super().__init__()
        if loss_reduction not in LOSS_REDUCTIONS:
            raise ValueError(f"data.loss_reduction must be one of {', '.join(LOSS_REDUCTIONS)}, got {loss_reduction!r}")
        if packing and (text_instructions or feature_cache):
            raise ValueError("data.packing=true packs video (or video.mode=none text) samples; it does not support "
                             "data.text_instructions or data.feature_cache yet: unset them or data.packing")
        if feature_cache and fps is not None:
            raise ValueError("data.feature_cache holds num_frames uniformly spaced frames' tower outputs: "
                             "unset data.fps")
        if not require_video_files and not (frame_cache or feature_cache):
            raise ValueError("data.require_video_files=false reads every video from a cache: set data.frame_cache or "
                             "data.feature_cache")
        if float(history_negatives or 0) > 0 and (packing or shows_video(video) or task != "comment"):
            raise ValueError("loss.history_contrast (data.history_negatives) runs on padded text-only comment "
                             "batches for now: video.mode=none, data.packing=false, data.task=comment")
        if packing and int(pack_tokens) < 1:
            raise ValueError(f"data.pack_tokens must be a positive token budget, got {pack_tokens}")
        if task not in TASKS:
            raise ValueError(f"data.task must be one of {', '.join(TASKS)}, got {task!r}")
        if video not in (True, False, *TRAIN_VIDEO_MODES):
            raise ValueError(f"video.mode must be one of {' | '.join(TRAIN_VIDEO_MODES)} for training, got {video!r}")
        if task == "title" and not shows_video(video):
            raise ValueError("data.task=title aligns the projector to the video: it needs video.mode=own")
        self.save_hyperparameters()
        self.transform = None  # pvllm.models.transform.ModelTransform, attached by train.py
        self.ds: PerVidCom | None = None
        # bad video path -> times skipped in the loop (train and val), counted in this (the main) process
        self.skipped: Counter[str] = Counter()
        self.skipped_by_split: dict[str, Counter[str]] = {}  # the same, per split ("train", "val")
        self.excluded: Counter[str] = Counter()  # "train"/"val" -> samples left out (exclude_videos)
        self._exclude: dict[str, str] = {}  # video_id -> why (from the exclude_videos list)
        self.cache = None
        self._length_memo: dict[str, tuple[int, int]] = {}  # packing: video id -> (encoded, text tokens)

    def attach_transform(self, transform: Any, tower: Any = None) -> None:
        """The model transform (``pvllm.models.transform.ModelTransform``: the model's own processor and chat
        format, and the text-token counter packing plans with) does the preprocessing; train.py builds it from
        the model and attaches it. ``tower``: the model's tower transform (``pvllm.models.tower_cache.
        TowerFeatures``), needed with ``feature_cache``: the cache is opened for its settings (an error naming
        the differing ones if built for another)."""
        self.transform = transform
        if self.hparams.feature_cache:
            from pvllm.data.feature_cache import FeatureCache

            if tower is None:
                raise RuntimeError("data.feature_cache is set: attach_transform(transform, tower=TowerFeatures(...))")
            self.cache = FeatureCache(self.hparams.feature_cache, tower.settings(),
                                      require_files=self.hparams.get("require_video_files", True))

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
            self.frames = FrameSource(Sampling(hp.num_frames, hp.frame_size), hp.frame_cache,
                                      require_files=hp.get("require_video_files", True) or not hp.frame_cache)

        task = hp.get("task", "comment")

        def draw(epoch: int) -> SampleDataset:
            samples = (title_samples(self.ds, hp.train_split, hp.seed, epoch) if task == "title" else
                       draw_training_samples(self.ds, hp.train_split, epoch, hp.seed, hp.k_min, hp.k_max,
                                             per_user=hp.get("train_samples_per_user", 1),
                                             selection=hp.get("train_history_selection", "random")))
            return SampleDataset(self.ds, self._keep(samples, f"train epoch {epoch}"), hp.num_frames,
                                 hp.include_title, hp.on_bad_video, fps=hp.fps, max_frames=hp.max_frames,
                                 video=shows_video(hp.video), frames=self.frames, feature_cache=self.cache, task=task,
                                 history_negatives=float(hp.get("history_negatives") or 0) > 0,
                                 seed=hp.seed * 100_003 + epoch)

        make = draw
        if hp.text_instructions:
            from pvllm.data.text_instructions import mix_text_instructions

            make = mix_text_instructions(make, **hp.text_instructions, seed=hp.seed)
        self.train_set = EpochSamples(make)
        val = self._keep(title_samples(self.ds, hp.val_split, hp.seed) if task == "title" else
                         build_eval_histories(self.ds, hp.val_split, k=hp.val_k, seed=hp.seed), "val")
        self.val_set = SampleDataset(self.ds, val, hp.num_frames, hp.include_title, hp.on_bad_video,
                                     fps=hp.fps, max_frames=hp.max_frames, video=shows_video(hp.video),
                                     frames=self.frames, feature_cache=self.cache, task=task)
        if stage in ("fit", "validate") and hp.on_bad_video == "raise" and shows_video(hp.video):
            self._check_val_videos()

    def _cached_val_videos(self, files: list[tuple[str, str]]) -> tuple[set[str], list[str]]:
        """(paths the caches serve, problems): with a feature cache every validation video must be in it
        (checked now, not after an epoch); with a frame cache its hits are not decoded again."""
        served, missing = set(), []
        require = self.hparams.get("require_video_files", True)
        for vid, path in files:
            if self.cache is not None:
                try:
                    if self.cache.store.lookup(vid, path, require) is not None:
                        served.add(path)
                        continue
                except VideoReadError as e:
                    missing.append(str(e))
                    continue
                missing.append(f"video {vid} ({path}): not in the feature cache {self.cache.dir}")
            elif self.frames.cache is not None and (os.path.isfile(path) or not require):
                if self.frames.cache.store.lookup(vid, path, require) is not None:
                    served.add(path)
        return served, missing

    def _check_val_videos(self) -> None:
        """on_bad_video=raise: decode every validation video now, not after a whole training epoch."""
        from pvllm.data.check_videos import check_videos

        pairs = sorted({(s.video_id, str(self.ds.video_path(s.video_id))) for s in self.val_set.samples})
        files = [p for _, p in pairs]
        served, missing = self._cached_val_videos(pairs)
        if missing:
            raise VideoReadError(f"{len(missing)} of {len(files)} validation video(s) are not in the cache "
                                 "(data.on_bad_video=raise; rebuild the cache, or set data.on_bad_video=skip):\n  "
                                 + "\n  ".join(missing))
        bad = check_videos([p for p in files if p not in served], self.hparams.num_frames,
                           workers=max(1, self.hparams.num_workers))
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
        return PVLLMCollator(self.transform, hp.max_reply_tokens, max_visual_tokens=hp.max_visual_tokens,
                             text_instructions=hp.text_instructions, packing=packing,
                             pack_tokens=hp.get("pack_tokens") if packing else None,
                             loss_reduction=hp.get("loss_reduction", "token"))

    def _loader(self, dataset: Dataset, cls: type = DataLoader, **kwargs) -> DataLoader:
        if self.transform is None:
            raise RuntimeError("attach_transform(ModelTransform(processor)) before creating dataloaders")
        return cls(dataset, batch_size=self.hparams.batch_size, shuffle=False, num_workers=self.hparams.num_workers,
                   collate_fn=self._collator(), **kwargs)

    def _packed_loader(self, world_size: int, rank: int) -> DataLoader:
        """Packs of the epoch's draw filling ``pack_tokens`` (the same plan on every rank, ``PackSampler``)."""
        hp = self.hparams
        inner = self.train_set.inner
        collator = self._collator(packing=True)
        lengths = sample_lengths(inner, collator.encode, self.transform.text_tokens, self._length_memo)
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
