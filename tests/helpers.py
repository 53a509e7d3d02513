"""Test-only helpers that run inside train.py subprocesses (passed as Hydra callbacks)."""

from __future__ import annotations

import os

import lightning as L


class KillAtStep(L.Callback):
    """Simulates a crash (no cleanup, like SIGKILL) when training reaches ``step``."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            os._exit(3)
