"""DDP with 2 CPU processes (gloo) through the real train.py (strategy=ddp trainer.devices=2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _records(probe_dir: Path, rank: int) -> list[dict]:
    return [json.loads(line) for line in (probe_dir / f"rank{rank}.jsonl").read_text().splitlines()]


def test_train_py_ddp_two_cpu_processes(tmp_path):
    env = dict(os.environ, PVLLM_OUTPUTS=str(tmp_path), OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    proc = subprocess.run(
        [sys.executable, "train.py", "experiment=demo", "trainer.max_steps=2", "trainer.devices=2", "strategy=ddp",
         "logger=csv", "trainer.enable_progress_bar=false",
         "+callbacks.probe._target_=pvllm.distributed.probe.TrainProbe",
         "+callbacks.probe.out_dir=${paths.output_dir}/probe"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = [p for p in (tmp_path / "train").iterdir() if not p.is_symlink()]
    r0, r1 = _records(run_dir / "probe", 0), _records(run_dir / "probe", 1)
    for recs in (r0, r1):
        assert recs[0]["event"] == "start" and recs[0]["world_size"] == 2 and recs[0]["global_step"] == 0
        assert [r["step"] for r in recs if r["event"] == "step"] == [1, 2]
        assert recs[-1]["event"] == "end" and recs[-1]["step"] == 2
    # the distributed sampler gives each rank different samples ...
    l0 = [r["loss"] for r in r0 if r["event"] == "step"]
    l1 = [r["loss"] for r in r1 if r["event"] == "step"]
    assert abs(l0[0] - l1[0]) > 1e-4
    # ... and the all-reduced gradients keep the replicas identical
    assert r0[-1]["param_checksum"] == r1[-1]["param_checksum"]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2
    assert (run_dir / "hf_model" / "config.json").is_file()  # written once, by rank 0
