"""pvllm.utils.lightning without Lightning: the rank RankedLogger reads, and evaluate.py's start-up."""

import subprocess
import sys

from lightning_utilities.core.rank_zero import rank_zero_only

from pvllm.utils.lightning import RankedLogger, global_rank
from tests.conftest import REPO


def test_rank_is_what_lightning_set_else_the_env(monkeypatch):
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delattr(rank_zero_only, "rank", raising=False)
    assert global_rank() == 0
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert global_rank() == 3
    monkeypatch.setenv("LOCAL_RANK", "2")  # Lightning's order: RANK, LOCAL_RANK, SLURM_PROCID, JSM_NAMESPACE_RANK
    assert global_rank() == 2
    monkeypatch.setattr(rank_zero_only, "rank", 1, raising=False)  # set by a strategy once training runs
    assert global_rank() == 1


def test_logger_is_silent_off_rank_zero(monkeypatch, caplog):
    caplog.set_level("INFO")
    log = RankedLogger("pvllm.test_ranked")
    monkeypatch.setattr(rank_zero_only, "rank", 1, raising=False)
    log.info("from rank 1")
    monkeypatch.setattr(rank_zero_only, "rank", 0, raising=False)
    log.info("from rank 0")
    assert [r.getMessage() for r in caplog.records if r.name == "pvllm.test_ranked"] == ["from rank 0"]


def test_evaluate_starts_without_lightning():
    """Lightning's import (torchmetrics, scipy.signal, torchvision) was half of evaluate.py's start-up."""
    code = "import sys, evaluate; print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', " \
           "'torchmetrics', 'pytorch_lightning')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
