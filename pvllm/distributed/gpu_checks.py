"""GPU checks: the acceptance check to run before an 8-GPU job, and the 7B-shape throughput benchmark.

    python -m pvllm.distributed.gpu_checks --acceptance          # any CUDA machine, one GPU included (~10 min)

The acceptance check runs each 8×A100 experiment (pvllm_7b_8xa100, pvllm_qwen2_5_vl_8xa100,
pvllm_qwen3_vl_8xa100) through the real train.py and Lightning's DeepSpeedStrategy at the real layer
widths and a reduced depth (``--llm-layers``/``--vision-layers``, default 2: random weights written once,
~2-3 GB each): ZeRO-2 and ZeRO-3, ``--steps`` (20) optimizer steps, then a resume from ``last.ckpt`` for 5
more steps, then ``pvllm.distributed.consolidate``. Each run prints and appends to ``--out`` one JSON line:
loss, peak GPU memory, tokens/s and MFU (model FLOPs 8 × trained parameters × tokens with checkpointing,
over the card's bf16 peak). ``--dry-run`` prints the commands only (what the CPU tests check).

The benchmark (no ``--acceptance``): the 7B Video-LLaVA shape with random weights, bf16 + SDPA +
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
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import lightning as L
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
                                  num_attention_heads=16, image_size=224, patch_size=14,
                                  projection_dim=768)  # fmt: skip
        text = LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008,
                           num_hidden_layers=layers or 32,
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
    from pvllm.models.optim import make_adamw

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
        "dtype": args.dtype, "attn": args.attn, "grad_ckpt": args.grad_ckpt,
        "llm_layers": cfg.text_config.num_hidden_layers,
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


# ---------------------------------------------------------------------------------------------------
# The acceptance check: each 8×A100 experiment through train.py + DeepSpeedStrategy at reduced depth.

ACCEPTANCE_EXPERIMENTS = {"pvllm_7b_8xa100": "video_llava_7b", "pvllm_qwen2_5_vl_8xa100": "qwen2_5_vl_7b",
                          "pvllm_qwen3_vl_8xa100": "qwen3_vl_8b"}
ACCEPTANCE_STRATEGIES = ("deepspeed_zero2", "deepspeed_zero3")
REPO = Path(__file__).resolve().parents[2]
_TOKEN_IDS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id",
              "image_token_index", "video_token_index", "pad_token_id", "bos_token_id", "eos_token_id")


def reduced_config(name: str, llm_layers: int = 2, vision_layers: int = 2):
    """The real model's HF config (every width) with ``llm_layers``/``vision_layers`` layers."""
    from pvllm.models.shapes import real_config

    return real_config(name, llm_layers=llm_layers, vision_layers=vision_layers)


def write_reduced_model(name: str, out: str | os.PathLike, llm_layers: int = 2, vision_layers: int = 2,
                        seed: int = 0) -> Path:
    """An HF directory of ``name`` at real widths and reduced depth, random bf16 weights, with the family's
    (tiny-vocabulary) processor set to the real frame geometry; written once (reused when present)."""
    from hydra.utils import get_method

    from pvllm.models.families import get_family, resolve_class
    from pvllm.models.shapes import SHAPES

    out = Path(out)
    if (out / "config.json").is_file():
        return out
    fam = get_family(SHAPES[name].family)
    tiny = out.with_name(out.name + ".tiny")
    if not (tiny / "config.json").is_file():
        get_method(fam.tiny)(tiny, seed=seed)
    cfg, processor = reduced_config_and_processor(name, tiny, llm_layers, vision_layers)
    torch.manual_seed(seed)
    model = resolve_class(fam.model_class)(cfg).to(torch.bfloat16)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    os.replace(tmp, out)
    return out


