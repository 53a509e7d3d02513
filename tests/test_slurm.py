"""Real SLURM jobs on the one-node local cluster (scripts/slurm/start_local_cluster.sh).

Needs the cluster: `bash scripts/slurm/start_local_cluster.sh && source /tmp/pvllm-slurm/env.sh`
(SLURM_CONF set, the sacct stand-in first on PATH). Skipped otherwise, with the reason; with
PVLLM_REQUIRE_SLURM=1 (CI) a missing cluster is a failure instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _cluster_problem() -> str | None:
    conf = os.environ.get("SLURM_CONF")
    if not conf:
        return ("SLURM_CONF is not set (start the cluster: bash scripts/slurm/start_local_cluster.sh, "
                "then source its env.sh)")
    if not Path(conf).is_file():
        return f"SLURM_CONF={conf} does not exist"
    for tool in ("sbatch", "squeue", "scontrol", "scancel", "sinfo", "sacct"):
        if shutil.which(tool) is None:
            return f"`{tool}` not on PATH"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return "sinfo timed out (slurmctld not running?)"
    states = out.stdout.split()
    if out.returncode != 0 or not any(s in ("idle", "mixed", "allocated") for s in states):
        return f"no usable node (sinfo: {out.stdout.strip() or out.stderr.strip()})"
    return None


_PROBLEM = _cluster_problem()
if _PROBLEM and os.environ.get("PVLLM_REQUIRE_SLURM") == "1":
    raise RuntimeError(f"PVLLM_REQUIRE_SLURM=1 but the SLURM cluster is not usable: {_PROBLEM}")
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(_PROBLEM is not None, reason=str(_PROBLEM))]

LAUNCHER = [
    "hydra/launcher=submitit_slurm",
    "hydra.launcher.timeout_min=20",
    "hydra.launcher.cpus_per_task=1",
]
PROBE = [
    "+callbacks.probe._target_=pvllm.distributed.probe.TrainProbe",
    "+callbacks.probe.out_dir=${paths.output_dir}/probe",
]


def _env(tmp: Path) -> dict[str, str]:
    # jobs inherit this environment (sbatch --export=ALL): outputs, no W&B, one thread per job
    return dict(os.environ, PVLLM_OUTPUTS=str(tmp), OMP_NUM_THREADS="1", WANDB_MODE="disabled")


def _probe(job_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (job_dir / "probe" / "rank0.jsonl").read_text().splitlines()]


def _wait_for(pred, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"launcher exited ({proc.returncode}) while waiting for {what}")
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _sweep_dir(tmp: Path, task: str = "train") -> Path:
    (d,) = (tmp / task / "multirun").iterdir()
    return d


def _job_log(job_dir_parent: Path) -> str:
    logs = sorted(job_dir_parent.glob(".submitit/*/*.out")) + sorted(job_dir_parent.glob(".submitit/*/*.err"))
    return "\n".join(f"== {p}\n{p.read_text()[-3000:]}" for p in logs)


def test_sacct_standin_reports_states(tmp_path):
    """The stand-in answers submitit's query from squeue: finished, failed and unknown jobs."""
    ok = subprocess.run(["sbatch", "--parsable", "-o", str(tmp_path / "ok.out"), "--wrap", "echo hi"],
                        capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    bad = subprocess.run(["sbatch", "--parsable", "-o", str(tmp_path / "bad.out"), "--wrap", "exit 3"],
                         capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip

    def states():
        out = subprocess.run(["sacct", "-o", "JobID,State,NodeList", "--parsable2",
                              "-j", ok, "-j", bad, "-j", "999999"],
                             capture_output=True, text=True, check=True).stdout.splitlines()  # fmt: skip
        rows = {line.split("|")[0]: line.split("|")[1] for line in out[1:]}
        return rows if set(rows.values()) <= {"COMPLETED", "FAILED"} and len(rows) == 2 else None

    out_lines = subprocess.run(
        ["sacct", "--parsable2", "-j", "999999"], capture_output=True, text=True
    ).stdout
    assert out_lines.splitlines() == ["JobID|State|NodeList"]  # unknown id: header only, exit 0
    assert _wait_for(states, 60, "both jobs to finish") == {ok: "COMPLETED", bad: "FAILED"}
    assert (tmp_path / "ok.out").read_text() == "hi\n"


def test_submitit_does_not_hang_on_a_hard_death(tmp_path):
    """A job that dies without a result pickle (os._exit) must raise, not hang (needs the sacct stand-in)."""
    import submitit

    ex = submitit.AutoExecutor(folder=tmp_path / "%j", cluster="slurm")
    ex.update_parameters(timeout_min=5, slurm_cpus_per_task=1)
    job = ex.submit(os._exit, 3)
    t0 = time.monotonic()
    with pytest.raises(Exception, match="(?i)failed|exit|no output"):
        job.result()
    assert time.monotonic() - t0 < 90
    assert job.state == "FAILED"


@pytest.fixture(scope="module")
def history_sweep(tmp_path_factory):
    """`train.py -m hydra/launcher=submitit_slurm experiment=demo history.k=1,5 trainer.max_steps=2`."""
    tmp = tmp_path_factory.mktemp("slurm_train")
    cmd = [sys.executable, "train.py", "-m", *LAUNCHER, "experiment=demo", "history.k=1,5", "trainer.max_steps=2",
           "logger=csv", "trainer.enable_progress_bar=false", *PROBE]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(tmp), capture_output=True, text=True, timeout=900)
    sweep = _sweep_dir(tmp) if (tmp / "train" / "multirun").is_dir() else tmp
    assert proc.returncode == 0, proc.stderr[-3000:] + _job_log(sweep)
    return sweep


def test_train_multirun_runs_two_slurm_jobs(history_sweep):
    jobs = sorted(p for p in history_sweep.iterdir() if p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    ks, job_ids = [], set()
    for job in jobs:
        overrides = (job / ".hydra" / "overrides.yaml").read_text()
        ks.append(1 if "history.k=1" in overrides else 5 if "history.k=5" in overrides else None)
        start, *_, end = _probe(job)
        # it ran as a SLURM job, and Lightning knew it (that is what enables auto-requeue)
        assert start["slurm_job_id"] and start["cluster_environment"] == "SLURMEnvironment"
        job_ids.add(start["slurm_job_id"])
        assert end["event"] == "end" and end["step"] == 2
        ckpt = torch.load(job / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        assert ckpt["global_step"] == 2
        assert (job / "hf_model" / "config.json").is_file()
    assert ks == [1, 5]
    assert len(job_ids) == 2
    # submitit's logs for both array tasks are in the sweep directory
    assert len(list(history_sweep.glob(".submitit/*/*_result.pkl"))) == 2


@pytest.mark.slow  # ~75 s: two trainings side by side, one of them requeued and restarted
def test_requeue_resumes_from_checkpoint_with_same_final_loss(tmp_path):
    """SIGUSR1 mid-training -> Lightning saves hpc_ckpt + `scontrol requeue` -> rerun resumes at that step."""
    common = [sys.executable, "train.py", "-m", *LAUNCHER, "experiment=demo", "trainer.max_steps=6", "logger=csv",
              "trainer.enable_progress_bar=false", *PROBE]  # fmt: skip
    pause = 3
    interrupted = subprocess.Popen([*common, f"+callbacks.probe.pause_at_step={pause}"], cwd=ROOT,
                                   env=_env(tmp_path / "a"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)  # fmt: skip
    reference = subprocess.Popen(common, cwd=ROOT, env=_env(tmp_path / "b"), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        job_a = _wait_for(lambda: next((tmp_path / "a").glob("train/multirun/*/0"), None), 120, "sweep dir",
                          interrupted)  # fmt: skip

        def paused():
            f = job_a / "probe" / "rank0.jsonl"
            recs = _probe(job_a) if f.is_file() else []
            return recs if any(r["event"] == "paused" for r in recs) else None

        recs = _wait_for(paused, 300, f"the job to reach step {pause}", interrupted)
        job_id = recs[0]["slurm_job_id"]
        # like a preemption notice: USR1 to the job's steps (the python process under srun)
        subprocess.run(["scancel", "--signal=USR1", job_id], check=True)
        out_a, err_a = interrupted.communicate(timeout=600)
        out_b, err_b = reference.communicate(timeout=600)
    finally:
        for p in (interrupted, reference):
            if p.poll() is None:
                p.kill()
    assert interrupted.returncode == 0, err_a[-3000:] + _job_log(job_a.parent)
    assert reference.returncode == 0, err_b[-3000:]

    a = _probe(job_a)
    b = _probe(next((tmp_path / "b").glob("train/multirun/*/0")))
    first = [r for r in a if r["restart"] == 0]
    second = [r for r in a if r["restart"] == 1]
    assert [r["step"] for r in first if r["event"] == "step"] == [1, 2, 3]
    start2 = second[0]
    assert start2["event"] == "start"
    assert start2["global_step"] == pause > 0  # resumed, not restarted from 0
    assert start2["ckpt_path"] and "hpc_ckpt_1.ckpt" in start2["ckpt_path"]
    assert (job_a / "hpc_ckpt_1.ckpt").is_file()
    assert [r["step"] for r in second if r["event"] == "step"] == [4, 5, 6]

    loss_a = {r["step"]: r["loss"] for r in a if r["event"] == "step"}
    loss_b = {r["step"]: r["loss"] for r in b if r["event"] == "step"}
    assert sorted(loss_b) == [1, 2, 3, 4, 5, 6]
    for step in range(1, 7):  # same data, same optimizer/scheduler state after the resume
        assert loss_a[step] == pytest.approx(loss_b[step], abs=1e-6), step
    assert a[-1]["event"] == b[-1]["event"] == "end"
    assert a[-1]["param_checksum"] == pytest.approx(b[-1]["param_checksum"], rel=1e-9)


def test_sharded_evaluation_on_slurm_then_merge(history_sweep, tmp_path):
    """`evaluate.py -m ... shard=0,1 num_shards=2 stage=generate` as 2 SLURM jobs, then stage=score merges."""
    model = history_sweep / "0" / "hf_model"
    args = [f"generator.pretrained={model}", "generator.greedy=true", "generator.sampling.max_new_tokens=4",
            "~rater", "logger=csv", "num_shards=2"]  # fmt: skip
    env = _env(tmp_path)
    gen = subprocess.run([sys.executable, "evaluate.py", "-m", *LAUNCHER, "shard=0,1", "stage=generate", *args],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert gen.returncode == 0, gen.stderr[-3000:] + _job_log(tmp_path / "eval")
    (run_dir,) = [p for p in (tmp_path / "eval").iterdir() if p.is_dir() and not p.name.startswith(".")]
    shards = [[json.loads(x)["sample_id"]
               for x in (run_dir / f"predictions.shard{s}-of-2.jsonl").read_text().splitlines()]
              for s in (0, 1)]  # fmt: skip
    assert len(shards[0]) == len(shards[1]) == 2  # 4 validation users, 1 sample each
    assert not set(shards[0]) & set(shards[1])
    assert len(list((tmp_path / "eval").glob(".submitit/*/*_result.pkl"))) == 2  # two SLURM jobs

    score = subprocess.run([sys.executable, "evaluate.py", "stage=score", *args], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert score.returncode == 0, score.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["n"] == 4 and summary["n_generation_failed"] == 0

    # the merge refuses a sample id that appears twice (e.g. a shard rerun with other settings)
    from pvllm.evaluation import merge_shards

    rows = [{"sample_id": s} for s in shards[0] + shards[1]]
    dup = run_dir / "predictions.shard1-of-2.jsonl"
    dup.write_text(
        dup.read_text() + (run_dir / "predictions.shard0-of-2.jsonl").read_text().splitlines()[0] + "\n"
    )
    with pytest.raises(Exception, match="(?i)once|duplicate|twice"):
        merge_shards(run_dir, rows, 2)


def test_multinode_sbatch_script_runs_ddp_over_slurm_tasks(tmp_path):
    """scripts/slurm/train_multinode.sbatch with 2 tasks on the CPU node: 2 DDP ranks wired by SLURM.

    The node has no GPUs, so the copy submitted here drops the `--gpus-per-node` line; everything
    else (srun, the overrides the script adds, the run directory) is the shipped script.
    """
    script = (ROOT / "scripts" / "slurm" / "train_multinode.sbatch").read_text()
    assert "#SBATCH --gpus-per-node=8\n" in script
    cpu_script = tmp_path / "cpu.sbatch"
    cpu_script.write_text(script.replace("#SBATCH --gpus-per-node=8\n", ""))
    run_dir = tmp_path / "run"
    env = dict(_env(tmp_path), PVLLM_PYTHON=sys.executable, PVLLM_RUN_DIR=str(run_dir))
    job = subprocess.run(
        ["sbatch", "--parsable", "--ntasks-per-node=2", "--cpus-per-task=1", "--time=15",
         f"--output={tmp_path}/slurm-%j.out", str(cpu_script), "experiment=demo", "trainer.max_steps=2",
         "strategy=ddp", "logger=csv", "trainer.enable_progress_bar=false", *PROBE],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip

    def state():
        out = subprocess.run(
            ["sacct", "--parsable2", "-j", job], capture_output=True, text=True
        ).stdout.splitlines()
        st = out[1].split("|")[1] if len(out) > 1 else ""
        return (
            st
            if st in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")
            else None
        )

    final = _wait_for(state, 600, f"job {job} to finish")
    log = "\n".join(p.read_text() for p in tmp_path.glob("slurm-*.out"))
    assert final == "COMPLETED", log[-3000:]
    assert "1 node(s) x 2 task(s)" in log
    ranks = [
        [json.loads(x) for x in (run_dir / "probe" / f"rank{r}.jsonl").read_text().splitlines()]
        for r in (0, 1)
    ]
    for recs in ranks:
        assert recs[0]["world_size"] == 2 and recs[0]["cluster_environment"] == "SLURMEnvironment"
        assert recs[0]["slurm_job_id"] == job
        assert recs[-1]["event"] == "end" and recs[-1]["step"] == 2
    assert ranks[0][-1]["param_checksum"] == ranks[1][-1]["param_checksum"]  # DDP replicas in sync
    assert (run_dir / "hf_model" / "config.json").is_file()
