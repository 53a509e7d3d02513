"""Log-likelihood of candidate replies: what ``Generator.candidate_logprobs`` / ``score_candidates``
return for the local HF models (ranking evaluation, :mod:`pvllm.metrics.ranking`).

Each scored sequence is ``prompt ids + reply ids`` (the reply ends with its end-of-turn tokens: the layout
PV-LLM trains on, ``PVLLMCollator``); a reply's log-likelihood is the sum of the log-probabilities of its
tokens. :func:`mean_reply_logprobs` is the reference: one full left-padded sequence per (prompt, reply).

:func:`score_prompt_replies` is what the generators rank with (any family of pvllm.models.families):
1. the prompt of each sample, with its video, runs once through the whole model (``root``); its key/value
   cache and its next position are kept (Qwen's 3-D M-RoPE: the text after the prompt continues at the
   prompt's largest position + 1 on all three axes, as ``get_rope_index`` places text after a video);
2. the continuations (several prompt ``branches`` per root, e.g. with and without the history for PMI,
   and after each branch every candidate) of several samples are packed into ONE row, without padding:
   every candidate token attends to its sample's root, its branch and its own earlier tokens, through an
   explicit 4-D mask over the concatenated root caches, with explicit positions;
3. the language-model head runs only on the positions whose prediction is read (each branch's last token,
   each candidate token but its last), in chunks.
Same values as one full sequence per candidate, to float rounding (tests/test_ranking_scale.py: every family).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
    """Mean log p(reply token | prompt, earlier reply tokens) per (prompt, reply) pair, one forward pass of
    full left-padded sequences (the reference the fast path is checked against).

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


@dataclass
class PromptReplies:
    """One sample to score: the model inputs of its prompt's shared ``root`` (``input_ids`` of shape (1, R)
    plus the visual inputs the family's processor gave), the text ``branches`` that continue the root into
    each prompt (``[]``: the root is the whole prompt) and the candidate ``replies`` (token ids, each
    scored after every branch)."""

    root: dict[str, torch.Tensor]
    replies: Sequence[Sequence[int]]
    branches: Sequence[Sequence[int]] = ((),)
    sums: torch.Tensor | None = field(default=None, repr=False)  # (branches, replies) float64, filled in


def _decoder_and_head(model: Any) -> tuple[Any, Any]:
    """The decoder stack (hidden states after its final norm) and the output head of an HF causal LM or a
    video LLM of pvllm.models.families."""
    from pvllm.models.families import family_of, unwrap

    base = unwrap(model)
    head = base.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(base).__name__}: no output embeddings (lm_head); cannot score replies")
    try:
        path = family_of(base).language_model[0]
    except ValueError:  # a plain causal LM (text-only generator): LlamaForCausalLM.model, ...
        return base.get_decoder(), head
    mod = base
    for part in path.split("."):
        mod = getattr(mod, part)
    return mod, head


def _run_root(model: Any, root: dict[str, torch.Tensor], device: Any, want_logits: bool
              ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], int, torch.Tensor | None]:
    """The prompt (and its video) through the whole model once: per-layer (keys, values), the position of
    the next token, and log p(next token | prompt) when ``want_logits``."""
    from pvllm.models.families import unwrap

    inner = getattr(unwrap(model), "model", None)
    mrope = inner is not None and hasattr(inner, "rope_deltas")
    if mrope:
        inner.rope_deltas = None  # Qwen keeps the last prompt's offset on the module: never reuse a stale one
    ids = root["input_ids"].to(device)
    out = model(**{k: v.to(device) for k, v in root.items()}, attention_mask=torch.ones_like(ids),
                use_cache=True, logits_to_keep=1)
    cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
    layers = [(layer.keys, layer.values) for layer in cache.layers]
    nxt = ids.shape[1]
    if mrope:
        if inner.rope_deltas is None:
            raise RuntimeError(f"{type(inner).__name__}: the prompt's M-RoPE offset was not computed (no "
                               "mm_token_type_ids / grid sizes from the processor?); cannot place the replies")
        nxt += int(inner.rope_deltas.reshape(-1)[0])
    first = torch.log_softmax(out.logits[0, -1].float(), -1) if want_logits else None
    return layers, nxt, first


