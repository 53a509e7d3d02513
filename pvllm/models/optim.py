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


def is_deepspeed(strategy: Any) -> bool:
    """A DeepSpeed strategy (its bf16/fp16 optimizer keeps fp32 master weights of its own)."""
    return isinstance(getattr(strategy, "config", None), dict) and "zero_optimization" in strategy.config


def keep_fp32_master_weights(model: torch.nn.Module, strategy: Any, precision: str) -> int:
    """Make every trainable parameter an fp32 master weight; returns how many were upcast.

    A model loaded in bf16 (``model.dtype=bfloat16``) and stepped by a plain AdamW has no master copy:
    an update lr×step below half a bf16 ulp of the weight (lr 1e-5 on a weight of 0.1: 1e-6 < 2.4e-4)
    rounds back to the old value, so most weights never move. DeepSpeed keeps fp32 masters itself
    (untouched here). Elsewhere the trainable parameters become fp32 in place (same Parameter objects,
    frozen parts stay bf16: no extra memory for them) and ``trainer.precision=bf16-mixed`` runs the
    matmuls in bf16 under autocast. Without autocast (``*-true``) mixed dtypes cannot run: an error.
    """
    if is_deepspeed(strategy):
        return 0
    low = [(n, p) for n, p in model.named_parameters() if p.requires_grad and p.dtype != torch.float32]
    if not low:
        return 0
    if not str(precision).endswith("-mixed"):
        raise ValueError(
            f"{len(low)} trainable parameter(s) are {low[0][1].dtype} (e.g. {low[0][0]}) and "
            f"trainer.precision={precision} has no autocast: a plain AdamW on {low[0][1].dtype} weights keeps "
            "no fp32 master copy and drops updates below the weights' rounding. Use trainer.precision=bf16-mixed "
            "(trainable weights become fp32 masters, bf16 autocast), a DeepSpeed strategy, or model.dtype=float32."
        )
    for _, p in low:
        p.data = p.data.float()
    return len(low)
