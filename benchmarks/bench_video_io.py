"""Frame reading: ours (decord get_batch of the 8 linspace indices) vs the naive way (decode every frame
in order, then keep 8), side by side in one process, alternating, median of N rounds.

    python benchmarks/bench_video_io.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from pvllm.data.video_io import frame_indices, read_frames

ROOT = Path(__file__).resolve().parents[1]
CLIPS = [ROOT / "data/sample/videos/bunny_full.mp4", ROOT / "data/sample/videos/bikes_full.mp4",
         ROOT / "data/sample/videos/bunny_03.mp4"]


def naive(path: Path, num_frames: int = 8) -> np.ndarray:
    import decord

    vr = decord.VideoReader(str(path), num_threads=1)
    frames = [vr.next().asnumpy() for _ in range(len(vr))]  # decode everything, in order
    return np.stack([frames[i] for i in frame_indices(len(frames), num_frames)])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    print(f"{'clip':<18}{'ours (s)':>10}{'naive (s)':>11}{'naive/ours':>12}")
    for clip in CLIPS:
        assert np.array_equal(read_frames(clip), naive(clip))  # same frames, or the timing means nothing
        ours, base = [], []
        for _ in range(args.rounds):  # alternate so drift hits both
            t = time.perf_counter()
            read_frames(clip)
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            naive(clip)
            base.append(time.perf_counter() - t)
        o, b = statistics.median(ours), statistics.median(base)
        print(f"{clip.name:<18}{o:>10.3f}{b:>11.3f}{b / o:>12.1f}")


if __name__ == "__main__":
    main()
