"""The models the benchmarks build, as `make demo` does: the real frozen MobileNetV2 (128 px, 2x2 tokens per
frame) in front of a tiny random LLM (``tiny``) or SmolLM2-135M (``small``: PV-LLM-small; needs the prepared
SmolLM2, see pvllm.models.smollm2)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

SPEC = {"name": "torchvision_mobilenet_v2", "num_tokens": 4, "image_size": 128}
KINDS = ("tiny", "small")


def creator(kind: str) -> Callable[[str | Path], Path]:
    """``out_dir -> out_dir``: writes the ``kind`` model (with SPEC's encoder) there."""
    if kind == "tiny":
        from pvllm.models.tiny import make_tiny_video_llava

        return lambda p: make_tiny_video_llava(p, vision_encoder=SPEC)
    if kind == "small":
        from pvllm.models.smollm2 import make_pvllm_small

        return lambda p: make_pvllm_small(p, vision_encoder=SPEC)
    raise ValueError(f"model kind must be one of {KINDS}, got {kind!r}")


def side_by_side(anchor: Callable[[], object], ours: Callable[[], object], rounds: int) -> tuple[float, float]:
    """Median wall time (s) of ``anchor`` and ``ours``, alternating in one process, ``rounds`` each."""
    import statistics
    import time

    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for fn, out in ((anchor, times[0]), (ours, times[1])):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return statistics.median(times[0]), statistics.median(times[1])


def print_ratio(anchor_label: str, ours_label: str, a: float, b: float, ratio_label: str = "ratio") -> None:
    """The benchmark's one-line table: the two times and anchor/ours."""
    w = (max(len(anchor_label), 10) + 4, max(len(ours_label), 10) + 4, max(len(ratio_label), 6) + 2)
    print(f"{anchor_label:>{w[0]}}{ours_label:>{w[1]}}{ratio_label:>{w[2]}}")
    print(f"{a:>{w[0]}.4f}{b:>{w[1]}.4f}{a / b:>{w[2]}.2f}")