def reduced_config_and_processor(name: str, tiny_dir: str | os.PathLike, llm_layers: int = 2,
                                 vision_layers: int = 2):
    """The reduced config with the special-token ids of the family's tiny processor in ``tiny_dir``, and that
    processor set to the real frame geometry (patch size, frame size, merge)."""
    from pvllm.models.families import get_family, resolve_class
    from pvllm.models.shapes import SHAPES

    fam = get_family(SHAPES[name].family)
    processor = resolve_class(fam.processor_class).from_pretrained(tiny_dir)
    tiny_cfg = resolve_class(fam.model_class).config_class.from_pretrained(tiny_dir)
    cfg = reduced_config(name, llm_layers, vision_layers)
    for attr in _TOKEN_IDS:  # the model's special tokens are the processor's (its vocabulary is smaller)
        for src, dst in ((tiny_cfg, cfg), (tiny_cfg.get_text_config(), cfg.get_text_config())):
            if getattr(src, attr, None) is not None and hasattr(dst, attr):
                setattr(dst, attr, getattr(src, attr))
    v = cfg.vision_config
    if name == "video_llava_7b":  # CLIP at 224 px, 14-px patches: 257 tokens per frame
        processor.patch_size = v.patch_size
        for proc in (processor.image_processor, processor.video_processor):
            proc.crop_size = {"height": v.image_size, "width": v.image_size}
            proc.size = {"shortest_edge": v.image_size}
    else:  # Qwen: 448×448 frames, merged 2×2, 2 frames per temporal patch
        for proc in (processor.image_processor, processor.video_processor):
            proc.patch_size, proc.merge_size, proc.temporal_patch_size = v.patch_size, 2, 2
            proc.size = {"shortest_edge": 448 * 448, "longest_edge": 448 * 448}
    return cfg, processor


