"""``python -m pvllm.data.collect {youtube,import} ...``: write a raw directory for pvllm.data.build.

Exit status: 0 done, 75 stopped by quota (state saved; run the same command again tomorrow).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pvllm.data.collect.importer import import_comments
from pvllm.data.collect.youtube import API_KEY_ENV, CollectConfig, MissingApiKeyError, YouTubeCollector
from pvllm.data.privacy import MissingKeyError
from pvllm.utils.cli import config_from_args
from pvllm.utils.secrets import install_redaction

EXIT_QUOTA = 75  # EX_TEMPFAIL: try again later


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pvllm.data.collect", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    yt = sub.add_parser("youtube", help=f"collect from the YouTube Data API v3 (key in ${API_KEY_ENV})")
    yt.add_argument("--out", type=Path, required=True, help="raw directory (created; a rerun resumes)")
    src = yt.add_mutually_exclusive_group(required=True)
    src.add_argument("--query", help="search.list query for Shorts (100 quota units per page)")
    src.add_argument("--playlist-id", help="list this playlist instead (1 unit per page)")
    src.add_argument("--video-ids", nargs="+", help="collect exactly these video ids")
    yt.add_argument("--max-videos", type=int, default=50)
    yt.add_argument("--region-code", default=None)
    yt.add_argument("--quota-budget", type=int, default=10_000, help="units per day this run may use")
    yt.add_argument("--max-retries", type=int, default=4, help="retries of HTTP 429/5xx per call")
    yt.add_argument("--backoff-s", type=float, default=2.0, help="first retry delay, doubled each retry")
    yt.add_argument("--endpoint", default=None, help="API root, e.g. http://127.0.0.1:8080 (default Google)")
    yt.add_argument("--api-key-env", default=API_KEY_ENV, help="the NAME of the variable holding the API key")

    im = sub.add_parser("import", help="import an existing comment JSONL (author re-keyed with HMAC)")
    im.add_argument("--comments", type=Path, required=True)
    im.add_argument("--videos", type=Path, default=None, help="JSONL with video_id, title[, likes]")
    im.add_argument("--title-field", default="video_title", help="per-comment title field if no videos file")
    im.add_argument(
        "--exclude", action="append", default=[], metavar="FIELD=VALUE", help="drop matching comments"
    )
    im.add_argument("--out", type=Path, required=True)

    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    install_redaction()  # the API key (request URLs carry key=..., error bodies may echo it): never shown
    try:
        return _run(args)
    except (MissingKeyError, MissingApiKeyError) as e:  # a setup problem: say what to set, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.cmd == "import":
        exclude = dict(e.split("=", 1) for e in args.exclude)
        summary = import_comments(args.comments, args.out, args.videos, args.title_field, exclude)
        print(json.dumps(summary, indent=1))
        return 0
    cfg = config_from_args(CollectConfig, args, out_dir=args.out, video_ids=args.video_ids or [])
    summary = YouTubeCollector(cfg).run()
    print(json.dumps(summary, indent=1, ensure_ascii=False))
    return EXIT_QUOTA if summary["stopped"] else 0


if __name__ == "__main__":
    sys.exit(main())
