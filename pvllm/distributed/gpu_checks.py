"""GPU checks for benchmarks/RESULTS.md: the 7B Video-LLaVA shape with random weights, bf16 + SDPA +
gradient checkpointing, tokens/s, MFU and peak memory per ZeRO setting.

    python -m pvllm.distributed.gpu_checks                       # 7B shape, plain AdamW vs ZeRO-2 offload (1 GPU)
    python -m pvllm.distributed.gpu_checks --strategies none deepspeed_zero2_offload deepspeed_zero3 --layers 8
    python -m pvllm.distributed.gpu_checks --tiny --device cpu --strategies none --steps 2   # plumbing on CPU

One process, one device (multi-GPU: run it under torchrun; ZeRO then shards over the ranks). Weights are
random (no hub), the frozen parts follow the paper (vision tower and word embeddings frozen). MFU counts
model FLOPs only (6 x trainable-path params x tokens for the LLM, 2 x params x tokens for the frozen
vision tower; the gradient-checkpointing recompute is not counted). Prints one JSON line per setting.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from types import SimpleNamespace

import torch

# Dense bf16 peak (TFLOP/s) of cards we may be lent; others: pass --peak-tflops.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def build_config(tiny: bool, layers: int | None):
    from transformers import CLIPVisionConfig, LlamaConfig, VideoLlavaConfig

    if tiny:
        vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                  image_size=32, patch_size=8, projection_dim=32)  # fmt: skip
        text = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=layers or 2,
                           num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096)  # fmt: skip
    else:  # LanguageBind/Video-LLaVA-7B-hf: CLIP ViT-L/14 at 224 px + Vicuna-7B (Llama-2 shape)
        vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                  num_attention_heads=16, image_size=224, patch_size=14, projection_dim=768)  # fmt: skip
        text = LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=layers or 32,
                           num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096)  # fmt: skip
    cfg = VideoLlavaConfig(vision_config=vision, text_config=text, image_token_index=text.vocab_size - 2,
                           video_token_index=text.vocab_size - 1, vision_feature_select_strategy="default",
                           vision_feature_layer=-2)  # fmt: skip
    return cfg


def make_batch(cfg, frames: int, text_tokens: int, device) -> dict[str, torch.Tensor]:
    v = cfg.vision_config
    per_frame = (v.image_size // v.patch_size) ** 2 + 1  # patches + CLS, as Video-LLaVA feeds them
    n_video = frames * per_frame
    ids = torch.randint(0, cfg.text_config.vocab_size - 2, (1, text_tokens + n_video), device=device)
    ids[0, 1 : 1 + n_video] = cfg.video_token_index
    labels = ids.clone()
    labels[0, : 1 + n_video] = -100
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values_videos": torch.randn(1, frames, 3, v.image_size, v.image_size, device=device),
        "labels": labels,
        "_video_tokens": torch.tensor(n_video),
    }


def flops_per_sample(model, n_tokens: int, n_video: int, frames: int) -> float:
    vision = sum(p.numel() for p in model.model.video_tower.parameters())
    llm = sum(
        p.numel() for n, p in model.named_parameters() if "video_tower" not in n and "image_tower" not in n
    )
    per_frame_tokens = n_video // frames
    return 6.0 * llm * n_tokens + 2.0 * vision * per_frame_tokens * frames


def run_setting(name: str, args) -> dict:
    from transformers import VideoLlavaForConditionalGeneration

    from pvllm.distributed.ds_cpu import load_strategy_config
    from pvllm.distributed.optim import make_adamw

    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    cfg = build_config(args.tiny, args.layers)
    cfg._attn_implementation = args.attn
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.empty_cache()
    with torch.device(device):
        model = VideoLlavaForConditionalGeneration(cfg).to(dtype)
    for p in model.model.image_tower.parameters():
        p.requires_grad_(False)
    for p in model.model.video_tower.parameters():  # paper §3.2: vision encoder frozen
        p.requires_grad_(False)
    model.get_input_embeddings().weight.requires_grad_(False)  # ... and the word embeddings
    if args.grad_ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    batch = make_batch(cfg, args.frames, args.text_tokens, device)
    n_video = int(batch.pop("_video_tokens"))
    n_tokens = batch["input_ids"].shape[1]

    if name == "none":
        opt = torch.optim.AdamW(params, lr=2e-5, weight_decay=0.0)

        def step():
            loss = model(**batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss
    else:
        import deepspeed

        config = load_strategy_config(os.path.join(args.conf_dir, f"{name}.yaml"))
        if dtype == torch.bfloat16:
            config["bf16"] = {"enabled": True}
        opt = make_adamw(params, lr=2e-5, strategy=SimpleNamespace(config=config))
        engine, _, _, _ = deepspeed.initialize(
            model=model, model_parameters=params, optimizer=opt, config=config
        )

        def step():
            loss = engine(**batch).loss
            engine.backward(loss)
            engine.step()
            return loss

    times, losses = [], []
    for i in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = step()
        losses.append(float(loss))
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    sec = sorted(times)[len(times) // 2]
    flops = flops_per_sample(model, n_tokens, n_video, args.frames)
    out = {
        "strategy": name, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": args.dtype, "attn": args.attn, "grad_ckpt": args.grad_ckpt, "llm_layers": cfg.text_config.num_hidden_layers,
        "params_total": sum(p.numel() for p in model.parameters()), "params_trainable": sum(p.numel() for p in params),
        "tokens_per_sample": n_tokens, "video_tokens": n_video, "step_s_median": round(sec, 4),
        "tokens_per_s": round(n_tokens / sec, 1), "model_tflops_per_s": round(flops / sec / 1e12, 2),
        "losses": [round(x, 4) for x in losses],
    }  # fmt: skip
    if device.type == "cuda":
        out["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        name_ = out["device"]
        peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name_), None)
        out["mfu"] = round(flops / sec / (peak * 1e12), 4) if peak else None
    return out


def main(argv: list[str] | None = None) -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--strategies", nargs="+", default=["none", "deepspeed_zero2_offload"],
                   help="'none' (plain AdamW) and/or conf/strategy/deepspeed_* names")  # fmt: skip
    p.add_argument("--conf-dir", default=os.path.join(here, "..", "..", "conf", "strategy"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--attn", default="sdpa", choices=["sdpa", "eager", "flash_attention_2"])
    p.add_argument("--no-grad-ckpt", dest="grad_ckpt", action="store_false")
    p.add_argument("--tiny", action="store_true", help="tiny shapes (plumbing check on CPU)")
    p.add_argument("--layers", type=int, default=None, help="LLM layers (default: 32, the 7B shape)")
    p.add_argument("--frames", type=int, default=8, help="frames per video (paper: 8)")
    p.add_argument("--text-tokens", type=int, default=384, help="history + prompt + reply tokens")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the card, for MFU")
    a = p.parse_args(argv)
    if a.device == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if any(s != "none" for s in a.strategies) and not torch.distributed.is_initialized():
        # a single-process group so DeepSpeed runs without a launcher
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29533")
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("LOCAL_RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
    for name in a.strategies:
        try:
            print(json.dumps(run_setting(name, a)), flush=True)
        except torch.OutOfMemoryError as e:
            print(json.dumps({"strategy": name, "error": f"OOM: {str(e).splitlines()[0]}"}), flush=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
