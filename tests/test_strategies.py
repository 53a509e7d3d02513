"""conf/strategy/*.yaml and the 8xA100 experiment: compose with train.yaml, instantiate, validate.

Lightning's DeepSpeedStrategy needs CUDA to *run*; here each dict is checked by DeepSpeed's own config
parser (pydantic, unknown keys rejected) after the keys Lightning adds from the Trainer.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
STRATEGIES = sorted(p.stem for p in (CONF / "strategy").glob("*.yaml"))


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose("train", overrides=list(overrides))


def _walk(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{path}[{i}]")
    else:
        yield path, obj


def test_every_strategy_file_is_tested():
    assert STRATEGIES == [
        "auto",
        "ddp",
        "deepspeed_zero2",
        "deepspeed_zero2_offload",
        "deepspeed_zero3",
        "single",
    ]


def test_default_strategy_is_auto():
    assert instantiate(_compose().strategy) == "auto"


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_composes_and_instantiates(name):
    cfg = _compose(f"strategy={name}")
    strategy = instantiate(cfg.strategy)
    expected = {"auto": str, "single": str, "ddp": DDPStrategy}.get(name, DeepSpeedStrategy)
    assert isinstance(strategy, expected)
    if name == "single":
        assert strategy == "single_device"
    if name == "ddp":
        assert strategy._ddp_kwargs["find_unused_parameters"] is False
        assert strategy._timeout.total_seconds() == 1800


@pytest.mark.parametrize(
    "name, stage, offload",
    [("deepspeed_zero2", 2, None), ("deepspeed_zero2_offload", 2, "cpu"), ("deepspeed_zero3", 3, None)],
)
def test_deepspeed_dict_is_explicit_and_valid(name, stage, offload):
    from deepspeed.runtime.config import DeepSpeedConfig

    strategy = instantiate(_compose(f"strategy={name}").strategy)
    config = strategy.config
    assert isinstance(config, dict)  # a plain dict: Lightning asserts it
    # no HF-Trainer "auto" placeholders anywhere (DeepSpeed would reject or misread them)
    autos = [p for p, v in _walk(config) if isinstance(v, str) and v.lower() == "auto"]
    assert autos == []
    # Lightning refuses these in the dict: they come from Trainer arguments
    assert "gradient_accumulation_steps" not in config and "train_micro_batch_size_per_gpu" not in config
    assert "bf16" not in config and "fp16" not in config  # set from trainer.precision
    zero = config["zero_optimization"]
    assert zero["stage"] == stage
    assert (zero.get("offload_optimizer") or {}).get("device") == offload
    full = copy.deepcopy(config) | {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 8,
                                    "gradient_clipping": 1.0, "bf16": {"enabled": True}}  # fmt: skip
    ds = DeepSpeedConfig(full)  # raises on unknown / mistyped keys
    assert ds.zero_optimization_stage == stage
    assert ds.train_batch_size == 8  # micro 1 × accumulation 8 × world 1
    assert ds.bfloat16_config.enabled


def test_deepspeed_parser_rejects_a_typo():
    """The validation above can fail: a misspelt ZeRO key is an error, not a silent default."""
    from deepspeed.runtime.config import DeepSpeedConfig

    with pytest.raises(Exception, match="stag"):
        DeepSpeedConfig({"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stag": 2}})


def test_make_adamw_follows_offload():
    import torch

    from pvllm.models.optim import make_adamw, offloads_optimizer

    plain = instantiate(_compose("strategy=deepspeed_zero2").strategy)
    off = instantiate(_compose("strategy=deepspeed_zero2_offload").strategy)
    assert (offloads_optimizer(plain), offloads_optimizer(off), offloads_optimizer("auto")) == (
        False,
        True,
        False,
    )
    p = torch.nn.Parameter(torch.zeros(2))
    opt = make_adamw([p], lr=2e-5, strategy=plain)
    assert type(opt) is torch.optim.AdamW and opt.param_groups[0]["lr"] == 2e-5


def test_paper_experiment_8xa100(monkeypatch):
    monkeypatch.delenv("VIDEO_LLAVA_PATH", raising=False)  # a local copy would replace the hub id
    cfg = _compose("experiment=pvllm_7b_8xa100")
    t = cfg.trainer
    # paper §3.2: total batch 8 over 8 GPUs, accumulate every 8 iterations, 2 epochs
    assert (t.accelerator, t.devices, t.num_nodes, t.precision) == ("gpu", 8, 1, "bf16-mixed")
    assert t.devices * t.num_nodes * cfg.data.batch_size == 8
    assert t.accumulate_grad_batches == 8 and t.max_epochs == 2 and t.max_steps == -1
    # Video-LLaVA stage 2: lr 2e-5, cosine, 3% warmup, no weight decay, gradient checkpointing
    assert cfg.optim.lr == 2e-5 and cfg.optim.weight_decay == 0.0
    assert (cfg.scheduler.name, cfg.scheduler.warmup_ratio) == ("cosine", 0.03)
    assert cfg.model.gradient_checkpointing is True and cfg.model.dtype == "bfloat16"
    assert cfg.model.pretrained == "LanguageBind/Video-LLaVA-7B-hf"
    assert cfg.model.vision_encoder.trainable is False and cfg.model.llm.word_embeddings_trainable is False
    strategy = instantiate(cfg.strategy)
    assert isinstance(strategy, DeepSpeedStrategy)
    zero = strategy.config["zero_optimization"]
    # the paper names no DeepSpeed setting: ZeRO-2 without offload is the fastest that fits (test_memory.py)
    assert zero["stage"] == 2 and "offload_optimizer" not in zero


def test_paper_experiment_command_line_composes():
    """Line 2 (after the package header) is the command; its overrides compose and pass validation."""
    from pvllm.config import validate_train_config

    lines = (CONF / "experiment" / "pvllm_7b_8xa100.yaml").read_text().splitlines()
    assert lines[0] == "# @package _global_"
    cmd = lines[1].lstrip("# ").split("(")[0].split()
    assert cmd[:3] == ["python", "train.py", "experiment=pvllm_7b_8xa100"]
    overrides = [
        o if not o.startswith("data.root=") else f"data.root={ROOT / 'data' / 'sample'}" for o in cmd[2:]
    ]
    cfg = _compose(*overrides)
    validate_train_config(cfg)  # raises ConfigError listing every problem
