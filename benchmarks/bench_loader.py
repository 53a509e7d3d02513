"""P1: training loader, samples/s: the anchor way (decord decode of 8 frames of every sample, every step)
vs ours (the frame cache, ``pvllm.data.frame_cache``), side by side in one process, alternating rounds.
Two tables: the training samples of the bundled sample dataset through ``SampleDataset`` (mostly
160x90 clips), and the real clips of shared/data/videos (640x272 to 1280x720) through ``FrameSource``.
Checks that the cache returns exactly the frames decoding returns, and counts the video decoders each way
opens (ours: none on a hit; the entry holds the frames and the clip metadata). Each at the decoded size and
with frames resized to ``--size`` (shorter edge; the anchor then decodes and applies the same resize).

    python benchmarks/bench_loader.py [--samples 64] [--rounds 3] [--size 224]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from pvllm.data.collate import SampleDataset  # noqa: E402
from pvllm.data.dataset import load_pervidcom  # noqa: E402
from pvllm.data.frame_cache import FrameCache, FrameSource, Sampling  # noqa: E402
from pvllm.data.histories import draw_training_samples  # noqa: E402

# a PV-LLM-small training step on these 2 CPU cores (README: 40 steps in 114 s, batch 1)
PVLLM_SMALL_STEP_S = 114 / 40
OPENED = [0]  # video decoders opened (decord.VideoReader), counted below


def _count_decoders() -> None:
    import decord

    real = decord.VideoReader

    def counting(*args, **kwargs):
        OPENED[0] += 1
        return real(*args, **kwargs)

    decord.VideoReader = counting


def _timed(fn, acc: list[float], opened: list[int]):
    before = OPENED[0]
    t0 = time.perf_counter()
    out = fn()
    acc.append(time.perf_counter() - t0)
    opened.append(OPENED[0] - before)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=224)
    a = ap.parse_args()
    _count_decoders()
    ds = load_pervidcom(ROOT / "data/sample")
    samples, epoch = [], 0
    while len(samples) < a.samples:  # training draws of successive epochs (a few samples per user each)
        samples += draw_training_samples(ds, "train", epoch, 0, 5, 15)
        epoch += 1
    samples = samples[: a.samples]
    videos = sorted({s.video_id for s in samples})
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for size in (None, a.size):
            sampling = Sampling(8, size)
            t0 = time.perf_counter()
            FrameCache(tmp, sampling, create=True).build(
                [(v, str(ds.video_path(v))) for v in videos], progress=False
            )
            t_build = time.perf_counter() - t0
            anchor = SampleDataset(ds, samples, 8, False, frames=FrameSource(sampling))  # decode every sample
            ours = SampleDataset(ds, samples, 8, False, frames=FrameSource(sampling, tmp))
            t_a, t_o, o_a, o_o = [], [], [], []
            for _ in range(a.rounds):
                for dset, acc, opened in ((anchor, t_a, o_a), (ours, t_o, o_o)):
                    items = _timed(lambda d=dset: [d[i] for i in range(len(d))], acc, opened)
            same = all(np.array_equal(anchor[i]["frames"], ours[i]["frames"]) for i in range(len(samples)))
            assert ours.frames.counts["cache"] == a.rounds * len(samples) + len(samples), (
                ours.frames.summary()
            )
            ta, to = statistics.median(t_a) / len(samples), statistics.median(t_o) / len(samples)
            shape = items[0]["frames"].shape
            rows.append((size, shape, ta, to, same, t_build, sum(o_a), sum(o_o)))
    print(
        f"P1 loader: {len(samples)} training samples of data/sample ({len(videos)} clips), "
        f"median of {a.rounds} alternating rounds"
    )
    print(
        "| frames | anchor: decode (ms/sample) | ours: frame cache (ms/sample) | ratio | "
        "samples/s anchor -> ours | identical frames | decoders opened anchor / ours | cache build (s, once) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for size, shape, ta, to, same, tb, oa, oo in rows:
        label = "as decoded" if size is None else f"shorter edge {size}"
        print(
            f"| {label} (e.g. {tuple(shape)}) | {ta * 1e3:.1f} | {to * 1e3:.2f} | {ta / to:.0f}x | "
            f"{1 / ta:.0f} -> {1 / to:.0f} | {same} | {oa} / {oo} | {tb:.1f} |"
        )
    shared = sorted((ROOT.parent / "shared" / "data" / "videos").glob("*.mp4"))
    if shared:
        print(f"\nreal clips of shared/data/videos, {len(shared)} clips x {a.rounds} alternating rounds")
        print("| clip | frames | anchor: decode (ms) | ours: frame cache (ms) | ratio | identical frames | "
              "decoders opened anchor / ours |")
        print("|---|---|---|---|---|---|---|")
        with tempfile.TemporaryDirectory() as tmp:
            for size in (None, a.size):
                sampling = Sampling(8, size)
                FrameCache(tmp, sampling, create=True).build(
                    [(p.stem, str(p)) for p in shared], progress=False
                )
                anchor, ours = FrameSource(sampling), FrameSource(sampling, tmp)
                for p in shared:
                    t_a, t_o, o_a, o_o = [], [], [], []
                    for _ in range(a.rounds):
                        for src, acc, opened in ((anchor, t_a, o_a), (ours, t_o, o_o)):
                            f = _timed(lambda s=src, p=p: s.clip(p, p.stem)[0], acc, opened)
                    same = np.array_equal(anchor.get(p, p.stem), ours.get(p, p.stem))
                    ta, to = statistics.median(t_a), statistics.median(t_o)
                    rows.append((size, f.shape, ta, to, same, 0.0, sum(o_a), sum(o_o)))
                    print(
                        f"| {p.name} | {tuple(f.shape)} | {ta * 1e3:.1f} | {to * 1e3:.2f} | "
                        f"{ta / to:.0f}x | {same} | {sum(o_a)} / {sum(o_o)} |"
                    )
    worst = max(r[3] for r in rows)
    print(
        f"goal >= 100x; loader wait per sample with the cache <= {worst * 1e3:.2f} ms = "
        f"{100 * worst / PVLLM_SMALL_STEP_S:.3f}% of a PV-LLM-small train step ({PVLLM_SMALL_STEP_S:.2f} s) "
        "(goal < 2%)"
    )
    bundled = [r for r in rows[:2]]
    print(
        "fixed cost per cache read on the bundled clips (small 160x90 frames, where decoding is cheap too): "
        + ", ".join(f"{r[3] * 1e3:.2f} ms ({'as decoded' if r[0] is None else f'shorter edge {r[0]}'})"
                    for r in bundled)
    )
    print(f"decoders opened on cache hits: {sum(r[7] for r in rows)} (goal 0)")
    if not all(r[4] for r in rows) or sum(r[7] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
