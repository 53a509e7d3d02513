"""The 8-GPU path under faults, with 2 CPU processes (gloo) through the real train.py (issue 16, items 7, 8).

- item 7: an unreadable video on one rank neither desyncs the ranks nor is replaced by another sample;
  the skips are counted over dataloader workers and ranks (log and logged metric).
- item 8: a run killed after a mid-epoch checkpoint and resumed sees on every rank exactly the samples
  of the uninterrupted run (the DistributedSampler is kept), without Lightning's "not resumable" warning.

Expected samples are computed here from the draw: rank r trains draw[(step-1)*2 + r] at each step.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SAMPLE

ROOT = Path(__file__).resolve().parents[1]
STEPS = 4  # within epoch 0 (7 batches per rank on the sample): no validation, few seconds per step


def _train(tmp: Path, run_dir: Path, root: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PVLLM_OUTPUTS=str(tmp / "outputs"), OMP_NUM_THREADS="1", WANDB_MODE="disabled",
               PYTHONFAULTHANDLER="1")  # a hang is ended with SIGABRT: every thread's stack of both ranks
    args = [sys.executable, "train.py", "experiment=demo", f"trainer.max_steps={STEPS}", "trainer.devices=2",
            "strategy=ddp", "logger=csv", "trainer.enable_progress_bar=false", f"data.root={root}",
            "data.on_bad_video=skip", "data.num_workers=2", f"hydra.run.dir={run_dir}",
            "callbacks.last_checkpoint.every_n_train_steps=2",
            "+callbacks.probe._target_=pvllm.distributed.probe.TrainProbe",
            "+callbacks.probe.out_dir=${paths.output_dir}/probe", *extra]  # fmt: skip
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=300)  # ~30 s when it works
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGABRT)
        out, err = proc.communicate(timeout=60)
        pytest.fail(f"train.py (2 DDP ranks) hung for 300 s; the stacks at SIGABRT:\n{err[-8000:]}")
    if check:
        assert proc.returncode == 0, err[-3000:]
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _steps(run_dir: Path, rank: int) -> dict[int, dict]:
    """step -> the probe's record (the last one written for that step: a resumed run overwrites)."""
    out = {}
    for line in (run_dir / "probe" / f"rank{rank}.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["event"] == "step":
            out[rec["step"]] = rec
    return out


@pytest.fixture(scope="module")
def bad_video_data(tmp_path_factory):
    """A copy of the sample whose video of draw item 3 (rank 1, step 2) is corrupt: (root, draw, bad id)."""
    from pvllm.data.dataset import load_pervidcom
    from pvllm.data.histories import draw_training_samples

    tmp = tmp_path_factory.mktemp("ddp_faults")
    root = tmp / "data"
    shutil.copytree(SAMPLE, root)
    ds = load_pervidcom(root)
    draw = draw_training_samples(ds, "train", epoch=0, seed=0)
    bad = draw[3].video_id
    ds.video_path(bad).write_bytes(b"not a video")
    return tmp, root, draw, bad


@pytest.fixture(scope="module")
def uninterrupted(bad_video_data):
    tmp, root, _, _ = bad_video_data
    run = tmp / "full"
    proc = _train(tmp, run, root)
    return run, proc


def test_item7_unreadable_video_keeps_ranks_in_step_and_is_counted(bad_video_data, uninterrupted):
    _, _, draw, bad = bad_video_data
    run, proc = uninterrupted
    seen = {r: _steps(run, r) for r in (0, 1)}
    n_bad = 0
    for r in (0, 1):
        assert sorted(seen[r]) == list(range(1, STEPS + 1))  # every rank made every step
        for step, rec in seen[r].items():
            sample = draw[(step - 1) * 2 + r]
            assert rec["sample_ids"] == [sample.sample_id]  # never another sample in its place
            is_bad = sample.video_id == bad
            n_bad += is_bad
            assert rec["supervised"] == (0 if is_bad else 1)
            if is_bad:
                assert rec["loss"] == 0.0  # zero loss weight, the step still all-reduces
    assert n_bad >= 1
    ends = [json.loads(line) for r in (0, 1) for line in (run / "probe" / f"rank{r}.jsonl").read_text().splitlines()
            if json.loads(line)["event"] == "end"]
    assert len(ends) == 2 and ends[0]["param_checksum"] == ends[1]["param_checksum"]  # replicas identical
    # counted in the main process from the batches (num_workers=2), summed over the 2 ranks
    assert f"skipped_videos={n_bad}" in proc.stderr + proc.stdout
    assert f"{bad}" in proc.stderr + proc.stdout
    (metrics,) = (run / "csv").glob("version_*/metrics.csv")
    logged = [float(row["data/skipped_videos"]) for row in csv.DictReader(metrics.open())
              if row.get("data/skipped_videos")]
    assert logged == [float(n_bad)]


def test_item8_ddp_kill_and_resume_sees_the_uninterrupted_samples_on_every_rank(bad_video_data, uninterrupted):
    tmp, root, draw, _ = bad_video_data
    full_run, _ = uninterrupted
    run = tmp / "killed"
    killed = _train(tmp, run, root, "+callbacks.kill._target_=tests.helpers.KillAtStep", "+callbacks.kill.step=3",
                    check=False)
    assert killed.returncode == 3, killed.stderr[-3000:]  # died at step 3, after the checkpoint of step 2
    resumed = _train(tmp, run, root, f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}")
    assert "not resumable" not in resumed.stderr + resumed.stdout
    full = {r: _steps(full_run, r) for r in (0, 1)}
    for r in (0, 1):
        again = _steps(run, r)
        assert sorted(again) == list(range(1, STEPS + 1))
        for step in range(1, STEPS + 1):
            assert again[step]["sample_ids"] == full[r][step]["sample_ids"]
            assert again[step]["sample_ids"] == [draw[(step - 1) * 2 + r].sample_id]
            assert again[step]["loss"] == pytest.approx(full[r][step]["loss"], abs=1e-5)
    # the resumed part (steps 3, 4) was written by the second start, from global step 2
    starts = [json.loads(line) for line in (run / "probe" / "rank1.jsonl").read_text().splitlines()
              if json.loads(line)["event"] == "start"]
    assert [s["global_step"] for s in starts] == [0, 2]


def test_ddp_validation_counts_each_sample_once(tmp_path):
    """Issue 25 item 6: 3 validation samples on 2 ranks. Lightning's default sampler pads rank 1 with a
    repeat of sample 0; here each sample is validated exactly once per validation, and the logged val/loss is
    the mean of the 3 per-sample losses the ranks computed (batch size 1)."""
    from pvllm.data.dataset import load_pervidcom
    from pvllm.data.histories import build_eval_histories

    root = tmp_path / "data"
    shutil.copytree(SAMPLE, root)
    ds = load_pervidcom(root)
    val = build_eval_histories(ds, "val", k=5, seed=0)
    drop = val[-1].video_id  # leave 3 of the 4 validation samples: an odd number for 2 ranks
    (tmp_path / "exclude.jsonl").write_text(json.dumps({"video_id": drop, "file": ds.videos[drop].file,
                                                        "error": "test"}) + "\n")
    want = sorted(s.sample_id for s in val if s.video_id != drop)
    assert len(want) == 3
    run = tmp_path / "run"
    _train(tmp_path, run, root, f"data.exclude_videos={tmp_path / 'exclude.jsonl'}", "+trainer.val_check_interval=2")
    recs = [json.loads(line) for r in (0, 1) for line in (run / "probe" / f"rank{r}.jsonl").read_text().splitlines()]
    vals = [r for r in recs if r["event"] == "val"]
    (metrics,) = (run / "csv").glob("version_*/metrics.csv")
    logged = [float(row["val/loss"]) for row in csv.DictReader(metrics.open()) if row.get("val/loss")]
    assert len(logged) == 2  # validations after steps 2 and 4
    for step, loss in zip((2, 4), logged):
        at = [r for r in vals if r["step"] == step]
        assert sorted(i for r in at for i in r["sample_ids"]) == want  # each once, none repeated
        assert {r["rank"] for r in at} == {0, 1} and all(r["supervised"] == 1 for r in at)
        assert loss == pytest.approx(sum(r["loss"] for r in at) / 3, rel=1e-5)  # rank 0 has 2, rank 1 has 1
