"""Which samples, in which order: training samples re-drawn each epoch and a loader that resumes mid-epoch."""

from __future__ import annotations

import itertools
import logging
from typing import Any

from torch.utils.data import DataLoader, Dataset

from pvllm.data.packing import PackSampler

log = logging.getLogger(__name__)


class _SkipFirst:
    """The indices of ``sampler`` without its first ``n`` (a sampler wrapper: no video is loaded for them)."""

    def __init__(self, sampler: Any, n: int):
        self.sampler, self.n = sampler, n

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.n, None)

    def __len__(self) -> int:
        return max(len(self.sampler) - self.n, 0)


class ResumableLoader(DataLoader):
    """A DataLoader that continues mid-epoch after a resume: it skips the batches that the restored fit
    loop reports as completed in this epoch (0 at a normal epoch start), so a resumed run sees exactly
    the batches an uninterrupted one would. The skip wraps whatever sampler the loader has (under DDP
    Lightning's DistributedSampler: each rank keeps its own shard), never replaces it.

    ``state_dict``/``load_state_dict`` make Lightning treat it as resumable (no "dataloader is not
    resumable" warning); the position itself comes from the restored fit loop's batch progress.
    """

    def __init__(self, *args, completed_batches=lambda: 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.completed_batches = completed_batches

    def __iter__(self):
        skip = self.completed_batches()
        if not skip:
            yield from super().__iter__()
            return
        if isinstance(self.sampler, PackSampler):  # packed: one pack per batch
            log.info("resuming mid-epoch: skipping the %d pack(s) already trained in this epoch", skip)
            self.sampler.skip = skip
            try:
                yield from super().__iter__()
            finally:
                self.sampler.skip = 0
            return
        sampler = self.batch_sampler.sampler
        log.info("resuming mid-epoch: skipping the %d batch(es) already trained in this epoch", skip)
        self.batch_sampler.sampler = _SkipFirst(sampler, skip * self.batch_sampler.batch_size)
        try:
            yield from super().__iter__()
        finally:
            self.batch_sampler.sampler = sampler

    def state_dict(self) -> dict[str, int]:
        return {"completed_batches": int(self.completed_batches())}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Nothing to restore: the fit loop's batch progress (in the same checkpoint) is the position."""


class EpochSamples(Dataset):
    """Training samples re-drawn from (seed, epoch) each epoch (paper §3.2)."""

    def __init__(self, make: Any):
        self.make, self.epoch, self.inner = make, -1, None

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.inner = epoch, self.make(epoch)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int):
        return self.inner[i]
