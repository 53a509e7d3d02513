"""Packed training (``data.packing=true``): samples concatenated into one row up to a token budget.

The data side only: which samples go together (``plan_packs``, from token lengths), which packs each rank
trains (``PackSampler``: the same number on every rank), the samples' token lengths without decoding a
video per sample (``sample_lengths``) and the packed row itself (``collate_packed``: input ids, labels,
the visual inputs in sample order and ``seq_lens``). What a family needs on top — per-sample position ids
(Qwen's 3-D M-RoPE), the block-diagonal attention mask — is built by ``pvllm.models.packing`` from
``seq_lens`` in the LightningModule; this module imports no model code (the family's text-length function
is handed in).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, DistributedSampler

log = logging.getLogger(__name__)
IGNORE_INDEX = -100
LOSS_REDUCTIONS = ("token", "sample")


def plan_packs(lengths: Sequence[int], budget: int, ids: Sequence[str] | None = None) -> list[list[int]]:
    """Indices grouped into packs of at most ``budget`` tokens, in the given order (the draw is already
    shuffled; keeping its order keeps a resumed run's packs the same). A sample longer than the budget is an
    error naming it: it would have to be cut, which changes its loss."""
    if budget < 1:
        raise ValueError(f"data.pack_tokens must be a positive token budget, got {budget}")
    packs: list[list[int]] = []
    cur: list[int] = []
    used = 0
    for i, n in enumerate(lengths):
        if n > budget:
            name = ids[i] if ids is not None else f"#{i}"
            raise ValueError(f"sample {name} has {n} tokens > data.pack_tokens={budget}: raise the budget "
                             "(or lower data.max_reply_tokens / data.num_frames)")
        if cur and used + n > budget:
            packs.append(cur)
            cur, used = [], 0
        cur.append(i)
        used += n
    if cur:
        packs.append(cur)
    return packs


class PackSampler(DistributedSampler):
    """Yields packs (lists of dataset indices) for one rank; every rank gets ``ceil(packs / world_size)``.

    The plan is computed identically on every rank (same lengths, same order); rank r takes packs r, r+W, ...
    When the packs do not divide evenly, the first packs are repeated, as ``DistributedSampler`` repeats its
    first samples, so every rank runs the same number of steps. A ``DistributedSampler`` subclass, so
    Lightning keeps it (it would otherwise put its own sampler over the samples under DDP).
    """

    def __init__(self, dataset: Dataset, packs: list[list[int]], num_replicas: int = 1, rank: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        if not packs:
            raise ValueError("no packs to train on (no training samples)")
        self.packs = packs
        self.num_samples = math.ceil(len(packs) / num_replicas)  # packs per rank
        self.total_size = self.num_samples * num_replicas
        self.repeated = self.total_size - len(packs)  # packs trained twice to even out the ranks
        self.skip = 0  # packs of this rank already trained (a mid-epoch resume)

    def __iter__(self) -> Iterator[list[int]]:
        padded = self.packs + [self.packs[i % len(self.packs)] for i in range(self.repeated)]
        mine = padded[self.rank: self.total_size: self.num_replicas]
        return iter(mine[self.skip:])

    def __len__(self) -> int:
        return max(self.num_samples - self.skip, 0)


class PackView(Dataset):
    """``dataset`` indexed by a pack (a list of indices): the items of that pack, in order."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, pack: list[int]) -> list[Any]:
        return [self.dataset[i] for i in pack]


def sample_lengths(dataset: Any, encode: Callable[[dict], dict], text_tokens: Callable[[dict], int],
                   memo: dict[str, tuple[int, int]] | None = None) -> list[int]:
    """Token length of every sample of a ``SampleDataset``, as ``encode`` (the collator's) would give it.

    Text-only samples are encoded (tokenization only). A video sample's length is its video's measured
    expansion plus its own text: the first sample of each video is loaded and encoded once (``memo``,
    video id -> (encoded length, text tokens), kept across epochs), and every other sample of that video
    differs from it only by its text, counted by ``text_tokens`` (the family's prompt + reply tokens with the
    video placeholder unexpanded; handed in from ``pvllm.models.packing``). Tests check this equals the
    encoded length for every family.
    """
    memo = {} if memo is None else memo
    out = []
    for i, s in enumerate(dataset.samples):
        if not dataset.video:
            out.append(len(encode(dataset[i])["input_ids"]))
            continue
        text = text_tokens(dataset.text_item(i))
        if s.video_id not in memo:
            memo[s.video_id] = (len(encode(dataset[i])["input_ids"]), text)
        full, text0 = memo[s.video_id]
        out.append(full + text - text0)
    return out


def collate_packed(encs: list[dict[str, torch.Tensor]], loss_weights: bool = False) -> dict[str, Any]:
    """One row of the encoded samples back to back (no padding): ``input_ids``, ``labels``, an all-ones
    ``attention_mask`` (the real tokens, for counting), ``seq_lens`` (each sample's length: the block
    boundaries of attention and positions), the per-token inputs (``mm_token_type_ids``) concatenated like
    the ids and the other visual inputs concatenated in sample order, so the model puts each sample's
    visual features on its own placeholder tokens. ``loss_weights``: 1/(reply tokens of its sample) on each
    supervised token (the per-sample loss reduction)."""
    ids = torch.cat([e["input_ids"] for e in encs])[None]
    labels = torch.cat([e["labels"] for e in encs])[None]
    seq_lens = torch.tensor([len(e["input_ids"]) for e in encs], dtype=torch.long)
    batch: dict[str, Any] = {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids),
                             "seq_lens": seq_lens}
    for k in dict.fromkeys(k for e in encs for k in e if k not in ("input_ids", "labels")):
        rows = [e[k] for e in encs if k in e]
        if len(rows) == len(encs) and all(r.dim() == 1 and len(r) == len(e["input_ids"])
                                          for r, e in zip(rows, encs)):
            batch[k] = torch.cat(rows)[None]  # per-token (mm_token_type_ids)
        else:
            batch[k] = torch.cat(rows)
    if loss_weights:
        batch["loss_weights"] = torch.cat([_sample_weights(e["labels"]) for e in encs])[None]
    return batch


def _sample_weights(labels: torch.Tensor) -> torch.Tensor:
    sup = labels != IGNORE_INDEX
    return sup.float() / max(int(sup.sum()), 1)


def padded_loss_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per-sample reduction on a padded batch: 1/(reply tokens of its row) on each supervised token."""
    sup = (labels != IGNORE_INDEX).float()
    return sup / sup.sum(dim=1, keepdim=True).clamp(min=1)
