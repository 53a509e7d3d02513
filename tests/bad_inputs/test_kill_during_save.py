"""Issue 25 item 4: SIGKILL while a checkpoint or the HF export is half on disk (the test hook
PVLLM_TEST_KILL_AT of pvllm/utils/atomic.py cuts the files being written to half, then kills the process).

Through the real train.py (tiny random model on the sample): the single-file Lightning ``last.ckpt`` and
``hf_model/`` + ``latest`` stay the last complete ones, and the rerun resumes from there and finishes. The
2-process DeepSpeed case: tests/test_deepspeed.py::test_kill_during_sharded_save_keeps_last_complete_checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pvllm.utils.atomic import partial_path
from tests.conftest import REPO


def _train(tmp: Path, run_dir: Path, *extra: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PVLLM_OUTPUTS=str(tmp / "outputs"), OMP_NUM_THREADS="1", WANDB_MODE="disabled",
               PYTHONPATH=str(REPO))
    env.pop("PVLLM_TEST_KILL_AT", None)
    if kill_at:
        env["PVLLM_TEST_KILL_AT"] = kill_at
    return subprocess.run(
        [sys.executable, "train.py", "experiment=demo", "logger=csv", "trainer.enable_progress_bar=false",
         f"hydra.run.dir={run_dir}", "callbacks.last_checkpoint.every_n_train_steps=2",
         "+callbacks.probe._target_=pvllm.distributed.probe.TrainProbe",
         "+callbacks.probe.out_dir=${paths.output_dir}/probe", *extra],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip


def _steps(run_dir: Path) -> list[tuple[int, list[str]]]:
    """(step, sample ids) in the order trained, over every run in ``run_dir`` (the probe appends)."""
    recs = [json.loads(line) for line in (run_dir / "probe" / "rank0.jsonl").read_text().splitlines()]
    return [(r["step"], r["sample_ids"]) for r in recs if r["event"] == "step"]


@pytest.mark.slow  # four train.py processes of the tiny model (~2 min on a loaded machine)
def test_kill_during_checkpoint_and_export_keeps_last_complete(tmp_path):
    latest = tmp_path / "outputs" / "train" / "latest"
    first, run = tmp_path / "first", tmp_path / "run"
    assert _train(tmp_path, first, "trainer.max_steps=2").returncode == 0
    assert latest.resolve() == first.resolve() and (first / "hf_model" / "config.json").is_file()

    # (a) killed while writing last.ckpt at step 4: the step-2 file is still there, whole
    p = _train(tmp_path, run, "trainer.max_steps=4", kill_at="lightning_checkpoint:2")
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    ckpt = run / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] == 2
    assert partial_path(ckpt).is_file()  # the torn write, never under the real name
    # ... nor under a name Lightning would take for a checkpoint (ckpt_path=last matches "last")
    assert [p.name for p in ckpt.parent.iterdir() if "last" in p.name or "ckpt_" in p.name] == ["last.ckpt"]
    assert not (run / "hf_model").exists() and latest.resolve() == first.resolve()

    # (c) resumed from step 2, trained to 4, killed while writing hf_model/: no half model under that name
    p = _train(tmp_path, run, "trainer.max_steps=4", f"ckpt_path={ckpt}", kill_at="hf_export")
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    steps = _steps(run)  # steps 3 and 4 (killed before their checkpoint was whole) redone once, same samples
    assert [s for s, _ in steps] == [1, 2, 3, 4, 3, 4] and steps[2:4] == steps[4:]
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] == 4
    assert not (run / "hf_model").exists() and partial_path(run / "hf_model").is_dir()
    assert latest.resolve() == first.resolve()  # generator=pvllm still reads the last complete export

    # the rerun finishes: nothing left to train, the export is written whole and `latest` moves
    p = _train(tmp_path, run, "trainer.max_steps=4", f"ckpt_path={ckpt}")
    assert p.returncode == 0, p.stderr[-3000:]
    assert _steps(run) == steps  # nothing trained again
    assert not partial_path(run / "hf_model").exists() and latest.resolve() == run.resolve()
    assert not list(run.glob(".partial-*")) and not list(run.glob(".previous-*"))
    from transformers import AutoProcessor, VideoLlavaForConditionalGeneration

    model = VideoLlavaForConditionalGeneration.from_pretrained(run / "hf_model")
    AutoProcessor.from_pretrained(run / "hf_model")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    name = next(k for k in state if k.endswith("multi_modal_projector.linear_1.weight"))
    assert torch.equal(model.state_dict()[name.removeprefix("model.")], state[name])  # the step-4 weights
