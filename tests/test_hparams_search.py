"""The Optuna search of conf/hparams_search/ (issue 26 item 5): the README's command, 2 trials on the tiny
model through Hydra's real Optuna sweeper, each trial's return value its val/loss; the study's best is
the lowest of the trials' val/loss as their own metrics.csv files record it."""

import csv
import re
import sys

import hydra
import pytest
import yaml

from tests.conftest import REPO
from tests.entrypoints import entry_module


def readme_command() -> list[str]:
    """The overrides of the README's `python train.py -m hparams_search=...` command."""
    m = re.search(r"`python train\.py (-m hparams_search=[^`]+)`", (REPO / "README.md").read_text())
    assert m, "README.md documents no hparams_search command"
    return m.group(1).split()


def _val_losses(trial_dir) -> list[float]:
    with open(next(trial_dir.glob("csv/version_*/metrics.csv"))) as f:
        return [float(r["val/loss"]) for r in csv.DictReader(f) if r.get("val/loss")]


def test_optuna_search_of_lr_and_history_two_trials(tmp_path, monkeypatch):
    args = readme_command()
    assert args[:2] == ["-m", "hparams_search=lr_history"] and "experiment=demo" in args
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    # the README command + the smoke preset, 2 trials, this test's output directory, pytest's logging
    monkeypatch.setattr(sys, "argv", ["train.py", *args, "debug=smoke", "hydra.sweeper.n_trials=2",
                                      f"paths.output_root={tmp_path}", "hydra/job_logging=none",
                                      "hydra/hydra_logging=none"])
    task = hydra.main(config_path=str(REPO / "conf"), config_name="train", version_base=None)(
        entry_module("train").train)
    task()

    [sweep] = (tmp_path / "train" / "multirun").iterdir()
    trials = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in trials] == ["0", "1"]
    params, losses = [], []
    for trial in trials:
        cfg = yaml.safe_load((trial / ".hydra" / "config.yaml").read_text())
        over = dict(o.split("=", 1) for o in yaml.safe_load((trial / ".hydra" / "overrides.yaml").read_text()))
        # the sweeper drew both settings, inside the search space, and the run used them
        lr, kmax = float(over["optim.lr"]), int(over["history.train_k_max"])
        assert 1e-5 <= lr <= 1e-2 and 5 <= kmax <= 15
        assert cfg["optim"]["lr"] == pytest.approx(lr) and cfg["history"]["train_k_max"] == kmax
        assert cfg["data"]["k_max"] == "${history.train_k_max}"  # what the sampler reads
        params.append((lr, kmax))
        val = _val_losses(trial)
        assert len(val) == 1  # validated once (fit stopped at max_steps=2 before any validation)
        losses.append(val[0])
    assert params[0] != params[1]
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert result["name"] == "optuna"
    assert result["best_value"] == pytest.approx(min(losses), rel=1e-6)
    best = params[losses.index(min(losses))]
    assert result["best_params"] == {"optim.lr": pytest.approx(best[0]), "history.train_k_max": best[1]}