def _pack(items: Sequence[PromptReplies], roots: Sequence[tuple[Any, int, Any]], device: Any, dtype: Any):
    """One packed row for ``items``: token ids, positions, the 4-D additive mask over (their concatenated
    roots + the row), the reads of branch ends ``(row, item, branch)`` and of reply tokens
    ``(row, target token, flat (item, branch, reply) index)``."""
    ids: list[int] = []
    pos: list[int] = []
    group: list[int] = []  # (item, branch) instance of each row token
    reply: list[int] = []  # -1: a branch token; else the reply instance (its own tokens see each other)
    index: list[int] = []  # index within its branch / reply (causal order)
    root_of: list[int] = []  # the item of each row token (which root it sees)
    ends: list[tuple[int, int, int]] = []
    reads: list[tuple[int, int, int]] = []
    g = r_id = flat = 0
    for it_i, (it, (_, nxt, _)) in enumerate(zip(items, roots)):
        for b_i, br in enumerate(it.branches):
            for j, t in enumerate(br):
                ids.append(int(t))
                pos.append(nxt + j)
                group.append(g)
                reply.append(-1)
                index.append(j)
                root_of.append(it_i)
            if br:
                ends.append((len(ids) - 1, it_i, b_i))
            start = nxt + len(br)
            for rep in it.replies:
                for j, t in enumerate(rep[:-1]):  # the last token is predicted, never fed
                    reads.append((len(ids), int(rep[j + 1]), flat))
                    ids.append(int(t))
                    pos.append(start + j)
                    group.append(g)
                    reply.append(r_id)
                    index.append(j)
                    root_of.append(it_i)
                r_id += 1
                flat += 1
            g += 1
    lens = torch.tensor([root[0][0][0].shape[2] for root in roots])
    key_item = torch.repeat_interleave(torch.arange(len(items)), lens)
    sees_root = torch.tensor(root_of, dtype=torch.long)[:, None] == key_item[None, :]
    gq, rq, iq = torch.tensor(group), torch.tensor(reply), torch.tensor(index)
    same = gq[:, None] == gq[None, :]
    causal = iq[None, :] <= iq[:, None]
    key_branch, q_branch = rq[None, :] == -1, rq[:, None] == -1
    # a branch token sees its branch's earlier tokens; a reply token its whole branch and its own earlier tokens
    sees_row = same & ((key_branch & (~q_branch | causal)) | ((rq[None, :] == rq[:, None]) & ~q_branch & causal))
    allowed = torch.cat([sees_root, sees_row], dim=1)
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    return (torch.tensor([ids], device=device), torch.tensor([pos], device=device), mask[None, None].to(device),
            ends, reads)


