"""Length-normalized log-likelihood of candidate replies: what ``Generator.score_candidates`` returns
for the local HF models (ranking evaluation, :mod:`pvllm.metrics.ranking`).

Each sequence is ``prompt ids + reply ids + EOS`` (the layout PV-LLM trains on, ``PVLLMCollator``);
the score is the mean log-probability of the reply tokens and the EOS. Sequences are left-padded with
explicit position ids, so a score does not depend on what else is in the batch, and only the last
``max reply + 1`` logits are computed (``logits_to_keep``). The generators rank through
:func:`shared_prompt_reply_logprobs`: the prompt once per sample, then only the candidates.
"""

from __future__ import annotations

import copy
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


@torch.inference_mode()
def shared_prompt_reply_logprobs(
    model: Any,
    prompt: Sequence[int],
    replies: Sequence[Sequence[int]],
    pad_id: int,
    device: str | torch.device = "cpu",
    extra: dict[str, torch.Tensor] | None = None,
    batch_size: int = 20,
) -> list[float]:
    """:func:`mean_reply_logprobs` for many replies to ONE prompt (ranking: N candidates per sample).

    The prompt (history, video tokens; ``extra`` = its visual inputs, first dim 1) runs once; its key/value
    cache is repeated for ``batch_size`` replies at a time, which then run alone: right-padded, positions
    continuing the prompt's. The vision encoder and the long prompt are computed once per sample instead of
    once per candidate. Same values as one full sequence per reply (to float precision: tests/test_ranking).
    """
    if not replies or any(len(r) == 0 for r in replies):
        raise ValueError("non-empty replies are needed")
    ids = torch.tensor([list(prompt)], dtype=torch.long, device=device)
    out = model(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        use_cache=True,
        logits_to_keep=1,
        **{k: v.to(device) for k, v in (extra or {}).items()},
    )
    first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)  # p(first reply token | prompt)
    prefix, n = out.cache, ids.shape[1]
    res: list[float] = []
    for i in range(0, len(replies), batch_size):
        part = replies[i : i + batch_size]
        m = max(len(r) for r in part) - 1  # the last token of a reply is predicted, never fed
        total = [float(first[r[0]]) for r in part]
        if m > 0:
            feed = torch.full((len(part), m), pad_id, dtype=torch.long)
            mask = torch.zeros((len(part), n + m), dtype=torch.long)
            mask[:, :n] = 1
            for j, r in enumerate(part):
                feed[j, : len(r) - 1] = torch.tensor(r[:-1], dtype=torch.long)
                mask[j, n : n + len(r) - 1] = 1
            cache = copy.deepcopy(prefix)
            cache.batch_repeat_interleave(len(part))
            logp = torch.log_softmax(
                model(
                    input_ids=feed.to(device),
                    attention_mask=mask.to(device),
                    position_ids=(n + torch.arange(m)).expand(len(part), m).to(device),
                    cache=cache,
                    use_cache=True,
                ).logits.float(),
                dim=-1,
            )
            for j, r in enumerate(part):
                t = torch.tensor(r[1:], dtype=torch.long, device=logp.device)
                total[j] += float(logp[j, torch.arange(len(t), device=logp.device), t].sum())
        res += [s / len(r) for s, r in zip(total, part)]
    return res
