"""What a run takes from the SLURM job it runs in."""

from __future__ import annotations

import os
from collections.abc import Mapping


def slurm_run_id(environ: Mapping[str, str] | None = None) -> str | None:
    """A W&B run id that a requeued job keeps: ``slurm-<job>`` or ``slurm-<array job>_<task>``; None outside SLURM.

    A requeue keeps SLURM_JOB_ID (and an array task its SLURM_ARRAY_JOB_ID/SLURM_ARRAY_TASK_ID), so with
    ``resume="allow"`` the rerun logs into the same W&B run and the curve continues where it stopped.
    An array task's own SLURM_JOB_ID differs per task, but the array id + task index is what ``squeue``
    and ``sacct`` show (``4240_2``), so that names the run.
    """
    env = os.environ if environ is None else environ
    array, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"slurm-{array}_{task}"
    job = env.get("SLURM_JOB_ID")
    return f"slurm-{job}" if job else None
