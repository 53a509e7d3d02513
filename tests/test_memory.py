"""The 8×A100 memory/speed arithmetic (pvllm.distributed.memory) and the defaults it decides (issue 21 item 4)."""

from __future__ import annotations

import re

import pytest
from omegaconf import OmegaConf

from pvllm.distributed.memory import (
    GB,
    STRATEGIES,
    Cluster,
    estimate,
    fastest_fitting,
    main,
    min_checkpoint_interval,
    param_counts,
    strategy_config,
    table,
)
from tests.test_strategies import CONF, ROOT, _compose

EXPERIMENTS = {"pvllm_7b_8xa100": "video_llava_7b", "pvllm_qwen2_5_vl_8xa100": "qwen2_5_vl_7b",
               "pvllm_qwen3_vl_8xa100": "qwen3_vl_8b"}


@pytest.mark.parametrize("name, total",
                         [("video_llava_7b", 7.37e9), ("qwen2_5_vl_7b", 8.29e9), ("qwen3_vl_8b", 8.77e9)])
def test_real_shapes_have_the_published_sizes(name, total):
    c = param_counts(name)  # totals on the model cards (Video-LLaVA: Vicuna-7B 6.74B + 2 towers 0.61B + projector)
    assert c["total"] == pytest.approx(total, rel=0.005)
    # trained: everything but the vision tower(s) and the word embeddings (paper §3.2)
    assert c["trainable"] == c["total"] - c["vision"] - c["vocab"] * c["hidden"]


def test_zero2_bytes_by_hand():
    c, e = param_counts("video_llava_7b"), estimate("video_llava_7b", "deepspeed_zero2")
    assert e.bytes["weights"] == 2 * c["total"]  # bf16, replicated
    assert e.bytes["grads"] == 2 * c["trainable"] / 8 and e.bytes["optimizer"] == 12 * c["trainable"] / 8
    assert e.tokens == 8 * 257 + 512
    assert e.checkpoint_bytes == 2 * c["total"] + 12 * c["trainable"]  # ~94 GB: bf16 module + fp32 master/m/v
    assert e.checkpoint_s == pytest.approx(e.checkpoint_bytes / (2 * GB))
    off, z3 = estimate("video_llava_7b", "deepspeed_zero2_offload"), estimate("video_llava_7b", "deepspeed_zero3")
    assert off.bytes["optimizer"] == 0 and off.host_bytes == 16 * c["trainable"] and off.step_s > e.step_s
    assert z3.bytes["weights"] < e.bytes["weights"] / 4 and z3.total < e.total


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_shipped_strategy_is_the_fastest_that_fits(experiment, monkeypatch):
    for var in ("VIDEO_LLAVA_PATH", "QWEN2_5_VL_PATH", "QWEN3_VL_PATH"):
        monkeypatch.delenv(var, raising=False)
    cfg = _compose(f"experiment={experiment}")
    shipped = OmegaConf.to_container(cfg.strategy.config, resolve=True)
    best = fastest_fitting(EXPERIMENTS[experiment])
    assert shipped == strategy_config(best.strategy), (experiment, best.strategy)
    assert cfg.data.batch_size == 1 and cfg.trainer.accumulate_grad_batches == 8  # the Workload priced


def test_a_smaller_card_changes_the_choice():
    """The choice follows the arithmetic: on 40 GB cards ZeRO-2 no longer fits Qwen3-VL-8B."""
    small = Cluster(gpu_mem_gb=40.0)
    assert not estimate("qwen3_vl_8b", "deepspeed_zero2", small).fits
    assert fastest_fitting("qwen3_vl_8b", small).strategy != "deepspeed_zero2"


def test_checkpoint_cadence_keeps_io_under_5_percent():
    exp = OmegaConf.load(CONF / "experiment" / "pvllm_7b_8xa100.yaml")  # the Qwen files inherit it
    (every,) = [node.every_n_train_steps for node in exp.callbacks.values() if "every_n_train_steps" in node]
    for name in EXPERIMENTS.values():
        e = fastest_fitting(name)
        assert every >= min_checkpoint_interval(e), name
        assert e.checkpoint_s / (every * e.step_s) < 0.05


def test_doc_table_is_the_command_output(capsys):
    main([])  # python -m pvllm.distributed.memory
    out = capsys.readouterr().out
    doc = (ROOT / "docs" / "cluster.md").read_text()
    assert table() in out and table() in doc
    assert len(re.findall(r"^\| \w+ \| deepspeed_", table(), re.M)) == 3 * len(STRATEGIES)
    assert "python -m pvllm.distributed.memory" in doc
