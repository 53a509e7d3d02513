"""Issue 25 item 10: an error whose message says what to fix is printed alone, not under a Hydra traceback,
unless HYDRA_FULL_ERROR=1 (docs/bad_inputs.md). The entry points run in-process through ``hydra.main``: the
message comes back as ``SystemExit("error: ...")``, which Python prints alone on stderr with exit status 1
(tests/test_secrets.py checks that stderr in a subprocess); without it Hydra prints a traceback and exits."""

from __future__ import annotations

import sys

import pytest

from pvllm.config import ConfigError
from tests.conftest import REPO
from tests.entrypoints import entry_module


def _main(script: str, tmp_path, monkeypatch, *overrides: str) -> BaseException:
    monkeypatch.setattr(sys, "argv", [
        f"{script}.py", f"--config-path={REPO / 'conf'}", f"hydra.run.dir={tmp_path / script}",
        "hydra/job_logging=none", "hydra/hydra_logging=none", f"paths.output_root={tmp_path / 'out'}", *overrides])
    monkeypatch.setenv("WANDB_MODE", "disabled")
    with pytest.raises(BaseException) as e:
        entry_module(script).main()
    return e.value


def test_clear_errors_print_the_message_alone_unless_hydra_full_error(tmp_path, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    bad_root = ("data.root=/nonexistent/pvllm-data", "generator=text_only")
    for script in ("evaluate", "train"):
        e = _main(script, tmp_path, monkeypatch, *bad_root[: 2 if script == "evaluate" else 1])
        assert type(e) is SystemExit and str(e.code).startswith("error: invalid config:\n"), repr(e)
        assert "  - data.root: no such directory '/nonexistent/pvllm-data'" in str(e.code)
    unset = "PVLLM_TEST_UNSET_VARIABLE"
    monkeypatch.delenv(unset, raising=False)
    e = _main("evaluate", tmp_path, monkeypatch, "generator=openai_compatible", "generator.model=m",
              f"generator.api_key_env={unset}", "generator.base_url=http://127.0.0.1:9/v1", "rater=lexical")
    # raised inside hydra.utils.instantiate: the InstantiationException around it is unwrapped
    assert type(e) is SystemExit and str(e.code) == (
        f"error: environment variable {unset} is not set: the openai_compatible generator (m) needs it")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # the exception itself, with its traceback
    e = _main("evaluate", tmp_path, monkeypatch, *bad_root)
    assert type(e) is ConfigError and "data.root: no such directory" in str(e)
