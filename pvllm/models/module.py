"""The PV-LLM LightningModule: forward, training/validation steps, optimizer, generation."""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import torch
from torchmetrics import MeanMetric

from pvllm.models.tower_cache import replay


class PVLLMModule(L.LightningModule):
    """Wraps a model of any family (from pvllm.models.builder); the loss is over reply tokens only."""

    def __init__(self, model: torch.nn.Module | None, optim: dict[str, Any], scheduler: dict[str, Any] | None = None,
                 build: Any = None, loss: dict[str, Any] | None = None):
        super().__init__()
        # model=None, build=callable: the model is built in configure_model (ZeRO-3 shards it as it loads)
        if model is None and build is None:
            raise ValueError("PVLLMModule needs a model or a build function")
        self.model = model
        # loss.video_contrast > 0: also penalize ignoring the video (training_step, video_contrast_loss)
        self.loss_cfg = dict(loss or {})
        self._last_video: tuple[torch.Tensor, list | None] | None = None  # (frames, cached tower outputs)
        self._build = build
        self.bundle = None
        if model is not None:  # from_pretrained returns eval mode and Lightning keeps submodule modes
            self.model.train()
        self.optim_cfg = dict(optim)
        self.sched_cfg = dict(scheduler or {})
        self._t_last: float | None = None
        # train/loss = mean over the accumulation window and all ranks (weighted by supervised samples),
        # synced at each optimizer step, then reset; perplexity = exp of it
        self.train_loss = MeanMetric()
        self._logged_step = 0

    def configure_model(self) -> None:
        """Build the model here when train.py passed a build function (ZeRO-3): Lightning calls this inside
        its DeepSpeed strategy's ``zero.Init``, so every weight is partitioned over the ranks as it loads.
        Called before the strategy wraps the model, on every strategy."""
        if self.model is None:
            self.bundle = self._build()
            self.model = self.bundle.model
            self.model.train()
        from pvllm.models.optim import keep_fp32_master_weights

        # bf16-loaded weights outside DeepSpeed: trainable ones become fp32 masters (or a clear error); here,
        # before DDP wraps the model (its gradient buckets take the parameters' dtype)
        trainer = self._trainer  # None when called outside a Trainer (the DeepSpeed-engine CPU test)
        if trainer is not None and keep_fp32_master_weights(self.model, trainer.strategy, trainer.precision):
            self.print("fp32 master weights: trainable parameters upcast from the loaded dtype (bf16 autocast)")

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Next-token cross-entropy over the reply tokens: their mean (``data.loss_reduction=token``, the
        default), or the mean over samples of each sample's mean (``sample``: the batch carries
        ``loss_weights``, 1/(reply tokens of its sample) on each supervised token).

        Only the positions from the first supervised token on go through the LM head (``logits_to_keep``):
        the prompt (history + 136..2056 video tokens) needs no logits, which saves most of the head's
        time and memory on a 49k..32k vocabulary. Same value as the model's own loss over all positions.
        A packed batch (``seq_lens``, ``pvllm.data.packing``) keeps exactly the positions that predict a
        supervised token, with per-sample positions and attention (``pvllm.models.packing``).
        """
        return self._mean_loss(*self._supervised_logits(batch))

    @staticmethod
    def _mean_loss(logits: torch.Tensor, targets: torch.Tensor | None, weights: torch.Tensor | None) -> torch.Tensor:
        """forward's loss from ``_supervised_logits``'s output."""
        if targets is None:  # only skipped-video placeholders: zero loss that still reaches every weight,
            return logits.sum() * 0.0  # so DDP's gradient all-reduce runs on this rank like on the others
        flat = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
        if weights is None:  # mean over the supervised tokens
            return torch.nn.functional.cross_entropy(*flat, ignore_index=-100)
        ce = torch.nn.functional.cross_entropy(*flat, ignore_index=-100, reduction="none")
        weights = weights.reshape(-1).to(ce.dtype)
        return (ce * weights).sum() / weights.sum()

    def _supervised_logits(self, batch: dict[str, Any]):
        """(logits, targets, loss weights or None) at the positions whose next token may be supervised;
        targets None when the batch supervises nothing."""
        labels = batch["labels"]
        if "seq_lens" in batch:
            from pvllm.models.packing import packed_forward

            keep = (labels[0, 1:] != -100).nonzero()[:, 0]  # position t predicts token t+1
            if not len(keep):
                keep = torch.zeros(1, dtype=torch.long, device=labels.device)
                return packed_forward(self.model, batch, logits_to_keep=keep).logits.float(), None, None
            logits = packed_forward(self.model, batch, logits_to_keep=keep).logits.float()
            weights = batch.get("loss_weights")
            return logits, labels[:, keep + 1], None if weights is None else weights[:, keep + 1]
        supervised = (labels != -100).any(dim=0).nonzero()
        seq_len = labels.shape[1]
        keep = min(seq_len - int(supervised[0]) + 1, seq_len) if len(supervised) else seq_len
        # every model input the collator built (the family's visual inputs included), not labels / ids
        inputs = {k: v for k, v in batch.items()
                  if k not in ("sample_id", "labels", "skipped_videos", "loss_weights", "tower_outputs", "negatives")}
        with replay(self.model, batch.get("tower_outputs")):  # the feature cache: the tower's recorded outputs
            out = self.model(**inputs, logits_to_keep=keep)
        logits = out.logits[:, :-1].float()  # position t predicts token t+1
        if not len(supervised):
            return logits, None, None
        weights = batch.get("loss_weights")
        return (logits, labels[:, seq_len - keep + 1:],
                None if weights is None else weights[:, seq_len - keep + 1:])

    def sample_losses(self, batch: dict[str, Any]) -> torch.Tensor:
        """Each sample's mean reply-token cross-entropy (NaN for a sample with no supervised token), packed
        or padded: what packing must leave unchanged."""
        return self._per_sample_losses(batch, *self._supervised_logits(batch)[:2])

    @staticmethod
    def _per_sample_losses(batch: dict[str, Any], logits: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        """sample_losses from ``_supervised_logits``'s output (one forward serves both losses)."""
        n = len(batch["seq_lens"]) if "seq_lens" in batch else batch["labels"].shape[0]
        if targets is None:
            return torch.full((n,), float("nan"))
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                               ignore_index=-100, reduction="none")
        if "seq_lens" in batch:
            from pvllm.models.packing import segment_ids

            keep = (batch["labels"][0, 1:] != -100).nonzero()[:, 0]
            owner = segment_ids(batch["seq_lens"].to(keep.device))[keep + 1]
        else:
            owner = torch.arange(n, device=ce.device)[:, None].expand_as(targets).reshape(-1)
        sup = (targets.reshape(-1) != -100).to(ce.dtype)
        total = torch.zeros(n, dtype=ce.dtype, device=ce.device).index_add_(0, owner, ce * sup)
        count = torch.zeros(n, dtype=ce.dtype, device=ce.device).index_add_(0, owner, sup)
        return total / count

    def video_contrast_loss(self, batch: dict[str, Any], own: torch.Tensor | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """A loss for ignoring the video: the reply must be likelier with its own video than with another
        one by ``loss.video_margin`` nats per token (hinge on the per-sample gap of mean cross-entropies).

        The other video is the previous item's in the batch (rolled), or with a batch of one the previous
        batch's video (kept, detached); items whose other video is identical to their own are left out.
        ``own``: the batch's sample_losses when the caller has them (training_step computes them from the
        forward of the main loss: the hinge then costs one more pass, the mismatched video's).
        Returns (loss, mean gap) or None when the batch has no video or no other video yet."""
        video = batch.get("pixel_values_videos")
        if video is None:
            return None
        # with the feature cache the frames are placeholders: the tower's recorded outputs are the video
        tower = batch.get("tower_outputs")
        if tower is not None and len(tower) != video.shape[0]:
            raise ValueError(f"loss.video_contrast pairs each item with another item's video, but this batch has "
                             f"{len(tower)} cached videos for {video.shape[0]} rows of pixel_values_videos: "
                             "the hinge needs a family whose video input has one row per item (Video-LLaVA)")
        prev, self._last_video = self._last_video, (video.detach(), tower)
        if video.shape[0] > 1:
            other = torch.roll(video, 1, dims=0), (tower[-1:] + tower[:-1] if tower is not None else None)
        elif prev is not None and prev[0].shape == video.shape and (prev[1] is None) == (tower is None):
            other = prev
        else:
            return None
        if tower is None:
            differs = (other[0] != video).flatten(1).any(1)
        else:
            differs = torch.tensor([any(not torch.equal(a[k], b[k]) for k in a) for a, b in zip(tower, other[1])])
        if not differs.any():
            return None
        own = self.sample_losses(batch) if own is None else own
        swapped = dict(batch, pixel_values_videos=other[0])
        if tower is not None:
            swapped["tower_outputs"] = other[1]
        mismatched = self.sample_losses(swapped)
        return self._hinge((mismatched - own)[differs & own.isfinite()], "video_margin")

    def _hinge(self, gap: torch.Tensor, margin_key: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(mean of relu(margin - gap), mean gap) over the compared items; None when there are none."""
        if not len(gap):
            return None
        margin = float(self.loss_cfg.get(margin_key, 1.0))
        return torch.relu(margin - gap).mean(), gap.detach().mean()

    def history_contrast_loss(self, batch: dict[str, Any], own: torch.Tensor | None = None
                              ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """A loss for ignoring the history: the reply must be likelier after its user's own history than
        after another user's (the collator's ``negatives``: the same items, same title and reply, with another
        user's comments as history; pvllm.data.collate) by ``loss.history_margin`` nats per token: a hinge
        on the per-sample gap of mean cross-entropies. ``own``: the batch's sample_losses when the caller has
        them. Returns (loss, mean gap), or None when no item has a supervised reply."""
        if batch.get("negatives") is None:
            raise ValueError("loss.history_contrast > 0 but the batch has no other-user histories: the data "
                             "config must set history_negatives (conf/data/sample.yaml takes it from the loss)")
        own = self.sample_losses(batch) if own is None else own
        other = self.sample_losses({**batch, **batch["negatives"], "negatives": None, "loss_weights": None})
        return self._hinge((other - own)[own.isfinite() & other.isfinite()], "history_margin")

    @staticmethod
    def _n_supervised(batch: dict[str, Any]) -> int:
        """Items of the batch with a supervised reply (a skipped video's placeholder has none)."""
        if "seq_lens" in batch:  # packed: the samples of the one row
            sup = (batch["labels"][0] != -100).long()
            return int((torch.stack([s.sum() for s in sup.split(batch["seq_lens"].tolist())]) > 0).sum())
        return int((batch["labels"] != -100).any(dim=1).sum())

    def training_step(self, batch: dict[str, Any] | None, batch_idx: int):
        if batch is None:
            return None
        n = self._n_supervised(batch)
        if n == 0 and self.trainer.world_size == 1:
            return None  # one process: nothing to learn from this batch, skip the step (counted)
        out = self._supervised_logits(batch)  # one forward for the loss and the hinge's own-video side
        loss = self._mean_loss(*out)  # under DDP a placeholder-only batch is a zero loss: every rank steps together
        weight = float(self.loss_cfg.get("video_contrast", 0.0))
        h_weight = float(self.loss_cfg.get("history_contrast", 0.0))
        own = self._per_sample_losses(batch, *out[:2]) if (weight > 0 or h_weight > 0) and n else None
        for name, w, hinge in (("video", weight, self.video_contrast_loss),
                               ("history", h_weight, self.history_contrast_loss)):
            contrast = hinge(batch, own=own) if w > 0 and n else None
            if contrast is not None:
                self.log(f"train/{name}_gap", contrast[1], on_step=True, batch_size=n)
                loss = loss + w * contrast[0]
        n_tok = int(batch["attention_mask"].sum())
        now = time.perf_counter()
        if self._t_last is not None:
            self.log("train/tokens_per_s", n_tok / max(now - self._t_last, 1e-9), on_step=True, batch_size=1)
        self._t_last = now
        self.train_loss.update(loss.detach().float(), weight=n)  # n = 0: a placeholder, weighs nothing
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_stats = torch.zeros(3, dtype=torch.float64)  # sum(loss * n), n supervised, n items

    def validation_step(self, batch: dict[str, Any] | None, batch_idx: int):
        if batch is None:
            return None
        loss = self(batch)
        n = self._n_supervised(batch)  # a skipped video's placeholder weighs 0
        self._val_stats += torch.tensor([float(loss) * n, n, len(batch["labels"])], dtype=torch.float64)
        return loss

    def on_validation_epoch_end(self) -> None:
        """val/loss = the mean over the validation samples, each counted once, summed over ranks here (not
        Lightning's per-rank mean: its synced sample count is an integer mean, wrong when ranks validate
        different numbers of samples). NaN (no readable validation sample) or a non-finite loss stops the
        run before the checkpoint callbacks compare it with the best one."""
        stats = getattr(self, "_val_stats", torch.zeros(3, dtype=torch.float64))
        total, n, items = (float(x) for x in self.trainer.strategy.reduce(stats.to(self.device), reduce_op="sum"))
        if self.trainer.sanity_checking and not (n and math.isfinite(total)):
            return
        if items and not n:
            raise ValueError(
                f"validation at step {self.trainer.global_step}: all {int(items)} validation sample(s) were "
                "skipped (their videos are unreadable, data.on_bad_video=skip), so val/loss is undefined (NaN) "
                "and no checkpoint can be chosen by it; find them with `python -m pvllm.data.check_videos ROOT` "
                "and fix the files, or pass data.exclude_videos=that list")
        if n and not math.isfinite(total):
            raise FloatingPointError(
                f"validation at step {self.trainer.global_step}: val/loss is {total / n} over {int(n)} "
                "sample(s) (the model diverged: lower optim.lr or check the data); no checkpoint is chosen by it")
        if n:  # already summed over ranks: the same value on every rank
            self.log("val/loss", total / n, prog_bar=True, sync_dist=False)
            self.log("val/perplexity", math.exp(total / n), sync_dist=False)

    def _log_skipped(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        skipped = getattr(dm, "skipped", None)
        if skipped is not None:  # summed over ranks (a collective: every rank logs it)
            self.log("data/skipped_videos", float(sum(skipped.values())), reduce_fx="sum", sync_dist=True)
            for split, counts in sorted(getattr(dm, "skipped_by_split", {}).items()):
                self.log(f"data/skipped_videos_{split}", float(sum(counts.values())), reduce_fx="sum",
                         sync_dist=True)

    def on_train_start(self) -> None:
        self._logged_step = self.trainer.global_step  # resumed: the first window ends at the next step

    def on_train_epoch_end(self) -> None:
        self._log_skipped()

    def configure_optimizers(self):
        from pvllm.models.optim import make_adamw

        lr = self.optim_cfg.get("lr", 2e-5)
        params: list = [p for p in self.model.parameters() if p.requires_grad]
        projector_lr = self.optim_cfg.get("projector_lr")
        if projector_lr is not None:  # LLaVA's mm_projector_lr: the fresh projector learns faster than the LLM
            from pvllm.models.families import model_parts

            proj = {id(p) for p in model_parts(self.model)["projector"] if p.requires_grad}
            if not proj:
                raise ValueError("optim.projector_lr is set but the model has no trainable projector parameters")
            params = [{"params": [p for p in params if id(p) not in proj], "lr": lr, "name": "default"},
                      {"params": [p for p in params if id(p) in proj], "lr": projector_lr, "name": "projector"}]
        # torch AdamW, or DeepSpeed's CPU Adam when the strategy offloads the optimizer (ZeRO-2 offload)
        opt = make_adamw(
            params, lr=lr, weight_decay=self.optim_cfg.get("weight_decay", 0.0),
            betas=tuple(self.optim_cfg.get("betas", (0.9, 0.999))), strategy=self.trainer.strategy,
        )
        if not self.sched_cfg or self.sched_cfg.get("name", "cosine") == "constant":
            return opt
        from transformers import get_cosine_schedule_with_warmup

        total = int(self.trainer.estimated_stepping_batches)
        warmup = int(round(self.sched_cfg.get("warmup_ratio", 0.03) * total))
        sched = get_cosine_schedule_with_warmup(opt, warmup, total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.trainer.global_step != self._logged_step:  # the optimizer stepped: the window is complete
            self._logged_step = self.trainer.global_step
            mean = self.train_loss.compute()  # synced over ranks (a collective: every rank gets here)
            self.train_loss.reset()
            if torch.isfinite(mean):  # a window of placeholders only has no loss to report
                self.log("train/loss", mean, on_step=True, prog_bar=True, batch_size=1)
                self.log("train/perplexity", torch.exp(mean), on_step=True, batch_size=1)
        opt = self.optimizers()
        if opt is not None and hasattr(opt, "param_groups"):
            self.log("train/lr", opt.param_groups[0]["lr"], on_step=True, batch_size=1)
            for g in opt.param_groups[1:]:  # optim.projector_lr: its own group
                self.log(f"train/lr_{g.get('name', 'group')}", g["lr"], on_step=True, batch_size=1)
