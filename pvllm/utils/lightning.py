"""Small Lightning/Hydra helpers shared by train.py and evaluate.py."""

from __future__ import annotations

import logging
from typing import Any

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from pvllm.utils.secrets import REDACTED, is_secret_name, redact_text


def redact(obj: Any) -> Any:
    """A copy of a (resolved) config with every value under a secret key (``api_key``, ``hf_token``; not
    ``max_new_tokens`` or ``tokenizer``) replaced, and any secret in a string value (a URL ``key=``, the
    value of a secret environment variable) cut out."""
    if isinstance(obj, dict):
        return {k: (REDACTED if is_secret_name(str(k)) and v is not None else redact(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        return redact_text(obj)
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
