"""ZeRO-3 builds the model in PVLLMModule.configure_model, sharded as it loads (issue 21 item 4).

Lightning's DeepSpeedStrategy refuses CPUs, so 2 CPU processes run what it does: the build function
train.py hands the module, called in ``configure_model`` inside ``deepspeed.zero.Init`` with
conf/strategy/deepspeed_zero3.yaml, then the DeepSpeed engine trains 2 steps. Each rank holds half the
weights right after the build, and the run reproduces the single-process reference (so every weight was
loaded into its shards, none left at random init).
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("DS_ACCELERATOR", "cpu")
deepspeed = pytest.importorskip("deepspeed")

from pvllm.distributed import consolidate_zero_checkpoint  # noqa: E402
from pvllm.distributed.ds_cpu import launch  # noqa: E402
from tests.test_deepspeed import LR, ROOT, SEED, STEPS, _load_state, reference, tiny_dir  # noqa: E402, F401


def test_zero3_builds_in_configure_model_sharded_and_trains(tiny_dir, reference, tmp_path):  # noqa: F811
    records = launch(ROOT / "conf" / "strategy" / "deepspeed_zero3.yaml", tiny_dir, tmp_path / "run", nproc=2,
                     steps=STEPS, lr=LR, seed=SEED, zero_init=True)
    ref_losses, ref_state = reference
    n_model = sum(v.numel() for v in _load_state(tiny_dir).values())
    for r in records:
        part = r["partitioned"]
        assert part["sharded"] and part["total"] == part["table_total"]  # the parameter table counts whole weights
        # each rank holds about half (small weights below the persistence threshold stay whole on every rank)
        assert part["local"] < 0.6 * part["total"], part
        assert r["zero_stage"] == 3
        assert r["losses"] == pytest.approx(ref_losses[r["rank"]], abs=1e-5)
    assert records[0]["partitioned"]["total"] <= n_model  # tied weights counted once
    hf = consolidate_zero_checkpoint(tmp_path / "run" / "ckpt", tmp_path / "hf", tiny_dir, dtype=torch.float32)
    got = _load_state(hf)
    worst = max((got[k] - ref_state[k]).abs().max().item() for k in ref_state)
    assert worst < 1e-5


def test_train_py_zero3_branch_loads_only_the_processor(tmp_path):
    """What train.py does before the Trainer under ZeRO-3 (Lightning then refuses a CPU): the strategy says
    stage 3, the processor and directory come without the weights, the module waits for configure_model."""
    import hydra
    from hydra import compose, initialize_config_dir

    from pvllm.models.module import PVLLMModule
    from tests.test_strategies import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose("train", overrides=["experiment=demo", "strategy=deepspeed_zero3",
                                          f"paths.cache_dir={tmp_path}"])
    strategy = hydra.utils.instantiate(cfg.strategy)
    assert strategy.zero_stage_3
    processor, source = hydra.utils.instantiate(cfg.model, _target_="pvllm.models.builder.load_processor")
    assert source == cfg.model.pretrained and hasattr(processor, "tokenizer")
    module = PVLLMModule(None, optim={}, build=lambda: (_ for _ in ()).throw(AssertionError("built early")))
    assert module.model is None  # nothing is built before configure_model
