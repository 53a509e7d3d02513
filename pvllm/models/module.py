"""The PV-LLM LightningModule: forward, training/validation steps, optimizer, generation."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch


class PVLLMModule(L.LightningModule):
    """Wraps a VideoLlava model (from pvllm.models.builder); the loss is over reply tokens only."""

    def __init__(self, model: torch.nn.Module, optim: dict[str, Any], scheduler: dict[str, Any] | None = None):
        super().__init__()
        self.model = model
        # from_pretrained returns eval mode and Lightning keeps submodule modes: train explicitly
        self.model.train()
        self.optim_cfg = dict(optim)
        self.sched_cfg = dict(scheduler or {})
        self._t_last: float | None = None

    def forward(self, batch: dict[str, Any]):
        return self.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
            pixel_values_videos=batch["pixel_values_videos"], labels=batch["labels"],
        )

    def training_step(self, batch: dict[str, Any] | None, batch_idx: int):
        if batch is None:  # every item of the batch was a skipped (bad) video: counted in the datamodule
            return None
        loss = self(batch).loss
        n_tok = int(batch["attention_mask"].sum())
        now = time.perf_counter()
        if self._t_last is not None:
            self.log("train/tokens_per_s", n_tok / max(now - self._t_last, 1e-9), on_step=True, batch_size=1)
        self._t_last = now
        self.log("train/loss", loss, on_step=True, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, Any] | None, batch_idx: int):
        if batch is None:
            return None
        loss = self(batch).loss
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, batch_size=batch["input_ids"].shape[0],
                 sync_dist=True)
        return loss

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(
            params, lr=self.optim_cfg.get("lr", 2e-5), weight_decay=self.optim_cfg.get("weight_decay", 0.0),
            betas=tuple(self.optim_cfg.get("betas", (0.9, 0.999))),
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
