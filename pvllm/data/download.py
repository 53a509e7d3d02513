"""Download the videos of a dataset with yt-dlp: resumable, rate-limited, failures listed at the end.

``python -m pvllm.data.download --videos DATASET/videos.jsonl --out DATASET/videos --rate-limit 2M``

Resumable three ways: a file already there is skipped without a request; yt-dlp's
``download_archive`` records finished downloads; ``continuedl`` resumes a ``.part`` file with a
Range request. Failed ids are written to ``failed_downloads.jsonl`` and listed on exit (status 1).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pvllm.utils.jsonl import read_jsonl, write_jsonl

log = logging.getLogger(__name__)
URL_TEMPLATE = "https://www.youtube.com/shorts/{video_id}"
VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".mov")


def video_stem(video_id: str) -> str:
    """File name stem for a video id: the id itself when filesystem-safe, else a stable hash."""
    if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", video_id):
        return video_id
    return "v_" + hashlib.sha256(video_id.encode("utf-8")).hexdigest()[:16]


def find_video_file(out_dir: Path, video_id: str) -> Path | None:
    for ext in VIDEO_EXTS:
        p = out_dir / (video_stem(video_id) + ext)
        if p.is_file():
            return p
    return None


@dataclass
class DownloadReport:
    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # file already present
    failed: list[dict[str, str]] = field(default_factory=list)  # {"video_id", "url", "error"}


def download_videos(
    items: list[tuple[str, str]],
    out_dir: str | Path,
    rate_limit: int | None = None,
    retries: int = 3,
    fmt: str = "best[ext=mp4]/best",
    socket_timeout: float = 30.0,
) -> DownloadReport:
    """Download ``(video_id, url)`` pairs to ``out_dir/<stem>.<ext>``; never raises for one bad item."""
    import yt_dlp

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = DownloadReport()
    for video_id, url in items:
        if find_video_file(out_dir, video_id):
            report.skipped.append(video_id)
            continue
        opts: dict[str, Any] = {
            "outtmpl": str(out_dir / (video_stem(video_id) + ".%(ext)s")),
            "format": fmt,
            "download_archive": str(out_dir / "download_archive.txt"),
            "continuedl": True,  # resume .part files with a Range request
            "ratelimit": rate_limit,  # bytes per second, None = unlimited
            "retries": retries,  # media GETs; a failing page fetch is not retried by yt-dlp
            "socket_timeout": socket_timeout,
            "quiet": True,
            "noprogress": True,
            "no_warnings": True,
            "noplaylist": True,
        }
        try:
            with yt_dlp.YoutubeDL(opts) as ydl:
                rc = ydl.download([url])
            if rc != 0:
                raise RuntimeError(f"yt-dlp returned {rc}")
            if not find_video_file(out_dir, video_id):
                # an archive hit with the file deleted since: yt-dlp skipped it silently
                raise RuntimeError("no file after download (listed in download_archive.txt but missing?)")
            report.downloaded.append(video_id)
        except Exception as e:  # yt_dlp.DownloadError and friends: record, go on with the next
            report.failed.append(
                {"video_id": video_id, "url": url, "error": f"{type(e).__name__}: {e}"[:500]}
            )
            log.warning("download failed: %s (%s)", video_id, e)
    write_jsonl(out_dir / "failed_downloads.jsonl", report.failed)
    return report


def main(argv: list[str] | None = None) -> int:
    from yt_dlp.utils import parse_bytes

    p = argparse.ArgumentParser(prog="python -m pvllm.data.download", description=__doc__)
    p.add_argument("--videos", type=Path, required=True, help="JSONL with video_id (and optional url)")
    p.add_argument("--out", type=Path, required=True, help="folder for the files (dataset's videos/)")
    p.add_argument("--rate-limit", default=None, help="bytes/s, e.g. 500K or 2M (default unlimited)")
    p.add_argument("--retries", type=int, default=3)
    p.add_argument("--format", default="best[ext=mp4]/best", help="yt-dlp format selector")
    p.add_argument("--url-template", default=URL_TEMPLATE, help="for records without a url")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rate = parse_bytes(args.rate_limit) if args.rate_limit else None
    if args.rate_limit and rate is None:
        p.error(f"--rate-limit {args.rate_limit!r}: not a byte count (e.g. 500K, 2M)")
    items = [
        (rec["video_id"], rec.get("url") or args.url_template.format(video_id=rec["video_id"]))
        for _, rec in read_jsonl(args.videos)
    ]
    report = download_videos(items, args.out, rate, args.retries, args.format)
    print(
        f"downloaded {len(report.downloaded)}, already present {len(report.skipped)}, failed {len(report.failed)}"
    )
    for f in report.failed:
        print(f"FAILED {f['video_id']} {f['url']}: {f['error']}")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
