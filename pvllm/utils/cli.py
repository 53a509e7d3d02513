"""Entry-point helpers: a clear error prints its message, not a Hydra traceback above it; a dataclass config
from parsed command-line arguments."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def clear_errors(*types: type[BaseException]) -> Iterator[None]:
    """Turn an error of ``types``, raised directly or inside ``hydra.utils.instantiate`` (messages written for
    the user: an invalid config, a missing key, a conflicting run directory) into ``SystemExit("error: ...")``
    (exit status 1, the message alone on stderr). ``HYDRA_FULL_ERROR=1`` keeps the traceback; so does a job that
    a submitit launcher runs in its own process (a SystemExit there would end the process without the result
    file submitit waits for)."""
    try:
        yield
    except Exception as e:
        from hydra.core.hydra_config import HydraConfig
        from hydra.errors import InstantiationException

        # hydra.utils.instantiate wraps what a constructor raises (a missing key): the message is the cause's
        cause = e.__cause__ if isinstance(e, InstantiationException) else e
        if not isinstance(cause, types) or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        where = ""
        if HydraConfig.initialized():
            hc = HydraConfig.get()
            if hc.mode.name == "MULTIRUN":
                if not str(hc.launcher.get("_target_", "")).endswith("BasicLauncher"):
                    raise
                where = f" (job {hc.job.num}: {' '.join(hc.overrides.task)})"
        raise SystemExit(f"error{where}: {cause}") from None


def config_from_args(cls: type, args: argparse.Namespace, **given: Any) -> Any:
    """``cls(...)`` (a dataclass) with each field the parsed ``args`` has under the same name, ``given`` (other
    names, converted values) winning; a field neither has keeps its default."""
    kw = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    return cls(**{**kw, **given})
