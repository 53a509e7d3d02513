"""Build DeepSpeed's CPU ops once, at install time, instead of on the first run that needs them.

DeepSpeed compiles its C++ ops just in time, on first use: the shared-memory collectives of its CPU
accelerator (``deepspeed_shm_comm``, used by every DeepSpeed run on CPU processes) and ``cpu_adam``
(DeepSpeedCPUAdam, used by ZeRO-Offload). Each takes a minute or more on 2 cores. ``make install`` runs

    python -m pvllm.distributed.ds_ops

which builds them into the directory every pvllm DeepSpeed run reads (``TORCH_EXTENSIONS_DIR``, default
``~/.cache/pvllm/torch_extensions``, see ``pvllm.distributed.ds_cpu.default_extensions_dir``), the way
``DS_BUILD_OPS=1 pip install deepspeed`` would for a source install. A later run loads the built library
(the JIT cache is keyed on the sources and flags: the same venv reuses it). A compile error fails here,
naming the op, rather than in the middle of a training run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

OPS = {  # name -> (the builder's class name, what uses it)
    "shm_comm": ("ShareMemCommBuilder", "DeepSpeed's collectives on CPU processes"),
    "cpu_adam": ("CPUAdamBuilder", "ZeRO-Offload's DeepSpeedCPUAdam"),
}


def build_ops(names: list[str], log=print) -> dict[str, float]:
    """Build (or find already built) each op of ``names``; returns the seconds each took."""
    from pvllm.distributed.ds_cpu import ds_env

    os.environ.update(ds_env())  # what the CPU runs see: DS_ACCELERATOR=cpu, the same TORCH_EXTENSIONS_DIR
    from deepspeed.accelerator import get_accelerator

    took = {}
    for name in names:
        cls, used_by = OPS[name]
        builder = get_accelerator().create_op_builder(cls)
        if builder is None:
            raise RuntimeError(f"DeepSpeed's CPU accelerator has no {cls} (op {name!r}, for {used_by})")
        t0 = time.perf_counter()
        try:
            builder.load(verbose=False)
        except Exception as e:  # a missing compiler or header: say which op, then the cause
            raise RuntimeError(f"building DeepSpeed op {name!r} ({cls}, for {used_by}) failed: {e}") from e
        took[name] = time.perf_counter() - t0
        log(f"DeepSpeed op {name} ({used_by}): ready in {took[name]:.1f} s, in {os.environ['TORCH_EXTENSIONS_DIR']}")
    return took


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ops", default=",".join(OPS), help=f"comma list of {', '.join(OPS)} (default: all)")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.ops.split(",") if n.strip()]
    bad = [n for n in names if n not in OPS]
    if bad:
        p.error(f"unknown op(s) {bad}; valid: {', '.join(OPS)}")
    try:
        build_ops(names)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
