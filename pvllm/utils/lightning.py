"""Small Lightning/Hydra helpers shared by train.py and evaluate.py."""

from __future__ import annotations

import logging
import re
from typing import Any

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

_SECRET = re.compile(r"(api[_-]?key|token|secret|password|credential)", re.I)


def redact(obj: Any) -> Any:
    """A copy of a (resolved) config with every value under a secret-looking key replaced."""
    if isinstance(obj, dict):
        return {k: ("<redacted>" if _SECRET.search(str(k)) and v is not None else redact(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj


def loggable_config(cfg: DictConfig) -> dict:
    """The resolved config for W&B/summary files, with secrets redacted."""
    return redact(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False))


class RankedLogger(logging.LoggerAdapter):
    """A logger that only emits on global rank zero (lightning-hydra-template)."""

    def __init__(self, name: str = __name__):
        super().__init__(logging.getLogger(name), {})

    def log(self, level: int, msg: str, *args, **kwargs) -> None:
        if rank_zero_only.rank == 0:
            super().log(level, msg, *args, **kwargs)
