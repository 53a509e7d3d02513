"""Small Lightning/Hydra helpers shared by train.py and evaluate.py."""

from __future__ import annotations

import logging

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from pvllm.utils.secrets import redact_obj


def loggable_config(cfg: DictConfig) -> dict:
    """The resolved config for W&B/summary files, with secrets redacted."""
    return redact_obj(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False))


class RankedLogger(logging.LoggerAdapter):
    """A logger that only emits on global rank zero (lightning-hydra-template)."""

    def __init__(self, name: str = __name__):
        super().__init__(logging.getLogger(name), {})

    def log(self, level: int, msg: str, *args, **kwargs) -> None:
        if rank_zero_only.rank == 0:
            super().log(level, msg, *args, **kwargs)
