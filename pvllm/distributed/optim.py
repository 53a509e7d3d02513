"""The AdamW that fits the strategy: DeepSpeed refuses a torch optimizer when ZeRO offloads it to CPU."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


def offloads_optimizer(strategy: Any) -> bool:
    """True when ``strategy`` is a DeepSpeed strategy whose config offloads the optimizer to CPU/NVMe."""
    config = getattr(strategy, "config", None)
    if not isinstance(config, dict):
        return False
    offload = (config.get("zero_optimization") or {}).get("offload_optimizer") or {}
    return offload.get("device") in ("cpu", "nvme")


def make_adamw(
    params: Iterable[torch.nn.Parameter] | list[dict[str, Any]],
    lr: float,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    strategy: Any = None,
) -> torch.optim.Optimizer:
    """torch AdamW, or DeepSpeedCPUAdam (same update, AdamW mode) when ``strategy`` offloads the optimizer.

    ``params``: parameters, or parameter groups (dicts with ``params`` and their own ``lr``).
    Call from ``LightningModule.configure_optimizers`` with ``strategy=self.trainer.strategy``.
    DeepSpeedCPUAdam JIT-compiles a C++ op on first use (needs a compiler; cached in TORCH_EXTENSIONS_DIR).
    """
    params = list(params)
    if params and isinstance(params[0], dict):  # parameter groups (own lr): trainable ones, empty groups dropped
        params = [dict(g, params=[p for p in g["params"] if p.requires_grad]) for g in params]
        params = [g for g in params if g["params"]]
    else:
        params = [p for p in params if p.requires_grad]
    if offloads_optimizer(strategy):
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(
            params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, adamw_mode=True
        )
    return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
