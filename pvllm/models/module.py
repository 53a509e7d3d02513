"""The PV-LLM LightningModule: forward, training/validation steps, optimizer, generation."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch


class PVLLMModule(L.LightningModule):
    """Wraps a model of any family (from pvllm.models.builder); the loss is over reply tokens only."""

    def __init__(self, model: torch.nn.Module, optim: dict[str, Any], scheduler: dict[str, Any] | None = None,
                 loss: dict[str, Any] | None = None):
        super().__init__()
        self.model = model
        # loss.video_contrast > 0: also penalize ignoring the video (training_step, video_contrast_loss)
        self.loss_cfg = dict(loss or {})
        self._last_video: torch.Tensor | None = None
        # from_pretrained returns eval mode and Lightning keeps submodule modes: train explicitly
        self.model.train()
        self.optim_cfg = dict(optim)
        self.sched_cfg = dict(scheduler or {})
        self._t_last: float | None = None

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Mean next-token cross-entropy over the reply tokens.

        Only the positions from the first supervised token on go through the LM head (``logits_to_keep``):
        the prompt (history + 136..2056 video tokens) needs no logits, which saves most of the head's
        time and memory on a 49k..32k vocabulary. Same value as the model's own loss over all positions.
        """
        return self._reply_nll(batch, per_sample=False)

    def _reply_nll(self, batch: dict[str, Any], per_sample: bool) -> torch.Tensor:
        """The mean reply cross-entropy of the batch, or (``per_sample``) one mean per item (B,)."""
        labels = batch["labels"]
        supervised = (labels != -100).any(dim=0).nonzero()
        seq_len = labels.shape[1]
        keep = min(seq_len - int(supervised[0]) + 1, seq_len) if len(supervised) else seq_len
        # every model input the collator built (the family's visual inputs included), not labels / ids
        inputs = {k: v for k, v in batch.items() if k not in ("sample_id", "labels", "skipped_videos")}
        out = self.model(**inputs, logits_to_keep=keep)
        logits = out.logits[:, :-1].float()  # position t predicts token t+1
        targets = labels[:, seq_len - keep + 1:]
        if not len(supervised):  # only skipped-video placeholders: zero loss that still reaches every weight,
            return logits.sum() * 0.0  # so DDP's gradient all-reduce runs on this rank like on the others
        if per_sample:
            tok = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100,
                                                    reduction="none")  # (B, keep - 1)
            n = (targets != -100).sum(1)
            return tok.sum(1) / n.clamp(min=1)
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                                 ignore_index=-100)

    def video_contrast_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """A loss for ignoring the video: the reply must be likelier with its own video than with another
        one by ``loss.video_margin`` nats per token (hinge on the per-sample gap of mean cross-entropies).

        The other video is the previous item's in the batch (rolled), or with a batch of one the previous
        batch's video (kept, detached); items whose other video is identical to their own are left out.
        Returns (loss, mean gap) or None when the batch has no video or no other video yet."""
        video = batch.get("pixel_values_videos")
        if video is None:
            return None
        prev, self._last_video = self._last_video, video.detach()
        if video.shape[0] > 1:
            other = torch.roll(video, 1, dims=0)
        elif prev is not None and prev.shape == video.shape:
            other = prev
        else:
            return None
        differs = (other != video).flatten(1).any(1) & (batch["labels"] != -100).any(1)
        if not differs.any():
            return None
        own = self._reply_nll(batch, per_sample=True)
        mismatched = self._reply_nll(dict(batch, pixel_values_videos=other), per_sample=True)
        gap = (mismatched - own)[differs]
        margin = float(self.loss_cfg.get("video_margin", 1.0))
        return torch.relu(margin - gap).mean(), gap.detach().mean()

    @staticmethod
    def _n_supervised(batch: dict[str, Any]) -> int:
        """Items of the batch with a supervised reply (a skipped video's placeholder has none)."""
        return int((batch["labels"] != -100).any(dim=1).sum())

    def training_step(self, batch: dict[str, Any] | None, batch_idx: int):
        if batch is None:
            return None
        n = self._n_supervised(batch)
        if n == 0 and self.trainer.world_size == 1:
            return None  # one process: nothing to learn from this batch, skip the step (counted)
        loss = self(batch)  # under DDP a placeholder-only batch is a zero loss: every rank steps together
        weight = float(self.loss_cfg.get("video_contrast", 0.0))
        contrast = self.video_contrast_loss(batch) if weight > 0 and n else None
        if contrast is not None:
            self.log("train/video_gap", contrast[1], on_step=True, batch_size=n)
            loss = loss + weight * contrast[0]
        n_tok = int(batch["attention_mask"].sum())
        now = time.perf_counter()
        if self._t_last is not None:
            self.log("train/tokens_per_s", n_tok / max(now - self._t_last, 1e-9), on_step=True, batch_size=1)
        self._t_last = now
        if n:
            self.log("train/loss", loss, on_step=True, prog_bar=True, batch_size=n)
        return loss

    def validation_step(self, batch: dict[str, Any] | None, batch_idx: int):
        if batch is None:
            return None
        loss = self(batch)
        # a placeholder-only batch weighs 0 in the epoch mean, but every rank logs (the sync stays in step)
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, batch_size=self._n_supervised(batch),
                 sync_dist=True)
        return loss

    def _log_skipped(self) -> None:
        skipped = getattr(self.trainer.datamodule, "skipped", None)
        if skipped is not None:  # summed over ranks (a collective: every rank logs it)
            self.log("data/skipped_videos", float(sum(skipped.values())), reduce_fx="sum", sync_dist=True)

    def on_train_epoch_end(self) -> None:
        self._log_skipped()

    def configure_optimizers(self):
        from pvllm.distributed.optim import make_adamw

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
        opt = self.optimizers()
        if opt is not None and hasattr(opt, "param_groups"):
            self.log("train/lr", opt.param_groups[0]["lr"], on_step=True, batch_size=1)
            for g in opt.param_groups[1:]:  # optim.projector_lr: its own group
                self.log(f"train/lr_{g.get('name', 'group')}", g["lr"], on_step=True, batch_size=1)
