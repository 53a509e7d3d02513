"""optim.projector_lr: the projector in its own AdamW group (LLaVA's mm_projector_lr), validated up front."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from pvllm.config import ConfigError, validate_train_config
from tests.entrypoints import compose_config, entry_module

TRAIN = ["model=tiny", "trainer.max_steps=2", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
         "+trainer.limit_val_batches=1", "logger=csv", "callbacks.best_checkpoint=null",
         "callbacks.last_checkpoint=null", "scheduler.name=constant"]


def _weights(d) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def test_projector_learns_at_its_own_rate(tmp_path):
    """lr 1e-9 for the LLM, 1e-2 for the projector, 2 AdamW steps: the projector moves ~2e-2 (Adam's first
    steps move each weight by about lr), the LLM's blocks by ~2e-9 (float32 rounding: < 1e-6); the lr of each
    group is logged."""
    cfg = compose_config("train", TRAIN + [f"paths.cache_dir={tmp_path / 'cache'}", "optim.lr=1e-9",
                                           "optim.projector_lr=1e-2"], tmp_path / "run")
    validate_train_config(cfg)
    entry_module("train").train(cfg)
    before = _weights(next((tmp_path / "cache" / "models").iterdir()))
    after = _weights(tmp_path / "run" / "hf_model")
    proj = [k for k in after if "multi_modal_projector" in k]
    llm = [k for k in after if k.startswith("language_model.model.layers.")]
    assert proj and llm
    moved = max(float((after[k] - before[k]).abs().max()) for k in proj)
    assert 1.5e-2 < moved <= 2.1e-2
    assert max(float((after[k] - before[k]).abs().max()) for k in llm) <= 1e-6  # float32 rounding of 2e-9
    metrics = (tmp_path / "run" / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    assert "train/lr_projector" in metrics[0]


@pytest.mark.parametrize(("overrides", "message"), [
    (["optim.projector_lr=0"], "optim.projector_lr: must be null or > 0"),
    (["optim.projector_lr=1e-3", "model.projector.trainable=false"], "model.projector.trainable is false"),
])
def test_projector_lr_validated(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate_train_config(compose_config("train", TRAIN + overrides, tmp_path))
