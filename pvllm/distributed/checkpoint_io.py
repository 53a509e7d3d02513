"""Checkpoint writes that a kill (SLURM preemption, ``kill -9``) or a full disk cannot tear.

- ``AtomicCheckpointIO`` (single-file ``.ckpt``, every strategy but DeepSpeed): ``torch.save`` to a
  hidden ``.partial-*`` file beside it (``pvllm.utils.atomic.partial_path``), fsync, rename. ``last.ckpt``
  is always the previous or the new complete file.
- ``AtomicDeepSpeedStrategy``: Lightning's ``DeepSpeedStrategy`` writes its sharded directory in place
  under the same name at every save; this one writes every rank's shards to ``partial_path(NAME)`` and renames it
  over ``NAME`` once all ranks are done (``pvllm.utils.atomic.swap_in``), and finishes or undoes a swap
  that a kill interrupted before loading (``recover_dir``).
- ``save_zero_checkpoint``: the same for a bare DeepSpeed engine (``pvllm.distributed.ds_cpu``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.strategies import DeepSpeedStrategy

from pvllm.utils.atomic import kill_point, partial_path, recover_dir, swap_in, write_failed


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, written through a temporary file + rename; a failed write names the path."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if "://" in str(path):  # remote storage: Lightning's own (fsspec transaction)
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = partial_path(path)
        try:
            with open(tmp, "wb") as f:
                out = _Recording(f)
                try:
                    torch.save(checkpoint, out)
                except RuntimeError as e:  # torch's writer turns the file's OSError into a RuntimeError
                    raise (out.error or e) from e
                f.flush()
                os.fsync(f.fileno())
            kill_point("lightning_checkpoint", partial=tmp)
            os.replace(tmp, path)
        except (OSError, RuntimeError) as e:
            tmp.unlink(missing_ok=True)
            raise write_failed(path, e) from e


class _Recording:
    """A binary file that remembers the OSError of a failed write (e.g. ENOSPC), for the message."""

    def __init__(self, f):
        self._f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self._f.flush()


def save_zero_checkpoint(engine, save_dir: str | os.PathLike, tag: str, client_state: dict | None = None,
                         is_zero: bool = True, barrier=None) -> None:
    """``engine.save_checkpoint`` into ``partial_path(save_dir)`` on every rank, then one rename over ``save_dir``.

    ``barrier`` synchronizes the ranks (default: ``torch.distributed.barrier``); ``is_zero`` marks the rank
    that recovers and renames (one per shared file system).
    """
    save_dir = Path(save_dir)
    barrier = barrier or torch.distributed.barrier
    tmp = partial_path(save_dir)
    if is_zero:
        recover_dir(save_dir)  # a swap a kill interrupted; a torn partial save is removed
    barrier()
    try:
        engine.save_checkpoint(str(tmp), tag=tag, client_state=client_state or {})
    except OSError as e:
        raise write_failed(tmp, e) from e
    kill_point("deepspeed_checkpoint", partial=tmp)  # every rank: a preemption hits the whole job
    barrier()  # every rank's shards are in tmp
    if is_zero:
        swap_in(tmp, save_dir)
    barrier()


class AtomicDeepSpeedStrategy(DeepSpeedStrategy):
    """``DeepSpeedStrategy`` whose checkpoint directory is replaced in one rename once every rank wrote it."""

    def save_checkpoint(self, checkpoint: dict, filepath, storage_options: Any | None = None) -> None:
        filepath = Path(self.broadcast(str(filepath)))
        tmp = partial_path(filepath)
        if self.is_global_zero:
            recover_dir(filepath)
        self.barrier()
        try:
            super().save_checkpoint(checkpoint, str(tmp), storage_options)
        except OSError as e:
            raise write_failed(filepath, e) from e
        kill_point("deepspeed_checkpoint", partial=tmp)
        self.barrier()
        if self.is_global_zero:
            swap_in(tmp, filepath)
        self.barrier()

    def load_checkpoint(self, checkpoint_path, weights_only: bool | None = None) -> dict[str, Any]:
        if self.is_global_zero:
            recover_dir(checkpoint_path)
        self.barrier()
        return super().load_checkpoint(checkpoint_path, weights_only)