@torch.inference_mode()
def score_prompt_replies(
    model: Any,
    items: Sequence[PromptReplies],
    device: str | torch.device = "cpu",
    max_tokens: int = 2048,
    head_chunk: int = 256,
    progress: Callable[[int], None] | None = None,
) -> list[torch.Tensor]:
    """Summed log-probability of every reply after every branch of every item: one (branches, replies)
    float64 tensor per item (also stored in ``item.sums``).

    Items are packed greedily, in order, into forward passes of at most ``max_tokens`` (their cached prompts
    plus the packed continuations; an item larger than that runs alone). ``progress(n)`` is called after each
    pass with the number of items it finished.
    """
    for it in items:
        if not it.replies or any(len(r) == 0 for r in it.replies):
            raise ValueError("non-empty replies are needed")
        if not it.branches:
            raise ValueError("at least one branch (possibly empty) is needed")
    decoder, head = _decoder_and_head(model)
    dtype = head.weight.dtype
    # identical branches (PMI of a run without history: both prompts are the same) are computed once, so
    # their scores are equal exactly, not to rounding
    inverse = []
    for it in items:
        keys = [tuple(int(t) for t in b) for b in it.branches]
        uniq = list(dict.fromkeys(keys))
        inverse.append([uniq.index(k) for k in keys])
    work = [PromptReplies(it.root, it.replies, [list(u) for u in dict.fromkeys(
        tuple(int(t) for t in b) for b in it.branches)]) for it in items]
    originals, items = items, work

    def cost(it: PromptReplies) -> int:
        cont = sum(len(b) + sum(len(r) - 1 for r in it.replies) for b in it.branches)
        return int(it.root["input_ids"].shape[1]) + cont

    groups: list[list[int]] = []
    used = 0
    for i, it in enumerate(items):
        if groups and used + cost(it) <= max_tokens:
            groups[-1].append(i)
            used += cost(it)
        else:
            groups.append([i])
            used = cost(it)
    for grp in groups:
        its = [items[i] for i in grp]
        roots = [_run_root(model, it.root, device, any(len(b) == 0 for b in it.branches)) for it in its]
        sizes = [len(it.branches) * len(it.replies) for it in its]
        flat = torch.zeros(sum(sizes), dtype=torch.float64)
        starts = [sum(sizes[:k]) for k in range(len(its))]
        for k, (it, (_, _, first)) in enumerate(zip(its, roots)):  # first reply tokens after an empty branch
            for b_i, br in enumerate(it.branches):
                if not br:
                    o = starts[k] + b_i * len(it.replies)
                    flat[o : o + len(it.replies)] += first[[r[0] for r in it.replies]].double().cpu()
        ids, pos, mask, ends, reads = _pack(its, roots, device, dtype)
        if ids.shape[1]:
            from transformers import DynamicCache

            cache = DynamicCache(ddp_cache_data=[
                (torch.cat([r[0][layer][0] for r in roots], 2), torch.cat([r[0][layer][1] for r in roots], 2))
                for layer in range(len(roots[0][0]))])
            hidden = decoder(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache,
                             use_cache=True).last_hidden_state[0]
            for row, k, b_i in ends:  # a branch's last token predicts every reply's first token
                lp = torch.log_softmax(head(hidden[row]).float(), -1)
                o = starts[k] + b_i * len(its[k].replies)
                flat[o : o + len(its[k].replies)] += lp[[r[0] for r in its[k].replies]].double().cpu()
            if reads:
                rows, targets, where = (torch.tensor(x) for x in zip(*reads))
                # flat ids in _pack count (item, branch, reply) in the same order as ``starts``
                for s in range(0, len(reads), head_chunk):
                    sl = slice(s, s + head_chunk)
                    logp = torch.log_softmax(head(hidden[rows[sl].to(hidden.device)]).float(), -1)
                    got = logp.gather(-1, targets[sl].to(logp.device)[:, None])[:, 0]
                    flat.index_add_(0, where[sl], got.double().cpu())
        for k, it in enumerate(its):
            it.sums = flat[starts[k] : starts[k] + sizes[k]].view(len(it.branches), len(it.replies))
        if progress:
            progress(len(grp))
    for it, w, inv in zip(originals, work, inverse):
        it.sums = w.sums[inv]
    return [it.sums for it in originals]


@torch.inference_mode()
def shared_prompt_reply_logprobs(
    model: Any,
    prompt: Sequence[int],
    replies: Sequence[Sequence[int]],
    pad_id: int | None = None,
    device: str | torch.device = "cpu",
    extra: dict[str, torch.Tensor] | None = None,
    batch_size: int | None = None,
    max_tokens: int = 2048,
) -> list[float]:
    """:func:`mean_reply_logprobs` for many replies to ONE prompt (``extra``: its visual inputs, first dim 1),
    through :func:`score_prompt_replies`: the prompt once, the replies packed. ``pad_id`` and ``batch_size``
    are accepted for callers of the earlier version (nothing is padded; ``max_tokens`` bounds a pass)."""
    del pad_id, batch_size
    item = PromptReplies(root={"input_ids": torch.tensor([list(prompt)], dtype=torch.long), **(extra or {})},
                         replies=replies)
    [sums] = score_prompt_replies(model, [item], device, max_tokens=max_tokens)
    return [float(s) / len(r) for s, r in zip(sums[0], replies)]
