"""DeepSpeed ZeRO on CPU processes: the same strategy dicts as conf/strategy/, without Lightning.

Lightning's DeepSpeedStrategy refuses CPUs, but DeepSpeed itself runs there (``DS_ACCELERATOR=cpu``,
gloo, a torch optimizer). This trains a model from ``pvllm.models.builder.build_pvllm`` for a few steps
on N processes with the ``config`` dict of a ``conf/strategy/deepspeed_*.yaml`` and writes a ZeRO
checkpoint, so tests and ``scripts/deepspeed_cpu_smoke.py`` exercise real sharding + consolidation.

    python -m pvllm.distributed.ds_cpu --nproc 2 --strategy conf/strategy/deepspeed_zero3.yaml \
        --model-dir /tmp/tiny --out /tmp/ds_run --steps 2

Rank r trains on batches ``make_batches(processor, steps, seed + r)``; ``reference_losses`` replays the
same run in one process (mean loss over ranks, plain AdamW) so the result can be checked exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from pvllm.distributed.checkpoint_io import save_zero_checkpoint
from pvllm.models.optim import make_adamw
from pvllm.utils.atomic import recover_dir

COMMENTS = [
    "this clip really hops, some-bunny loves this",
    "Where was this filmed? Is it real or CGI?",
    "OMG this is SO GOOD I can't stop watching",
    "Not impressed, the editing is lazy",
]
HISTORY = ["nice cool good one", "best clip EVER"]


def default_extensions_dir() -> str:
    """Where DeepSpeed's JIT-built CPU ops are cached (first build ~30 s, then reused)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "pvllm", "torch_extensions")


