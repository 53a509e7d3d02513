"""Memory and speed arithmetic for the 8×A100 runs: bytes per GPU and seconds per optimizer step.

    python -m pvllm.distributed.memory            # the table of docs/cluster.md (every model × strategy)

Per GPU, for N data-parallel GPUs, Ψ parameters (all), Φ trainable (paper §3.2: vision encoder and word
embeddings frozen), bf16 weights and mixed-precision AdamW (ZeRO paper accounting: 2 bytes of bf16
gradient, 12 bytes of fp32 master + Adam m + v per trainable parameter):

| | ZeRO-2 | ZeRO-2 offload | ZeRO-3 |
|---|---|---|---|
| weights | 2Ψ | 2Ψ | 2Ψ/N + 2 gathered layers |
| gradients | 2Φ/N | 2Φ/N | 2Φ/N |
| optimizer | 12Φ/N | 0 (16Φ/N in host RAM, fp32 grads included) | 12Φ/N |
| buffers | reduce + all-gather buckets of conf/strategy | same | reduce + prefetch buckets |

Activations with gradient checkpointing: each LLM layer's input (T × h bf16) kept, plus one layer
recomputed at a time (T × (6h + 2 h_kv + 4 I) bf16: norms, q/k/v, attention output, the SwiGLU MLP's four
I-wide tensors; SDPA keeps no T×T scores), the kept logits (reply tokens × vocab, fp32, ×3) and the
frozen vision tower's forward of one layer. T = visual tokens (frames × tokens per frame) + text tokens.
Plus a fixed CUDA context / allocator overhead. "Fits" = at most 90% of the card.

Step time: FLOPs (8 × LLM body params × T with the checkpointing recompute, 2 × vision params × vision
tokens) at a stated MFU of the card's bf16 peak; collectives at a stated NVLink bus bandwidth, overlapped
with compute up to half the compute time (``overlap_comm``), the rest exposed; ZeRO-3 gathers weights for
forward, recompute and backward and pays a stated share of compute for its hooks; offload adds fp32 gradients
to host per micro-batch and the updated weights back per step over PCIe, and the host Adam at a stated rate.
Assumptions are the fields of
``Cluster``: a number here is as good as they are, and the GPU check (pvllm.distributed.gpu_checks) is
the measurement.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

from pvllm.models.shapes import SHAPES

GB = 1e9
STRATEGIES = ("deepspeed_zero2", "deepspeed_zero2_offload", "deepspeed_zero3")
CONF = Path(__file__).resolve().parents[2] / "conf"


@dataclass(frozen=True)
class Cluster:
    """One node of 8×A100-SXM 80 GB; every speed is an assumption stated here."""

    gpus: int = 8
    gpu_mem_gb: float = 80.0
    peak_bf16_tflops: float = 312.0  # A100 dense bf16
    mfu: float = 0.40  # model FLOPs utilisation assumed for a 7B model with checkpointing at batch 1
    nvlink_gbps: float = 200.0  # NCCL bus bandwidth per GPU for all-gather / reduce-scatter, GB/s
    pcie_gbps: float = 12.0  # host<->GPU per GPU with 8 GPUs sharing the host links, GB/s
    host_adam_params_per_s: float = 1.0e9  # DeepSpeedCPUAdam per rank (its CPU cores), parameters/s
    zero3_overhead: float = 0.15  # ZeRO-3's per-module gather hooks, fetch latency, small collectives: share of compute
    disk_gbps: float = 2.0  # checkpoint write bandwidth of the shared file system, GB/s
    overhead_gb: float = 4.0  # CUDA context, NCCL, allocator fragmentation
    usable: float = 0.90  # fits = total at most this share of the card


A100_80GB_X8 = Cluster()


@dataclass(frozen=True)
class Workload:
    """One sample per GPU per micro-batch (the paper's batch 1 × 8 GPUs, accumulation 8)."""

    frames: int = 8
    text_tokens: int = 512  # history (k ≤ 15 comments) + Figure-5 prompt + reply
    reply_tokens: int = 64  # positions that go through the LM head (logits_to_keep)
    micro_batch: int = 1
    accumulate: int = 8
    gradient_checkpointing: bool = True


@dataclass
class Estimate:
    model: str
    strategy: str
    bytes: dict[str, float] = field(default_factory=dict)  # per GPU: weights, grads, optimizer, ...
    host_bytes: float = 0.0  # per node, offloaded optimizer
    total: float = 0.0
    fits: bool = False
    tokens: int = 0
    step_s: float = 0.0  # one optimizer step (accumulate micro-batches)
    parts_s: dict[str, float] = field(default_factory=dict)
    checkpoint_bytes: float = 0.0  # one Lightning DeepSpeed save (all ranks)
    checkpoint_s: float = 0.0


@cache
def param_counts(name: str) -> dict[str, int]:
    """Parameter counts of the real model (meta device) under the paper's freezing."""
    from pvllm.models.builder import LLMSpec, PartSpec, apply_freezing
    from pvllm.models.families import model_parts
    from pvllm.models.shapes import meta_model

    model = meta_model(name)
    apply_freezing(model, PartSpec(False), PartSpec(True), LLMSpec(True, False))
    parts = {k: sum(p.numel() for p in v) for k, v in model_parts(model).items()}
    text = model.config.text_config
    head = model.get_output_embeddings().weight.numel()
    return {
        "total": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "vision": parts["vision_encoder"] + parts.get("image_encoder (unused for video)", 0),
        "video_tower": parts["vision_encoder"],
        "llm_body": parts["llm (other layers)"] - head,  # the layers every token goes through
        "largest_layer": sum(p.numel() for p in model.model.language_model.layers[0].parameters()),
        "hidden": text.hidden_size, "intermediate": text.intermediate_size, "layers": text.num_hidden_layers,
        "kv_dim": text.num_key_value_heads * (getattr(text, "head_dim", None)
                                              or text.hidden_size // text.num_attention_heads),
        "vocab": text.vocab_size,
        "vision_hidden": model.config.vision_config.hidden_size,
        "vision_intermediate": model.config.vision_config.intermediate_size,
    }  # fmt: skip


def strategy_config(strategy: str) -> dict:
    """The DeepSpeed dict of conf/strategy/<strategy>.yaml (the buckets the arithmetic charges)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(CONF / "strategy" / f"{strategy}.yaml").config, resolve=True)


def estimate(name: str, strategy: str, cluster: Cluster = A100_80GB_X8, work: Workload = Workload()) -> Estimate:
    """Bytes per GPU and seconds per optimizer step of model ``name`` (pvllm.models.shapes) under ``strategy``."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; the arithmetic covers {', '.join(STRATEGIES)}")
    c, N = param_counts(name), cluster.gpus
    psi, phi = c["total"], c["trainable"]
    zero = strategy_config(strategy)["zero_optimization"]
    stage3, offload = zero["stage"] == 3, bool((zero.get("offload_optimizer") or {}).get("device"))
    vis_tokens = SHAPES[name].visual_tokens_8_frames * work.frames // 8
    T = (vis_tokens + work.text_tokens) * work.micro_batch
    h, inter, L = c["hidden"], c["intermediate"], c["layers"]

    b: dict[str, float] = {}
    b["weights"] = 2 * psi / N + 2 * 2 * c["largest_layer"] if stage3 else 2 * psi
    b["grads"] = 2 * phi / N
    b["optimizer"] = 0.0 if offload else 12 * phi / N
    bucket = 2 * zero.get("reduce_bucket_size", 5e8) * (2 if zero.get("overlap_comm") else 1)
    b["buffers"] = bucket + 2 * (zero.get("stage3_prefetch_bucket_size", 0) if stage3 else
                                 zero.get("allgather_bucket_size", 5e8))
    layer_act = T * (6 * h + 2 * c["kv_dim"] + 4 * inter) * 2
    kept = L * T * h * 2 if work.gradient_checkpointing else (L - 1) * layer_act
    vis = vis_tokens * work.micro_batch * (6 * c["vision_hidden"] + 2 * c["vision_intermediate"]) * 2
    logits = work.reply_tokens * work.micro_batch * c["vocab"] * 4 * 3
    b["activations"] = kept + layer_act + vis + logits
    b["overhead"] = cluster.overhead_gb * GB
    total = sum(b.values())

    flops = (8 if work.gradient_checkpointing else 6) * c["llm_body"] * T + 2 * c["video_tower"] * vis_tokens \
        * work.micro_batch + 6 * c["vocab"] * h * work.reply_tokens * work.micro_batch
    compute = flops / (cluster.peak_bf16_tflops * 1e12 * cluster.mfu)
    ring = (N - 1) / N / (cluster.nvlink_gbps * GB)
    comm = 2 * phi * ring + (3 if work.gradient_checkpointing else 2) * 2 * psi * ring * stage3
    exposed = max(0.0, comm - 0.5 * compute)
    per_step_comm = 0.0 if stage3 else 2 * phi * ring  # ZeRO-2: all-gather the updated bf16 weights
    host = 0.0
    if offload:  # fp32 gradient partition to host per micro-batch; Adam on host; bf16 weights back
        host = work.accumulate * 4 * phi / N / (cluster.pcie_gbps * GB) + phi / N / cluster.host_adam_params_per_s \
            + 2 * phi / N / (cluster.pcie_gbps * GB)
    hooks = cluster.zero3_overhead * compute if stage3 else 0.0
    step = work.accumulate * (compute + exposed + hooks) + per_step_comm + host
    ckpt = 2 * psi + 12 * phi  # bf16 module states + fp32 master/m/v over all ranks
    return Estimate(
        model=name, strategy=strategy, bytes=b, host_bytes=16 * phi if offload else 0.0, total=total,
        fits=total <= cluster.usable * cluster.gpu_mem_gb * GB, tokens=T, step_s=step,
        parts_s={"compute": work.accumulate * compute, "exposed_comm": work.accumulate * exposed + per_step_comm,
                 "zero3_hooks": work.accumulate * hooks, "offload": host},
        checkpoint_bytes=ckpt, checkpoint_s=ckpt / (cluster.disk_gbps * GB),
    )


def fastest_fitting(name: str, cluster: Cluster = A100_80GB_X8, work: Workload = Workload()) -> Estimate:
    """The strategy a run of ``name`` should default to: the fastest step among those that fit."""
    fits = [e for e in (estimate(name, s, cluster, work) for s in STRATEGIES) if e.fits]
    if not fits:
        raise ValueError(f"{name}: no strategy fits {cluster.gpus}×{cluster.gpu_mem_gb:g} GB")
    return min(fits, key=lambda e: e.step_s)


def min_checkpoint_interval(e: Estimate, budget: float = 0.05) -> int:
    """Fewest optimizer steps between saves that keep checkpoint writing under ``budget`` of training time."""
    return math.ceil(e.checkpoint_s / (budget * e.step_s))


def table(cluster: Cluster = A100_80GB_X8, work: Workload = Workload()) -> str:
    """The markdown table of docs/cluster.md."""
    rows = ["| model | strategy | weights | grads | optimizer | activations | buffers+overhead | total GB/GPU "
            "| fits | s/step | one save | save at disk speed |", "|" + "---|" * 12]
    for name in SHAPES:
        best = fastest_fitting(name, cluster, work).strategy
        for s in STRATEGIES:
            e = estimate(name, s, cluster, work)
            g = {k: v / GB for k, v in e.bytes.items()}
            mark = " **(default)**" if s == best else ""
            rows.append(f"| {name} | {s}{mark} | {g['weights']:.1f} | {g['grads']:.1f} | {g['optimizer']:.1f}"
                        f"{f' (+{e.host_bytes / GB:.0f} host)' if e.host_bytes else ''} | {g['activations']:.1f} | "
                        f"{g['buffers'] + g['overhead']:.1f} | {e.total / GB:.1f} | {'yes' if e.fits else 'no'} | "
                        f"{e.step_s:.1f} | {e.checkpoint_bytes / GB:.0f} GB | {e.checkpoint_s:.0f} s |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=Workload.frames)
    p.add_argument("--text-tokens", type=int, default=Workload.text_tokens)
    p.add_argument("--disk-gbps", type=float, default=Cluster.disk_gbps)
    p.add_argument("--mfu", type=float, default=Cluster.mfu)
    a = p.parse_args(argv)
    cluster = Cluster(disk_gbps=a.disk_gbps, mfu=a.mfu)
    work = Workload(frames=a.frames, text_tokens=a.text_tokens)
    print(table(cluster, work))
    print(f"\nassumptions: {asdict(cluster)}\nworkload: {asdict(work)}")
    for name in SHAPES:
        e = fastest_fitting(name, cluster, work)
        print(f"{name}: default {e.strategy}, {e.tokens} tokens/sample, {e.step_s:.1f} s/step; a save every "
              f">= {min_checkpoint_interval(e)} steps keeps checkpoint I/O under 5%")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
