"""Run train.py / evaluate.py in-process through Hydra's compose API (as lightning-hydra-template's
tests do): the same config files and functions, without paying interpreter start-up per run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from tests.conftest import REPO

_MODULES: dict[str, object] = {}


def entry_module(name: str):
    """train.py or evaluate.py as a module (they are scripts at the repo root, not in the package)."""
    if name not in _MODULES:
        spec = importlib.util.spec_from_file_location(f"pvllm_entry_{name}", REPO / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _MODULES[name] = mod
    return _MODULES[name]


def compose_config(name: str, overrides: list[str], output_dir: Path | None = None):
    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        cfg = compose(name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        out = output_dir or Path(cfg.hydra.run.dir)
        cfg.hydra.runtime.output_dir = str(out)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    Path(out).mkdir(parents=True, exist_ok=True)
    return cfg


def run_evaluate(overrides: list[str], output_dir: Path):
    cfg = compose_config("evaluate", overrides, output_dir)
    return entry_module("evaluate").evaluate(cfg)
