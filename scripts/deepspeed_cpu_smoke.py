"""DeepSpeed ZeRO-2/ZeRO-3 on CPU processes with the project's strategy dicts, then consolidation.

    python scripts/deepspeed_cpu_smoke.py [--stages deepspeed_zero2 deepspeed_zero3] [--nproc 2] [--out DIR]

Trains the tiny random Video-LLaVA (pvllm.models.tiny, through pvllm.models.builder) 2 steps per
strategy on N gloo processes (DS_ACCELERATOR=cpu), consolidates each ZeRO checkpoint into an HF
directory and checks it against a single-process replay of the same steps. Prints one line per stage.
Use it to check a DeepSpeed install without a GPU; tests/test_deepspeed.py runs the same code.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pvllm.distributed import consolidate_zero_checkpoint  # noqa: E402
from pvllm.distributed.ds_cpu import launch, reference_losses  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--stages",
        nargs="+",
        default=["deepspeed_zero2", "deepspeed_zero3"],
        help="conf/strategy names (deepspeed_zero2_offload also works; compiles cpu_adam once)",
    )
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--out", default=None, help="output dir (default: a temp dir)")
    a = p.parse_args()
    out = Path(a.out or tempfile.mkdtemp(prefix="pvllm_ds_smoke_"))
    from pvllm.models.tiny import make_tiny_video_llava

    tiny = out / "tiny"
    if not (tiny / "config.json").is_file():
        make_tiny_video_llava(tiny)
    lr, seed = 1e-3, 0
    ref, ref_model = reference_losses(str(tiny), a.nproc, a.steps, lr, seed)
    ref_state = ref_model.state_dict()
    from transformers import VideoLlavaForConditionalGeneration

    ok = True
    for name in a.stages:
        t0 = time.perf_counter()
        recs = launch(
            ROOT / "conf" / "strategy" / f"{name}.yaml", tiny, out / name, a.nproc, a.steps, lr, seed
        )
        hf = consolidate_zero_checkpoint(out / name / "ckpt", out / name / "hf_model", tiny)
        got = VideoLlavaForConditionalGeneration.from_pretrained(hf).state_dict()
        diff = max((got[k] - ref_state[k]).abs().max().item() for k in ref_state)
        loss_diff = max(abs(x - y) for r in recs for x, y in zip(r["losses"], ref[r["rank"]]))
        good = diff < 1e-5 and loss_diff < 1e-5
        ok &= good
        print(f"{name}: ZeRO stage {recs[0]['zero_stage']} x {recs[0]['world_size']} procs, losses "
              f"{[round(x, 4) for x in recs[0]['losses']]}, |loss-ref| {loss_diff:.1e}, |weights-ref| {diff:.1e}, "
              f"{time.perf_counter() - t0:.0f} s -> {hf} {'OK' if good else 'MISMATCH'}")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
