"""Issue 25 item 10: WANDB_MODE from the environment wins over the config's offline flag (train.py; evaluate.py
is checked end to end in tests/test_secrets.py, where WANDB_MODE=disabled leaves no wandb/ directory)."""

from __future__ import annotations

from lightning.pytorch.loggers import CSVLogger, WandbLogger

from tests.entrypoints import compose_config, entry_module


def test_train_leaves_wandb_out_when_disabled(tmp_path, monkeypatch):
    cfg = compose_config("train", [f"paths.output_root={tmp_path}"], tmp_path / "run")
    train = entry_module("train")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert [type(lg) for lg in train.instantiate_loggers(cfg)] == [CSVLogger]
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert [type(lg) for lg in train.instantiate_loggers(cfg)] == [CSVLogger, WandbLogger]
