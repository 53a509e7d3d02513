"""Find the unreadable videos of a dataset before training (parallel), and write their list.

    python -m pvllm.data.check_videos DATA_ROOT [--out FILE] [--workers N] [--num-frames 8]
    python train.py ... data.exclude_videos=FILE     # their samples are left out (logged and counted)

Exit status: 0 all readable; 3 (``EXIT_UNREADABLE``) unreadable files found, their list written; any other
non-zero: the check itself failed (no list to trust). docs/cluster.md shows a script telling them apart.

Each video is decoded exactly as training reads it (``read_frames``: ``num_frames`` uniform frames),
so a file on the list would fail in the loop and a file not on it will not. ``FILE`` (default
``DATA_ROOT/unreadable_videos.jsonl``) holds one ``{"video_id", "file", "error"}`` line per unreadable
video; an empty file means all were readable. Training with the list never substitutes another sample:
the affected samples are dropped from the draw, identically on every rank.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from pvllm.utils.jsonl import read_jsonl, write_jsonl

log = logging.getLogger(__name__)
DEFAULT_NAME = "unreadable_videos.jsonl"
EXIT_UNREADABLE = 3  # the check ran and found unreadable files (their list is written); 1 = it failed


def _check_one(args: tuple[str, int]) -> str | None:
    from pvllm.data.video_io import VideoReadError, read_frames

    path, num_frames = args
    try:
        read_frames(path, num_frames)
    except VideoReadError as e:
        return str(e)
    return None


def check_videos(files: list[str], num_frames: int = 8, workers: int = 1) -> dict[str, str]:
    """file -> error for every file that ``read_frames`` cannot decode (``workers`` processes)."""
    jobs = [(str(f), num_frames) for f in files]
    if workers <= 1 or len(jobs) <= 1:
        results = [_check_one(j) for j in jobs]
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            results = list(pool.map(_check_one, jobs, chunksize=max(1, len(jobs) // (8 * workers))))
    return {f: err for (f, _), err in zip(jobs, results) if err is not None}


def load_unreadable(path: str | os.PathLike, ds) -> dict[str, str]:
    """video_id -> error from a list written by this module, checked against the dataset ``ds``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"data.exclude_videos: no such file {str(path)!r} (write it with "
            f"`python -m pvllm.data.check_videos {ds.root} --out {path}`)")
    out = {}
    for lineno, rec in read_jsonl(path):
        vid = rec.get("video_id")
        if vid not in ds.videos:
            raise ValueError(f"{path}:{lineno}: video_id {vid!r} is not in {ds.root}/videos.jsonl "
                             "(a list written for another dataset?)")
        out[vid] = str(rec.get("error", ""))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pvllm.data.check_videos", description=__doc__.split("\n")[0])
    ap.add_argument("root", help="a PerVidCom dataset directory")
    ap.add_argument("--out", default=None, help=f"the list to write (default ROOT/{DEFAULT_NAME})")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decoding processes")
    ap.add_argument("--num-frames", type=int, default=8, help="frames decoded per video (as data.num_frames)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from pvllm.data.dataset import load_pervidcom

    ds = load_pervidcom(args.root, check_files=False)  # a missing file is reported, not fatal
    ids = sorted(ds.videos)
    files = [str(ds.video_path(v)) for v in ids]
    bad = check_videos(files, args.num_frames, args.workers)
    out = Path(args.out) if args.out else Path(args.root) / DEFAULT_NAME
    write_jsonl(out, [{"video_id": v, "file": ds.videos[v].file, "error": bad[f]}
                      for v, f in zip(ids, files) if f in bad])
    for f, err in sorted(bad.items()):
        log.warning("unreadable: %s", err if f in err else f"{f}: {err}")
    log.info("checked %d videos: %d unreadable, list written to %s", len(files), len(bad), out)
    return EXIT_UNREADABLE if bad else 0


if __name__ == "__main__":
    sys.exit(main())