def acceptance_commands(experiment: str, model_dir: str | os.PathLike, run_dir: str | os.PathLike, strategy: str,
                        steps: int = 20, data_root: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """train (``steps``), resume (+5 steps from last.ckpt) and consolidate, as argv lists (cwd: the repo)."""
    run_dir, data_root = Path(run_dir), data_root or REPO / "data" / "sample"
    base = [sys.executable, "train.py", f"experiment={experiment}", f"model.pretrained={model_dir}",
            f"data.root={data_root}", "trainer.devices=1", f"strategy={strategy}", "logger=csv",
            "trainer.accumulate_grad_batches=1", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false",
            "save_hf_model=false", "data.num_workers=2", f"callbacks.last_checkpoint.every_n_train_steps={steps}",
            "+callbacks.gpu_stats._target_=pvllm.distributed.gpu_checks.GpuStats"]  # fmt: skip
    ckpt = run_dir / "train" / "checkpoints" / "last.ckpt"
    return {
        "train": base + [f"trainer.max_steps={steps}", f"hydra.run.dir={run_dir / 'train'}",
                         f"+callbacks.gpu_stats.out={run_dir / 'train' / 'gpu_stats.json'}"],
        "resume": base + [f"trainer.max_steps={steps + 5}", f"ckpt_path={ckpt}", f"hydra.run.dir={run_dir / 'resume'}",
                          f"+callbacks.gpu_stats.out={run_dir / 'resume' / 'gpu_stats.json'}"],
        "consolidate": [sys.executable, "-m", "pvllm.distributed.consolidate", str(ckpt),
                        str(run_dir / "hf_consolidated"), "--base", str(model_dir)],
    }  # fmt: skip


def model_flops_per_token(model) -> float:
    """8 × trained parameters (forward, backward, checkpointing recompute); ZeRO-3 shards counted whole."""
    from pvllm.models.builder import _numel

    return 8.0 * sum(_numel(p) for p in model.parameters() if p.requires_grad)


class GpuStats(L.Callback):
    """Writes loss, steps, peak GPU memory, tokens/s and MFU of a train.py run to ``out`` (JSON)."""

    def __init__(self, out: str):
        self.out = Path(out)
        self.tokens, self.t0 = 0, None

    def on_train_start(self, trainer, pl_module) -> None:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if isinstance(batch, dict) and "attention_mask" in batch:
            self.tokens += int(batch["attention_mask"].sum())

    def on_train_end(self, trainer, pl_module) -> None:
        sec = time.perf_counter() - (self.t0 or time.perf_counter())
        tps = self.tokens / sec if sec > 0 else None
        rec = {"steps": trainer.global_step, "loss": float(trainer.callback_metrics.get("train/loss", float("nan"))),
               "tokens_per_s": round(tps, 1) if tps else None, "seconds": round(sec, 1)}
        if torch.cuda.is_available():
            dev = torch.cuda.current_device()
            name = torch.cuda.get_device_name(dev)
            peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
            rec.update(device=name, peak_mem_gib=round(torch.cuda.max_memory_allocated(dev) / 2**30, 2),
                       mfu=round(model_flops_per_token(pl_module.model) * tps / (peak * 1e12), 4)
                       if peak and tps else None)
        if trainer.is_global_zero:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.out.write_text(json.dumps(rec) + "\n")


def run_acceptance(a) -> list[dict]:
    """Every experiment × strategy: train, resume, consolidate; one JSON line each, printed and appended."""
    import subprocess

    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(a.work_dir)
    results = []
    for exp in a.experiments:
        name = ACCEPTANCE_EXPERIMENTS[exp]
        model_dir = work / "models" / f"{name}-L{a.llm_layers}-V{a.vision_layers}"
        for strategy in a.acceptance_strategies:
            cmds = acceptance_commands(exp, model_dir, work / "runs" / f"{exp}-{strategy}", strategy,
                                       a.acceptance_steps, a.data_root)
            if a.dry_run:
                for stage, cmd in cmds.items():
                    print(f"{exp} {strategy} {stage}: {' '.join(cmd)}")
                continue
            write_reduced_model(name, model_dir, a.llm_layers, a.vision_layers)
            rec: dict = {"experiment": exp, "model": name, "strategy": strategy, "llm_layers": a.llm_layers,
                         "vision_layers": a.vision_layers}
            for stage, cmd in cmds.items():
                t0 = time.perf_counter()
                proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
                rec[f"{stage}_s"] = round(time.perf_counter() - t0, 1)
                if proc.returncode != 0:
                    rec[f"{stage}_error"] = proc.stderr[-2000:]
                    break
                stats = Path(cmd[-1].split("=", 1)[1]) if stage != "consolidate" else None
                if stats is not None and stats.is_file():
                    rec[stage] = json.loads(stats.read_text())
            rec["ok"] = not any(k.endswith("_error") for k in rec)
            print(json.dumps(rec), flush=True)
            with out.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            results.append(rec)
    return results


def main(argv: list[str] | None = None) -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--acceptance", action="store_true",
                   help="the acceptance check: each 8×A100 experiment through train.py + DeepSpeedStrategy")
    p.add_argument("--experiments", nargs="+", default=list(ACCEPTANCE_EXPERIMENTS),
                   choices=list(ACCEPTANCE_EXPERIMENTS))
    p.add_argument("--acceptance-strategies", nargs="+", default=list(ACCEPTANCE_STRATEGIES),
                   choices=list(ACCEPTANCE_STRATEGIES))
    p.add_argument("--acceptance-steps", type=int, default=20, help="acceptance: optimizer steps before the resume")
    p.add_argument("--llm-layers", type=int, default=2, help="acceptance: LLM layers at the real width")
    p.add_argument("--vision-layers", type=int, default=2, help="acceptance: vision layers at the real width")
    p.add_argument("--data-root", default=None, help="acceptance: dataset (default: the bundled sample)")
    p.add_argument("--work-dir", default=str(REPO / "outputs" / "gpu_checks"), help="acceptance: models, runs")
    p.add_argument("--out", default=str(REPO / "outputs" / "gpu_checks" / "acceptance.jsonl"),
                   help="acceptance: results file (JSON lines, appended)")
    p.add_argument("--dry-run", action="store_true", help="acceptance: print the commands only")
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
    if a.acceptance:
        if not a.dry_run and not torch.cuda.is_available():
            raise SystemExit("gpu_checks --acceptance needs a CUDA GPU (Lightning's DeepSpeedStrategy refuses CPUs); "
                             "--dry-run prints the commands")
        run_acceptance(a)
        return
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
