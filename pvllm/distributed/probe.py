"""A Lightning callback that records what each rank trained, for the DDP, SLURM-requeue and W&B tests.

Added from the command line without touching train.py:

    python train.py ... '+callbacks.probe._target_=pvllm.distributed.probe.TrainProbe' \
        '+callbacks.probe.out_dir=${paths.output_dir}/probe' [+callbacks.probe.pause_at_step=3]

Each rank appends JSON lines to ``out_dir/rank{R}.jsonl``: a ``start`` record (world size, the step it
resumed from, SLURM restart count), one ``micro`` record per micro-batch (loss, supervised items), one
``step`` record per optimizer step (global step, loss, the batch's sample ids) and an
``end`` record with a checksum of the trainable weights. ``pause_at_step`` holds the first run (SLURM
restart count 0) after that step until a signal ends it, so a test can preempt it at a known point.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from pvllm.utils.jsonl import append_jsonl


def restart_count() -> int:
    """How many times SLURM has requeued this job (0 outside SLURM)."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)


def _n_supervised(batch: Any) -> int | None:
    """Items of the batch with supervised labels (a skipped video's placeholder has none)."""
    if not isinstance(batch, dict) or "labels" not in batch:
        return None
    return int((batch["labels"] != -100).any(dim=1).sum())


class TrainProbe(L.Callback):
    def __init__(self, out_dir: str, pause_at_step: int | None = None, pause_timeout_s: float = 300.0):
        self.out_dir = Path(out_dir)
        self.pause_at_step = pause_at_step
        self.pause_timeout_s = pause_timeout_s
        self._last_logged_step = -1

    def _write(self, trainer: L.Trainer, rec: dict[str, Any]) -> None:
        rec = {"rank": trainer.global_rank, "restart": restart_count(), "time": time.time(), **rec}
        append_jsonl(self.out_dir / f"rank{trainer.global_rank}.jsonl", [rec])

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, {
            "event": "start", "world_size": trainer.world_size, "global_step": trainer.global_step,
            "ckpt_path": str(trainer.ckpt_path) if trainer.ckpt_path else None,
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "cluster_environment": type(trainer._accelerator_connector.cluster_environment).__name__,
        })  # fmt: skip

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self._write(trainer, {"event": "micro", "step": step, "loss": None if loss is None else float(loss),
                              "supervised": _n_supervised(batch)})  # every micro-batch (accumulation)
        if step == self._last_logged_step:  # accumulating: the optimizer has not stepped yet
            return
        self._last_logged_step = step
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self._write(trainer, {"event": "step", "step": step, "batch_idx": batch_idx,
                              "loss": None if loss is None else float(loss),
                              "sample_ids": list(batch.get("sample_id", [])) if isinstance(batch, dict) else None,
                              "supervised": _n_supervised(batch)})  # fmt: skip
        if self.pause_at_step is not None and step == self.pause_at_step and restart_count() == 0:
            self._write(trainer, {"event": "paused", "step": step})
            deadline = time.monotonic() + self.pause_timeout_s
            while time.monotonic() < deadline:  # a signal handler (SIGUSR1 -> requeue) runs during sleep
                time.sleep(0.2)
            raise RuntimeError(
                f"TrainProbe: paused at step {step} for {self.pause_timeout_s} s, no signal ended it"
            )

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        if trainer.sanity_checking or not isinstance(batch, dict):
            return
        self._write(trainer, {"event": "val", "step": trainer.global_step, "batch_idx": batch_idx,
                              "loss": None if outputs is None else float(outputs),
                              "sample_ids": list(batch.get("sample_id", [])),
                              "supervised": _n_supervised(batch)})  # fmt: skip

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        with torch.no_grad():
            checksum = sum(float(p.double().sum()) for p in pl_module.parameters() if p.requires_grad)
        self._write(trainer, {"event": "end", "step": trainer.global_step, "param_checksum": checksum})
