"""The GPU acceptance check (pvllm.distributed.gpu_checks --acceptance): what a CPU can check, and the
check itself under the `gpu` marker (skipped without CUDA; it has not run on a GPU yet)."""

from __future__ import annotations

import json
import time

import pytest
import torch

from pvllm.distributed.gpu_checks import (
    ACCEPTANCE_EXPERIMENTS,
    acceptance_commands,
    main,
    model_flops_per_token,
    reduced_config,
)
from pvllm.models.shapes import SHAPES, meta_model


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_reduced_config_keeps_real_widths(name):
    full, small = meta_model(name), meta_model(name, llm_layers=2, vision_layers=2)
    cfg = reduced_config(name, llm_layers=2, vision_layers=2)
    t, ft = cfg.get_text_config(), full.config.get_text_config()
    assert t.num_hidden_layers == 2 and ft.num_hidden_layers == SHAPES[name].llm_layers
    assert (t.hidden_size, t.intermediate_size, t.vocab_size) == (ft.hidden_size, ft.intermediate_size, ft.vocab_size)
    layer = sum(p.numel() for p in full.model.language_model.layers[0].parameters())
    assert sum(p.numel() for p in small.model.language_model.layers[1].parameters()) == layer  # real layer width
    n_full, n_small = (sum(p.numel() for p in m.parameters()) for m in (full, small))
    lost_llm = (SHAPES[name].llm_layers - 2) * layer
    assert n_small < n_full - lost_llm + 1  # only layers were removed (vision layers too)


def test_acceptance_dry_run_prints_every_command(tmp_path, capsys):
    main(["--acceptance", "--dry-run", "--work-dir", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(ACCEPTANCE_EXPERIMENTS) * 2 * 3  # × ZeRO-2/3 × train/resume/consolidate
    assert sum("strategy=deepspeed_zero3" in line for line in lines) == 3 * 2


@pytest.mark.parametrize("experiment", sorted(ACCEPTANCE_EXPERIMENTS))
def test_acceptance_commands_compose(experiment, tmp_path):
    from hydra import compose, initialize_config_dir

    from tests.test_strategies import CONF

    cmds = acceptance_commands(experiment, tmp_path / "model", tmp_path / "run", "deepspeed_zero3", steps=20)
    overrides = [o for o in cmds["resume"][2:] if not o.startswith("hydra.")]
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose("train", overrides=overrides)
    assert cfg.strategy.config.zero_optimization.stage == 3 and cfg.trainer.max_steps == 25
    assert cfg.ckpt_path == str(tmp_path / "run" / "train" / "checkpoints" / "last.ckpt")
    assert cfg.model.pretrained == str(tmp_path / "model") and cfg.trainer.devices == 1
    assert cmds["consolidate"][-3:] == [str(tmp_path / "run" / "hf_consolidated"), "--base", str(tmp_path / "model")]


@pytest.mark.parametrize("name", ["video_llava_7b", "qwen2_5_vl_7b"])
def test_reduced_processor_gives_the_real_visual_tokens(name, tiny_model_dir, tiny_family_dirs):
    """The written model's processor (tiny vocabulary, real frame geometry) yields the real model's visual
    tokens for 8 frames, under token ids the model config shares."""
    import numpy as np

    from pvllm.distributed.gpu_checks import reduced_config_and_processor

    tiny = tiny_model_dir if name == "video_llava_7b" else tiny_family_dirs[SHAPES[name].family]
    cfg, processor = reduced_config_and_processor(name, tiny, 1, 1)
    size = 224 if name == "video_llava_7b" else 448
    frames = np.random.default_rng(0).integers(0, 256, (8, size, size, 3), dtype=np.uint8)
    token = "<video>" if name == "video_llava_7b" else "<|vision_start|><|video_pad|><|vision_end|>"
    out = processor(text=f"{token} hi", videos=[frames], return_tensors="pt")
    video_id = getattr(cfg, "video_token_id", None) or cfg.video_token_index
    assert int((out["input_ids"] == video_id).sum()) == SHAPES[name].visual_tokens_8_frames


def test_model_flops_count_trained_parameters():
    lin = torch.nn.Linear(10, 10)  # 110 parameters
    lin.bias.requires_grad_(False)
    assert model_flops_per_token(lin) == 8 * 100


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_acceptance_on_a_gpu(tmp_path):
    t0 = time.perf_counter()
    out = tmp_path / "acceptance.jsonl"
    main(["--acceptance", "--work-dir", str(tmp_path), "--out", str(out)])
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == len(ACCEPTANCE_EXPERIMENTS) * 2
    for r in recs:
        assert r["ok"], r
        assert r["train"]["steps"] == 20 and r["resume"]["steps"] == 25
        assert r["train"]["peak_mem_gib"] > 0 and r["train"]["mfu"] > 0
    assert time.perf_counter() - t0 < 600
