"""The model side of packed training (``data.packing=true``; the packs come from ``pvllm.data.packing``).

A packed row holds several samples back to back; ``seq_lens`` gives their lengths. Here each sample gets
its own positions and attention that stays inside it:

- positions restart at 0 for every sample. Qwen2.5-VL and Qwen3-VL (M-RoPE, 3-D positions for the visual
  tokens) get theirs from the model's own ``get_rope_index``, run on the samples as a padded batch (the
  computation of an unpacked batch), then cut and concatenated; a text row (1-D positions, restarting per
  sample) goes in front, as transformers expects for packed Qwen inputs ``(4, 1, T)``. Every other family:
  ``(1, T)`` restarting per sample.
- attention: with SDPA (the CPU default) each sample's own causal SDPA, sample after sample, in the
  language model (``packed_sdpa_attention``, registered with transformers' ``AttentionInterface``, plain
  SDPA for unpacked calls; the language model switches to it at the first packed forward: the cost is the
  sum of the samples' squared lengths, not the row's); with eager attention a block-diagonal causal mask
  (additive, the model's dtype; dense, T x T);
  with FlashAttention no mask: transformers finds the samples from the restarting positions (its varlen
  path).

``text_tokens`` counts a sample's tokens without its video, handed to the datamodule so the sampler can
plan packs without decoding every sample's video.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from pvllm.models.families import family_of, render_prompt, reply_token_ids, unwrap

FLASH = ("flash_attention_2", "flash_attention_3", "kernels-community/flash-attn", "kernels-community/flash-attn3")
PACKED_SDPA = "pvllm_packed_sdpa"
ATTENTION_WAYS = ("auto", "segments", "mask")


def packed_sdpa_attention(module, query, key, value, attention_mask, pvllm_seq_lens=None, **kwargs):
    """SDPA over each sample of a packed row alone (causal), outputs concatenated: attention never crosses
    samples and costs sum(n_i^2). Without ``pvllm_seq_lens`` (another call), plain SDPA."""
    if pvllm_seq_lens is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    kwargs.pop("is_causal", None)
    outs, start = [], 0
    for n in pvllm_seq_lens:
        sl = slice(start, start + n)
        out, _ = sdpa_attention_forward(module, query[:, :, sl], key[:, :, sl], value[:, :, sl], None,
                                        is_causal=True, **kwargs)
        outs.append(out)  # (B, n, heads, dim)
        start += n
    return torch.cat(outs, dim=1), None


AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention)
AttentionMaskInterface.register(PACKED_SDPA, sdpa_mask)  # unpacked calls: exactly SDPA's mask and attention


def _use_packed_sdpa(model: Any) -> None:
    """Switch the language model (its config only: the vision tower keeps its own) from SDPA to
    ``packed_sdpa_attention``, once and for good: unpacked calls stay plain SDPA, and a layer recomputed under
    gradient checkpointing (after the forward returned) still sees its samples."""
    cfg = unwrap(model).config
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    if text._attn_implementation == "sdpa":
        text._attn_implementation = PACKED_SDPA


def packed_forward(model: Any, batch: dict[str, Any], attention: str = "auto", **kwargs):
    """``model``'s output on a packed batch (``pvllm.data.packing.collate_packed``). ``attention``: auto
    (segments under SDPA, the block mask under eager, none under FlashAttention), segments, or mask."""
    if attention not in ATTENTION_WAYS:
        raise ValueError(f"attention must be one of {ATTENTION_WAYS}, got {attention!r}")
    hf = unwrap(model)
    cfg = hf.config
    text_impl = (cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg)._attn_implementation or ""
    if attention == "auto":
        attention = "flash" if text_impl in FLASH else "segments" if text_impl in ("sdpa", PACKED_SDPA) else "mask"
    inputs = packed_model_inputs(model, batch, with_mask=attention == "mask")
    if attention != "segments":
        return model(**inputs, **kwargs)
    _use_packed_sdpa(model)
    # a 4-D mask is taken as given (transformers builds none): without it, the restarting positions would
    # make it build a T x T block mask that per-sample SDPA never reads
    inputs["attention_mask"] = torch.zeros(1, 1, 1, 1, dtype=next(unwrap(model).parameters()).dtype,
                                           device=batch["input_ids"].device)
    return model(**inputs, pvllm_seq_lens=batch["seq_lens"].tolist(), **kwargs)


class TextTokens:
    """Tokens of a sample's prompt (video placeholder unexpanded) + its supervised reply tokens, under the
    family's chat format: the part of a sample's length that differs between samples of one video."""

    def __init__(self, processor: Any, max_reply_tokens: int | None = 64):
        self.processor, self.max_reply_tokens = processor, max_reply_tokens
        self.family = family_of(processor)

    def __call__(self, item: dict[str, Any]) -> int:
        tok = self.processor.tokenizer
        instruction = item.get("instruction")
        prompt = item["prompt"] if instruction is None else render_prompt(self.processor, instruction)
        n_prompt = len(tok([prompt])["input_ids"][0])
        return n_prompt + len(reply_token_ids(self.processor, instruction or "", item["reply"],
                                              self.max_reply_tokens))


def segment_ids(seq_lens: torch.Tensor) -> torch.Tensor:
    """(T,) index of the sample each token of the packed row belongs to."""
    return torch.repeat_interleave(torch.arange(len(seq_lens), device=seq_lens.device), seq_lens)


def restarting_positions(seq_lens: torch.Tensor) -> torch.Tensor:
    """(T,) 0..len-1 for every sample in turn."""
    seg = segment_ids(seq_lens)
    starts = torch.cumsum(seq_lens, 0) - seq_lens
    return torch.arange(int(seq_lens.sum()), device=seq_lens.device) - starts[seg]


def block_causal_mask(seq_lens: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(1, 1, T, T) additive mask: token i sees token j iff same sample and j <= i."""
    seg = segment_ids(seq_lens)
    n = len(seg)
    causal = torch.ones(n, n, dtype=torch.bool, device=seq_lens.device).tril()
    allowed = causal & (seg[:, None] == seg[None, :])
    mask = torch.zeros(n, n, dtype=dtype, device=seq_lens.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[None, None]


def _mrope_positions(inner: Any, batch: dict[str, Any], seq_lens: torch.Tensor) -> torch.Tensor:
    """(3, T) M-RoPE positions of each sample computed alone (padded batch through ``get_rope_index``)."""
    ids, types = batch["input_ids"][0], batch["mm_token_type_ids"][0]
    n, longest = len(seq_lens), int(seq_lens.max())
    pad_ids = torch.zeros(n, longest, dtype=ids.dtype, device=ids.device)
    pad_types = torch.zeros(n, longest, dtype=types.dtype, device=ids.device)
    att = torch.zeros(n, longest, dtype=torch.long, device=ids.device)
    for i, (s, ln) in enumerate(zip((torch.cumsum(seq_lens, 0) - seq_lens).tolist(), seq_lens.tolist())):
        pad_ids[i, :ln], pad_types[i, :ln], att[i, :ln] = ids[s: s + ln], types[s: s + ln], 1
    extra = {k: batch[k] for k in ("image_grid_thw", "video_grid_thw", "second_per_grid_ts")
             if batch.get(k) is not None}
    pos, _ = inner.get_rope_index(pad_ids, mm_token_type_ids=pad_types, attention_mask=att, **extra)
    return torch.cat([pos[:, i, :ln] for i, ln in enumerate(seq_lens.tolist())], dim=1)


def packed_model_inputs(model: Any, batch: dict[str, Any], with_mask: bool = True) -> dict[str, Any]:
    """Model keyword arguments of a packed batch (``pvllm.data.packing.collate_packed``): its inputs with
    per-sample ``position_ids`` and a block-diagonal ``attention_mask`` (none under FlashAttention or
    without ``with_mask``)."""
    inputs = {k: v for k, v in batch.items()
              if k not in ("sample_id", "labels", "skipped_videos", "seq_lens", "loss_weights")}
    seq_lens = batch["seq_lens"].to(batch["input_ids"].device)
    if batch["input_ids"].shape != (1, int(seq_lens.sum())):
        raise ValueError(f"a packed batch is one row of sum(seq_lens)={int(seq_lens.sum())} tokens, got input_ids "
                         f"of shape {tuple(batch['input_ids'].shape)}")
    hf = unwrap(model)
    text = restarting_positions(seq_lens)[None]  # (1, T)
    inner = getattr(hf, "model", None)
    if hasattr(inner, "get_rope_index"):  # Qwen2.5-VL / Qwen3-VL: 3-D positions, text row in front
        if batch.get("mm_token_type_ids") is None:
            raise ValueError(f"family {family_of(hf).name}: a packed batch needs mm_token_type_ids for M-RoPE")
        inputs["position_ids"] = torch.cat([text, _mrope_positions(inner, batch, seq_lens)])[:, None]
    else:
        inputs["position_ids"] = text
    impl = getattr(hf.config, "_attn_implementation", None) or ""
    if impl in FLASH or not with_mask:
        inputs["attention_mask"] = None  # varlen from the restarting positions, or segment-wise SDPA
    else:
        dtype = next(p.dtype for p in hf.parameters() if p.is_floating_point())
        inputs["attention_mask"] = block_causal_mask(seq_lens, dtype)
    return inputs
