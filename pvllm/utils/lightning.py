"""Small Lightning/Hydra helpers shared by train.py and evaluate.py.

Nothing here imports ``lightning`` itself: evaluate.py never trains, and Lightning's import (torchmetrics with
its scipy, torchvision and audio/image submodules) took half of evaluate.py's start-up. The rank comes from
``lightning_utilities``' ``rank_zero_only``, the object Lightning sets the rank on, so a train.py process
sees what its strategy set."""

from __future__ import annotations

import logging
import os

from lightning_utilities.core.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from pvllm.utils.secrets import redact_obj


def loggable_config(cfg: DictConfig) -> dict:
    """The resolved config for W&B/summary files, with secrets redacted."""
    return redact_obj(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False))


def global_rank() -> int:
    """The process's global rank: what Lightning set on ``rank_zero_only`` once it runs, else what Lightning
    would read at import (RANK, LOCAL_RANK, SLURM_PROCID, JSM_NAMESPACE_RANK; 0 without any)."""
    rank = getattr(rank_zero_only, "rank", None)
    if rank is not None:
        return int(rank)
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(key) is not None:
            return int(os.environ[key])
    return 0


class RankedLogger(logging.LoggerAdapter):
    """A logger that only emits on global rank zero (lightning-hydra-template)."""

    def __init__(self, name: str = __name__):
        super().__init__(logging.getLogger(name), {})

    def log(self, level: int, msg: str, *args, **kwargs) -> None:
        if global_rank() == 0:
            super().log(level, msg, *args, **kwargs)
