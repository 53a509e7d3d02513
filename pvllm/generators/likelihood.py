"""Length-normalized log-likelihood of candidate replies: what ``Generator.score_candidates`` returns
for the local HF models (ranking evaluation, :mod:`pvllm.metrics.ranking`).

Each sequence is ``prompt ids + reply ids + EOS`` (the layout PV-LLM trains on, ``PVLLMCollator``);
the score is the mean log-probability of the reply tokens and the EOS. Sequences are left-padded with
explicit position ids, so a score does not depend on what else is in the batch, and only the last
``max reply + 1`` logits are computed (``logits_to_keep``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


@torch.inference_mode()
def mean_reply_logprobs(
    model: Any,
    prompts: Sequence[Sequence[int]],
    replies: Sequence[Sequence[int]],
    pad_id: int,
    device: str | torch.device = "cpu",
    extra: dict[str, torch.Tensor] | None = None,
) -> list[float]:
    """Mean log p(reply token | prompt, earlier reply tokens) per (prompt, reply) pair, one forward pass.

    ``extra`` holds per-sequence tensors (e.g. ``pixel_values_videos``, first dim = number of pairs).
    """
    if len(prompts) != len(replies) or any(len(r) == 0 for r in replies):
        raise ValueError("one non-empty reply per prompt is needed")
    seqs = [list(p) + list(r) for p, r in zip(prompts, replies)]
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, n - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[i, n - len(s) :] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    m = max(len(r) for r in replies)
    out = model(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        position_ids=pos.to(device),
        logits_to_keep=m + 1,
        **{k: v.to(device) for k, v in (extra or {}).items()},
    )
    logits = out.logits[:, -(m + 1) : -1].float()  # position j predicts token j + 1
    logp = torch.log_softmax(logits, dim=-1)
    targets = ids[:, -m:].to(logp.device)
    tok = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (pairs, m)
    res = []
    for i, r in enumerate(replies):
        res.append(float(tok[i, m - len(r) :].mean()))
    return res
