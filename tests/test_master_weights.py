"""bf16-loaded weights keep fp32 master weights outside DeepSpeed (issue 21 item 4, precision).

200 AdamW steps at lr 1e-5 on one batch of the tiny Video-LLaVA: the model loaded in bf16 through the
real path (PVLLMModule under Lightning, precision bf16-mixed) against the same run from fp32 weights
(same bf16-representable start). Their linear and norm weights agree to within one bf16 step of the
reference; a plain AdamW on the bf16 weights (what ran before) leaves most of them at their start.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch

from pvllm.distributed.ds_cpu import make_batches
from pvllm.models.builder import build_pvllm
from pvllm.models.module import PVLLMModule
from pvllm.models.optim import keep_fp32_master_weights

STEPS, LR = 200, 1e-5


def _weights(model) -> dict[str, torch.Tensor]:
    """Trainable weights of Linear and norm modules (LlamaRMSNorm here), as fp32 copies."""
    out = {}
    for mname, mod in model.named_modules():
        kind = "linear" if isinstance(mod, torch.nn.Linear) else "norm" if "Norm" in type(mod).__name__ else None
        w = getattr(mod, "weight", None)
        if kind and isinstance(w, torch.nn.Parameter) and w.requires_grad:
            out[f"{kind}:{mname}"] = w.detach().float().clone()
    return out


def _lightning_run(model, batch) -> dict[str, torch.Tensor]:
    module = PVLLMModule(model, optim={"lr": LR, "weight_decay": 0.0})
    loader = torch.utils.data.DataLoader([batch] * STEPS, batch_size=None)
    trainer = L.Trainer(accelerator="cpu", devices=1, precision="bf16-mixed", max_steps=STEPS, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, train_dataloaders=loader)
    return _weights(model)


def _off_by(w: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per tensor: mean |w - ref| in units of the mean bf16 rounding of ``ref`` (half a bf16 step there)."""
    half_ulp = torch.finfo(torch.bfloat16).eps / 2
    return {n: float((w[n] - r).abs().mean() / (half_ulp * r.abs().mean())) for n, r in ref.items()}


@pytest.fixture(scope="module")
def runs(tiny_model_dir):
    torch.manual_seed(0)
    bf16 = build_pvllm(pretrained=str(tiny_model_dir), dtype="bfloat16")
    batch = make_batches(bf16.processor, 1, seed=0)[0]
    start = _weights(bf16.model)

    ref_model = build_pvllm(pretrained=str(tiny_model_dir), dtype="float32").model
    with torch.no_grad():  # the same start: the bf16-representable values
        for p in ref_model.parameters():
            p.copy_(p.bfloat16().float())
    ref = _lightning_run(ref_model, batch)
    master = _lightning_run(bf16.model, batch)
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters() if p.requires_grad)

    plain = build_pvllm(pretrained=str(tiny_model_dir), dtype="bfloat16").model  # the old path: AdamW on bf16
    plain.train()
    opt = torch.optim.AdamW([p for p in plain.parameters() if p.requires_grad], lr=LR, weight_decay=0.0)
    mod = PVLLMModule(plain, optim={})
    for _ in range(STEPS):
        opt.zero_grad()
        mod(batch).backward()
        opt.step()
    return start, ref, master, _weights(plain)


def test_bf16_loaded_weights_train_like_fp32_masters(runs):
    start, ref, master, _ = runs
    moved = sum(int((ref[n] != start[n]).sum()) for n in ref) / sum(r.numel() for r in ref.values())
    assert moved > 0.9  # the reference run really moves the weights (200 × 1e-5 ≫ their bf16 rounding)
    off = _off_by(master, ref)
    assert {n.split(":")[0] for n in off} == {"linear", "norm"}
    assert max(off.values()) < 1.0, max(off.items(), key=lambda kv: kv[1])  # measured: ≤ 0.13


def test_plain_bf16_adamw_leaves_weights_at_their_start(runs):
    start, ref, _, plain = runs

    def unchanged(kind: str) -> float:
        names = [n for n in start if n.startswith(kind + ":")]
        return sum(int((plain[n] == start[n]).sum()) for n in names) / sum(start[n].numel() for n in names)

    assert unchanged("linear") > 0.5 and unchanged("norm") == 1.0  # measured: 83% and 100%
    off = _off_by(plain, ref)
    failing = [n for n, v in off.items() if v >= 1.0]
    assert all(n in failing for n in off if n.startswith("linear:")), off  # the check above fails for it


def test_bf16_weights_without_autocast_are_refused():
    lin = torch.nn.Linear(4, 4).to(torch.bfloat16)
    with pytest.raises(ValueError, match=r"trainer.precision=bf16-true has no autocast.*fp32 master"):
        keep_fp32_master_weights(lin, strategy=None, precision="bf16-true")
    assert keep_fp32_master_weights(lin, strategy=None, precision="bf16-mixed") == 2
    assert lin.weight.dtype == torch.float32 and lin.bias.dtype == torch.float32
