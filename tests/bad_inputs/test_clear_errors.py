"""Issue 25 item 10: an error whose message says what to fix is printed alone, not under a Hydra traceback,
unless HYDRA_FULL_ERROR=1 (docs/bad_inputs.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _start(tmp_path: Path, name: str, *args: str, full: bool = False) -> subprocess.Popen:
    env = {**os.environ, "PVLLM_OUTPUTS": str(tmp_path / "out"), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    if full:
        env["HYDRA_FULL_ERROR"] = "1"
    return subprocess.Popen([sys.executable, "evaluate.py", f"hydra.run.dir={tmp_path / name}", *args], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_clear_errors_print_the_message_alone_unless_hydra_full_error(tmp_path):
    unset = "PVLLM_TEST_UNSET_VARIABLE"
    os.environ.pop(unset, None)
    procs = {  # started together: three interpreter start-ups at once
        "config": _start(tmp_path, "a", "data.root=/nonexistent/pvllm-data", "generator=text_only"),
        "config_full": _start(tmp_path, "b", "data.root=/nonexistent/pvllm-data", "generator=text_only", full=True),
        "key": _start(tmp_path, "c", "generator=openai_compatible", "generator.model=m", f"generator.api_key_env={unset}",
                      "generator.base_url=http://127.0.0.1:9/v1", "rater=lexical", "split=test"),
    }  # fmt: skip
    out = {k: (p.wait(timeout=600), *p.communicate()) for k, p in procs.items()}
    rc, _, err = out["config"]
    assert rc == 1 and err.startswith("error: invalid config:\n") and "Traceback" not in err, err
    assert "  - data.root: no such directory '/nonexistent/pvllm-data'" in err
    assert "HYDRA_FULL_ERROR" not in err and "Error executing job" not in err
    rc, _, err = out["config_full"]
    assert rc == 1 and "Traceback" in err and "pvllm.config.ConfigError: invalid config:" in err
    rc, _, err = out["key"]  # raised inside hydra.utils.instantiate: its InstantiationException is unwrapped
    assert rc == 1 and "Traceback" not in err and "InstantiationException" not in err, err
    assert f"error: environment variable {unset} is not set: the openai_compatible generator" in err
