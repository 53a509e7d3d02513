"""What train.py logs: train/loss over the accumulation window and all ranks, perplexity, skips per split,
and the W&B run id of a SLURM job that a requeue keeps (issue 21 item 4)."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from pvllm.utils.slurm import slurm_run_id
from tests.test_ddp import _records
from tests.test_wandb import read_offline_run

ROOT = Path(__file__).resolve().parents[1]


def _train(tmp: Path, *extra: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PVLLM_OUTPUTS=str(tmp), OMP_NUM_THREADS="1", **(env_extra or {}))
    proc = subprocess.run([sys.executable, "train.py", "experiment=demo", "trainer.enable_progress_bar=false",
                           *extra], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_train_loss_is_the_mean_over_the_window_and_ranks(tmp_path):
    """2 DDP processes, accumulation 2; the model loaded in bf16 (fp32 masters made before DDP wraps it)."""
    run = tmp_path / "run"
    _train(tmp_path, "trainer.max_steps=2", "trainer.devices=2", "strategy=ddp", "logger=csv",
           "model.dtype=bfloat16", "trainer.precision=bf16-mixed",
           "trainer.accumulate_grad_batches=2", f"hydra.run.dir={run}",
           "+callbacks.probe._target_=pvllm.distributed.probe.TrainProbe",
           "+callbacks.probe.out_dir=${paths.output_dir}/probe", env_extra={"WANDB_MODE": "disabled"})
    # the probe sees Lightning's backward loss, divided by accumulate_grad_batches (2): undo that
    micro = {r: [dict(x, loss=2 * x["loss"]) for x in _records(run / "probe", r) if x["event"] == "micro"]
             for r in (0, 1)}
    assert [len(m) for m in micro.values()] == [4, 4]  # 2 optimizer steps × 2 micro-batches per rank
    (metrics,) = (run / "csv").glob("version_*/metrics.csv")
    rows = [row for row in csv.DictReader(metrics.open()) if row.get("train/loss")]
    assert [int(row["step"]) for row in rows] == [0, 1]  # Lightning logs a step's metrics at the step it began
    for i, row in enumerate(rows):
        window = [x for r in (0, 1) for x in micro[r][2 * i: 2 * i + 2]]
        weight = sum(x["supervised"] for x in window)
        want = sum(x["loss"] * x["supervised"] for x in window) / weight
        assert float(row["train/loss"]) == pytest.approx(want, rel=1e-5)
        assert abs(float(row["train/loss"]) - micro[0][2 * i + 1]["loss"]) > 1e-4  # not rank 0's last micro-batch
        assert float(row["train/perplexity"]) == pytest.approx(math.exp(want), rel=1e-5)
    ends = [x for r in (0, 1) for x in _records(run / "probe", r) if x["event"] == "end"]
    assert ends[0]["param_checksum"] == ends[1]["param_checksum"]  # the replicas stayed identical


def test_slurm_run_id_names_the_job_or_the_array_task():
    assert slurm_run_id({}) is None
    assert slurm_run_id({"SLURM_JOB_ID": "4242"}) == "slurm-4242"
    both = {"SLURM_JOB_ID": "4245", "SLURM_ARRAY_JOB_ID": "4240", "SLURM_ARRAY_TASK_ID": "3"}
    assert slurm_run_id(both) == "slurm-4240_3"


def test_requeued_slurm_job_continues_its_wandb_run(tmp_path):
    """A requeue: same job id, same run directory, SLURM_RESTART_COUNT=1, resumed from last.ckpt."""
    run = tmp_path / "slurm-4240_3"
    job = {"SLURM_JOB_ID": "4245", "SLURM_ARRAY_JOB_ID": "4240", "SLURM_ARRAY_TASK_ID": "3", "WANDB_MODE": "offline"}
    common = ("callbacks.last_checkpoint.every_n_train_steps=1", f"hydra.run.dir={run}")
    _train(tmp_path, "trainer.max_steps=1", *common,
           "+callbacks.gpu_stats._target_=pvllm.distributed.gpu_checks.GpuStats",
           f"+callbacks.gpu_stats.out={run}/gpu_stats.json", env_extra=job)
    stats = json.loads((run / "gpu_stats.json").read_text())  # the GPU check's callback, on CPU (no memory/MFU)
    assert stats["steps"] == 1 and stats["tokens_per_s"] > 0 and math.isfinite(stats["loss"])
    _train(tmp_path, "trainer.max_steps=2", *common, f"ckpt_path={run}/checkpoints/last.ckpt",
           env_extra=dict(job, SLURM_RESTART_COUNT="1"))
    offline = sorted((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 2  # one record log per attempt, both under the run directory
    from wandb.proto import wandb_internal_pb2 as pb

    from tests.test_wandb import _records as records

    ids, steps = [], []
    for d in offline:
        (f,) = d.glob("run-*.wandb")
        ids += [rec.run.run_id for rec in records(f) if rec.WhichOneof("record_type") == "run"]
        r = read_offline_run(d)
        steps += [row["trainer/global_step"] for row in r["history"] if "train/loss" in row]
    assert set(ids) == {"slurm-4240_3"} and pb  # `wandb sync` of both appends to one run
    assert steps == [0, 1]  # the second attempt's curve continues after the first's


def test_skipped_videos_are_counted_per_split():
    from pvllm.data.datamodule import PVLLMDataModule

    dm = PVLLMDataModule.__new__(PVLLMDataModule)
    dm.skipped, dm.skipped_by_split = Counter(), {}
    for validating in (False, True, True):
        dm.trainer = SimpleNamespace(validating=validating, sanity_checking=False)
        dm.on_before_batch_transfer({"skipped_videos": ["a.mp4"]}, 0)
    assert dm.skipped == Counter({"a.mp4": 3})
    assert {k: sum(v.values()) for k, v in dm.skipped_by_split.items()} == {"train": 1, "val": 2}


def test_val_perplexity_is_exp_of_the_epoch_mean_loss(tiny_model_dir):
    import lightning as L
    import torch

    from pvllm.distributed.ds_cpu import make_batches
    from pvllm.models.builder import build_pvllm
    from pvllm.models.module import PVLLMModule

    built = build_pvllm(pretrained=str(tiny_model_dir))
    batches = make_batches(built.processor, 3, seed=1)
    module = PVLLMModule(built.model, optim={})
    module.eval()
    with torch.no_grad():
        want = sum(float(module(b)) for b in batches) / 3  # one supervised sample each
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (out,) = trainer.validate(module, dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    assert out["val/loss"] == pytest.approx(want, rel=1e-5)
    assert out["val/perplexity"] == pytest.approx(math.exp(want), rel=1e-5)