def ds_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for DeepSpeed-on-CPU child processes."""
    env = dict(os.environ)
    env["DS_ACCELERATOR"] = "cpu"
    env.setdefault("TORCH_EXTENSIONS_DIR", default_extensions_dir())
    env.setdefault("OMP_NUM_THREADS", "1")  # N processes on few cores: no oversubscription
    env["CUDA_VISIBLE_DEVICES"] = ""
    env.update(extra or {})
    return env


def load_strategy_config(path: str | os.PathLike) -> dict[str, Any]:
    """The DeepSpeed dict of a strategy YAML, completed the way Lightning completes it for trainer settings."""
    from omegaconf import OmegaConf

    node = OmegaConf.load(path)
    if "config" not in node:
        raise ValueError(f"{path} is not a DeepSpeed strategy (no `config` dict)")
    config = OmegaConf.to_container(node.config, resolve=True)
    # What Lightning adds from Trainer arguments (see conf/strategy/deepspeed_zero2.yaml).
    config.setdefault("train_micro_batch_size_per_gpu", 1)
    config.setdefault("gradient_accumulation_steps", 1)
    config.setdefault("gradient_clipping", 0.0)
    return config


def make_batches(processor, n: int, seed: int, num_frames: int = 8) -> list[dict[str, torch.Tensor]]:
    """``n`` single-sample training batches (Figure-5 prompt + target comment, prompt tokens masked)."""
    from pvllm.prompt import build_prompt

    rng = np.random.default_rng(seed)
    size = processor.video_processor.crop_size["height"]
    batches = []
    for _ in range(n):
        frames = rng.integers(0, 256, size=(num_frames, size, size, 3), dtype=np.uint8)
        prompt = build_prompt(HISTORY)
        comment = COMMENTS[int(rng.integers(len(COMMENTS)))]
        eos = processor.tokenizer.eos_token
        full = processor(text=f"{prompt} {comment}{eos}", videos=[frames], return_tensors="pt")
        n_prompt = processor(text=prompt, videos=[frames], return_tensors="pt")["input_ids"].shape[1]
        labels = full["input_ids"].clone()
        labels[:, :n_prompt] = -100
        batches.append(
            {
                "input_ids": full["input_ids"],
                "attention_mask": full["attention_mask"],
                "pixel_values_videos": full["pixel_values_videos"],
                "labels": labels,
            }
        )
    return batches


def _build(model_dir: str):
    from pvllm.models.builder import build_pvllm

    return build_pvllm(pretrained=model_dir)


def _build_in_configure_model(model_dir: str, config: dict):
    """What Lightning does for ZeRO-3: ``PVLLMModule.configure_model`` (the build function train.py hands
    it) inside ``deepspeed.zero.Init`` with the strategy's config. Returns the module's bundle."""
    from functools import partial

    import deepspeed

    from pvllm.models.builder import build_under_zero3
    from pvllm.models.module import PVLLMModule

    module = PVLLMModule(None, optim={}, build=partial(build_under_zero3, partial(_build, model_dir), config))
    with deepspeed.zero.Init(config_dict_or_path=config):  # Lightning: strategy.model_sharded_context()
        module.configure_model()
    return module.bundle


def train_rank(strategy: str, model_dir: str, out: str, steps: int, lr: float, seed: int,
               zero_init: bool = False, resume: bool = False) -> None:
    """Body of one rank (started by ``launch``): DeepSpeed-initialize, train, save a ZeRO checkpoint.

    ``zero_init``: build the model as ZeRO-3 training does (sharded as it loads, in configure_model).
    ``resume``: continue from ``OUT/ckpt`` (the last complete checkpoint) up to ``steps`` in all.
    """
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo")
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    torch.manual_seed(seed)
    config = load_strategy_config(strategy)
    built = _build_in_configure_model(model_dir, config) if zero_init else _build(model_dir)
    model = built.model
    partitioned = None
    if zero_init:  # what each rank holds right after the build: its shards only
        partitioned = {"sharded": all(hasattr(p, "ds_id") for p in model.parameters()),
                       "local": sum(p.ds_tensor.numel() for p in model.parameters()),
                       "total": sum(p.ds_numel for p in model.parameters()),
                       "table_total": sum(r["params"] for r in built.parameter_table)}
    params = [p for p in model.parameters() if p.requires_grad]
    # The optimizer PVLLMModule would build under this strategy (DeepSpeedCPUAdam when offloading).
    optimizer = make_adamw(params, lr=lr, weight_decay=0.0, strategy=SimpleNamespace(config=config))
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=params, optimizer=optimizer, config=config
    )
    out_dir = Path(out)
    resumed_from = 0
    if resume:
        if rank == 0:
            recover_dir(out_dir / "ckpt")  # finish or undo a swap that a kill interrupted
        torch.distributed.barrier()
        if (out_dir / "ckpt").exists():
            engine.load_checkpoint(str(out_dir / "ckpt"))
            resumed_from = engine.global_steps
    batches = make_batches(built.processor, steps, seed + rank)[resumed_from:]
    losses = []
    for batch in batches:
        loss = engine(**batch).loss
        engine.backward(loss)
        engine.step()
        losses.append(float(loss.detach()))
    # into a partial dir, renamed over ckpt/ once every rank wrote its shards (a kill keeps the last complete one)
    save_zero_checkpoint(engine, out_dir / "ckpt", tag=f"global_step{steps}", is_zero=rank == 0)
    stage = engine.zero_optimization_stage()
    record = {
        "rank": rank,
        "world_size": world,
        "zero_stage": stage,
        "losses": losses,
        "steps": engine.global_steps,
        "partitioned": partitioned,
        "resumed_from": resumed_from,
    }
    (out_dir / f"rank{rank}.json").write_text(json.dumps(record))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def reference_losses(
    model_dir: str, nproc: int, steps: int, lr: float, seed: int
) -> tuple[list[list[float]], Any]:
    """The same run in one process: per step, mean loss over ranks' batches, AdamW. Returns (losses, model)."""
    torch.manual_seed(seed)
    built = _build(model_dir)
    model = built.model
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    per_rank = [make_batches(built.processor, steps, seed + r) for r in range(nproc)]
    losses: list[list[float]] = [[] for _ in range(nproc)]
    for step in range(steps):
        optimizer.zero_grad()
        total = 0.0
        for r in range(nproc):
            loss = model(**per_rank[r][step]).loss
            losses[r].append(float(loss.detach()))
            total = total + loss / nproc  # DeepSpeed averages gradients over data-parallel ranks
        total.backward()
        optimizer.step()
    return losses, model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(
    strategy: str | os.PathLike,
    model_dir: str | os.PathLike,
    out: str | os.PathLike,
    nproc: int = 2,
    steps: int = 2,
    lr: float = 1e-3,
    seed: int = 0,
    timeout: float = 600,
    zero_init: bool = False,
    resume: bool = False,
    env: dict[str, str] | None = None,
) -> list[dict]:
    """Run ``train_rank`` on ``nproc`` CPU processes with torchrun; returns each rank's record."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1",
        "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
        "-m", "pvllm.distributed.ds_cpu", "--rank-main",
        "--strategy", str(strategy), "--model-dir", str(model_dir), "--out", str(out),
        "--steps", str(steps), "--lr", str(lr), "--seed", str(seed), *(["--zero-init"] if zero_init else []),
        *(["--resume"] if resume else []),
    ]  # fmt: skip
    with open(out / "launch.log", "w") as logf:
        proc = subprocess.run(cmd, env=ds_env(env), stdout=logf, stderr=subprocess.STDOUT, timeout=timeout)
    if proc.returncode != 0:
        tail = (out / "launch.log").read_text()[-4000:]
        raise RuntimeError(f"DeepSpeed CPU run failed (exit {proc.returncode}); log tail:\n{tail}")
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(nproc)]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="DeepSpeed ZeRO training on CPU processes (tests, smoke)")
    p.add_argument("--strategy", required=True, help="conf/strategy/deepspeed_*.yaml")
    p.add_argument("--model-dir", required=True, help="HF VideoLlava directory (e.g. the tiny model)")
    p.add_argument("--out", required=True, help="output dir: ckpt/, rank*.json, launch.log")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--zero-init", action="store_true",
                   help="ZeRO-3: build the model in PVLLMModule.configure_model under deepspeed.zero.Init")
    p.add_argument("--resume", action="store_true", help="continue from OUT/ckpt (the last complete checkpoint)")
    p.add_argument("--rank-main", action="store_true", help=argparse.SUPPRESS)  # set by launch()
    a = p.parse_args(argv)
    if a.rank_main:
        train_rank(a.strategy, a.model_dir, a.out, a.steps, a.lr, a.seed, a.zero_init, a.resume)
        # Everything is on disk (checkpoint, rank record). Skip interpreter teardown: on CPU, C++
        # destructors of DeepSpeed's comm threads sometimes abort ("terminate called without an
        # active exception", SIGABRT) after a run that succeeded.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    for rec in launch(a.strategy, a.model_dir, a.out, a.nproc, a.steps, a.lr, a.seed, zero_init=a.zero_init,
                      resume=a.resume):
        print(json.dumps(rec))


if __name__ == "__main__":
    main()
