"""The video test of ``make demo``: does the video a sample is shown change what the model says?

For every evaluation sample of a histories file (history k, the validation users), with the generator's
public scoring and generation (``score_candidates``, ``generate``):

(a) the true comment's mean log-probability per token with its own video, with a mismatched video of the
    OTHER source (across) and of the SAME source (within: the clip sharing the fewest content words), and
    with no video; paired differences own - mismatched with bootstrap intervals over samples;
(b) which video: the own video ranked among N candidate videos (own, the two mismatched ones, the rest
    drawn seeded; --n-videos, default 4) by log p(true comment | video, history): R@1 / MRR against chance;
(c) content accuracy: greedy generations with the own and the mismatched videos; a generation fits a video
    when it names more of that video's content words than of the other's (a word list per source and per
    clip, ``--content-words``); own - mismatched, across and within sources.

Writes ``OUT/video_test.jsonl`` (per sample; resumable: finished samples are kept), ``OUT/generations_*.jsonl``
(resumable), ``OUT/video_test.json`` (the statistics) and prints the tables.

    python -m pvllm.video_test --model DIR --data data/sample --histories H.jsonl --out DIR \\
        [--feature-cache DIR] [--own-predictions predictions.jsonl] [--n-videos 8] [--no-generate]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from pvllm.evaluation import to_request
from pvllm.metrics.video_ablation import content_fit, paired_interval, video_retrieval
from pvllm.reports.video_ablation import format_video_test
from pvllm.utils.jsonl import append_jsonl, load_jsonl, read_jsonl_tolerant


def plan_videos(sample_id: str, video_id: str, videos: dict[str, dict], n: int, seed: int) -> dict[str, Any]:
    """The mismatched videos and the candidate videos of one sample, drawn from its id and ``seed`` only.

    ``videos``: video_id -> {"source", "words"}. across: a video of another source; within: a video of the
    same source whose word list shares the fewest words with the target's; candidates: own, across, within,
    then other videos, shuffled (``truth_index``: the own video's place)."""
    if video_id not in videos:
        raise ValueError(f"sample {sample_id}: video {video_id} has no entry in the content words file")
    rng = random.Random(f"video_test:{seed}:{sample_id}")
    src, words = videos[video_id]["source"], set(videos[video_id]["words"])
    ids = sorted(videos)
    other = [v for v in ids if videos[v]["source"] != src]
    same = [v for v in ids if videos[v]["source"] == src and v != video_id]
    if not other or not same:
        raise ValueError(f"sample {sample_id}: the video test needs another video of the same source and one of "
                         f"another source than {src!r}")
    fewest = min(len(words & set(videos[v]["words"])) for v in same)
    across = rng.choice(other)
    within = rng.choice([v for v in same if len(words & set(videos[v]["words"])) == fewest])
    if n < 3 or n > len(ids):
        raise ValueError(f"--n-videos must be in 3..{len(ids)} (own, across, within, others), got {n}")
    rest = [v for v in ids if v not in (video_id, across, within)]
    cands = [video_id, across, within, *rng.sample(rest, n - 3)]
    rng.shuffle(cands)
    return {"across": across, "within": within, "candidates": cands, "truth_index": cands.index(video_id)}


def _same_model(records, model_id: str, path: Path, verb: str) -> None:
    """Records resumed from ``path`` must come from the model running now."""
    for r in records:
        if r["model"] != model_id:
            raise ValueError(f"{path}: sample {r['sample_id']} was {verb} by {r['model']}, not {model_id}; "
                             "use another --out")


def _generate(gen, rows: list[dict], shown_key: str, ds, out: Path) -> dict[str, str | None]:
    """Greedy generations with each row's ``shown_key`` video (resumable: ids already in ``out`` are kept)."""
    done = {r["sample_id"]: r for r in read_jsonl_tolerant(out)}
    todo = [r for r in rows if r["sample_id"] not in done]
    step = max(1, gen.batch_size) * 2
    for i in range(0, len(todo), step):
        chunk = todo[i: i + step]
        res = gen.generate([to_request(dict(r, shown_video_id=r[shown_key]), ds) for r in chunk])
        recs = [{"sample_id": r["sample_id"], "shown_video_id": r[shown_key], "text": x.text, "error": x.error,
                 "model": gen.model_id} for r, x in zip(chunk, res)]
        append_jsonl(out, recs)
        done.update({x["sample_id"]: x for x in recs})
    _same_model(done.values(), gen.model_id, out, "generated")
    return {s: r["text"] for s, r in done.items()}


def _own_predictions(path: Path, gen, rows: list[dict]) -> dict[str, str | None]:
    """The own-video generations of an evaluation run of the SAME model and decoding (checked)."""
    preds = {p["sample_id"]: p for p in load_jsonl(path)}
    for r in rows:
        p = preds.get(r["sample_id"])
        if p is None:
            raise ValueError(f"{path}: no prediction for {r['sample_id']}")
        if p["model"] != gen.model_id or p["generation"] != gen.generation_config or p["video_mode"] != "own":
            raise ValueError(f"{path}: {r['sample_id']} was generated by {p['model']} with {p['generation']} "
                             f"(video {p['video_mode']}), not by {gen.model_id} with {gen.generation_config}")
    return {r["sample_id"]: preds[r["sample_id"]]["text"] for r in rows}


def statistics(items: list[dict], videos: dict[str, dict], sources: dict[str, list[str]],
               texts: dict[str, dict[str, str | None]] | None, *, resamples: int, seed: int) -> dict[str, Any]:
    """(a), (b) and (c) from the per-sample records (``texts``: condition -> sample_id -> generation)."""
    users = {it["sample_id"]: it["user_id"] for it in items}
    kw = {"resamples": resamples, "seed": seed}
    out: dict[str, Any] = {"n_samples": len(items), "n_users": len(set(users.values())),
                           "n_videos": items[0]["n_candidates"] if items else 0}
    conds = ("own", "across", "within", *(("none",) if all(it["logp_none"] is not None for it in items) else ()))
    logp = {c: {it["sample_id"]: it[f"logp_{c}"] for it in items} for c in conds}
    out["logp_mean"] = {c: sum(v.values()) / len(v) for c, v in logp.items()}
    out["a"] = {c: paired_interval({s: logp["own"][s] - logp[c][s] for s in logp["own"]}, users, **kw)
                for c in conds[1:]}
    out["b"] = video_retrieval([{"sample_id": it["sample_id"], "scores": it["video_scores"],
                                 "truth_index": it["truth_index"]} for it in items], users, **kw)
    if texts is None:
        return out
    c: dict[str, Any] = {}
    for kind in ("across", "within"):
        fit_own, fit_mis, fit_shown, fit_ref = {}, {}, {}, {}
        for it in items:
            s, v, m = it["sample_id"], it["video_id"], it[kind]
            if kind == "across":
                tw, ow = sources[videos[v]["source"]], sources[videos[m]["source"]]
            else:
                tw, ow = videos[v]["words"], videos[m]["words"]
            fit_own[s] = content_fit(texts["own"][s], tw, ow)
            fit_mis[s] = content_fit(texts[kind][s], tw, ow)
            fit_shown[s] = content_fit(texts[kind][s], ow, tw)
            fit_ref[s] = content_fit(it["reference"], tw, ow)
        n = len(items)
        c[kind] = {"own_video": 100.0 * sum(fit_own.values()) / n,
                   "mismatched_video": 100.0 * sum(fit_mis.values()) / n,
                   "mismatched_fits_shown": 100.0 * sum(fit_shown.values()) / n,
                   "reference": 100.0 * sum(fit_ref.values()) / n,
                   "difference": paired_interval({s: 100.0 * (fit_own[s] - fit_mis[s]) for s in fit_own}, users, **kw),
                   "identical_generations": sum(texts["own"][it["sample_id"]] == texts[kind][it["sample_id"]]
                                                for it in items)}
    out["c"] = c
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pvllm.video_test", description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="HF model directory (a train run's hf_model)")
    ap.add_argument("--data", required=True, help="dataset directory")
    ap.add_argument("--histories", required=True, help="histories.jsonl of an evaluation (history k)")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--content-words", help="word lists per source and per video (default DATA/content_words.json)")
    ap.add_argument("--feature-cache", help="frozen-encoder feature cache built for this model and data")
    ap.add_argument("--own-predictions", help="predictions.jsonl of the same model and decoding with the own "
                                              "videos (else generated here)")
    ap.add_argument("--n-videos", type=int, default=4, help="candidate videos per sample for (b): own, across, "
                                                          "within, then others (each costs one prompt pass)")
    ap.add_argument("--with-none", action="store_true", help="also score the true comment without a video")
    ap.add_argument("--max-samples", type=int, help="only the first samples of the histories file (a quick look)")
    ap.add_argument("--no-generate", action="store_true", help="(a) and (b) only: no generation, no (c)")
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0, help="draws the mismatched and candidate videos")
    ap.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    ap.add_argument("--title", default="Video test", help="title of the printed tables")
    args = ap.parse_args(argv)

    from pvllm.data.dataset import load_pervidcom
    from pvllm.generators.video_llava import PVLLMGenerator

    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = load_pervidcom(args.data)
    words = json.loads(Path(args.content_words or Path(args.data) / "content_words.json").read_text("utf-8"))
    videos, sources = words["videos"], words["sources"]
    missing = sorted(set(ds.videos) - set(videos))
    if missing:
        print(f"error: {len(missing)} videos have no content words (first: {missing[:3]})", file=sys.stderr)
        return 1
    rows = load_jsonl(Path(args.histories))[: args.max_samples]
    if not rows or any(r["history_mode"] != "k" for r in rows):
        print(f"error: {args.histories}: the video test needs a histories file of history mode k", file=sys.stderr)
        return 1
    gen = PVLLMGenerator(pretrained=args.model, greedy=True, batch_size=4, feature_cache=args.feature_cache,
                         sampling={"max_new_tokens": args.max_new_tokens})
    try:
        for r in rows:
            r.update(plan_videos(r["sample_id"], r["video_id"], videos, args.n_videos, args.seed))
        scores_file = out / "video_test.jsonl"
        done = {x["sample_id"]: x for x in read_jsonl_tolerant(scores_file)}
        _same_model(done.values(), gen.model_id, scores_file, "scored")
        for i, r in enumerate(rows):
            if r["sample_id"] in done:
                continue
            shown = [*r["candidates"], *([None] if args.with_none else [])]  # every candidate video (, no video)
            reqs = [to_request(dict(r, shown_video_id=v), ds) for v in shown]
            scored = gen.score_candidates(reqs, [[r["reference"]]] * len(reqs))
            scores = [s[0] if s is not None else None for s in scored]
            if any(s is None for s in scores):
                raise RuntimeError(f"{r['sample_id']}: scoring failed (a video could not be read)")
            by_video = dict(zip(r["candidates"], scores))
            rec = {"sample_id": r["sample_id"], "user_id": r["user_id"], "video_id": r["video_id"],
                   "reference": r["reference"], "model": gen.model_id, "across": r["across"], "within": r["within"],
                   "candidates": r["candidates"], "truth_index": r["truth_index"], "n_candidates": len(r["candidates"]),
                   "video_scores": scores[: len(r["candidates"])], "logp_own": by_video[r["video_id"]],
                   "logp_across": by_video[r["across"]], "logp_within": by_video[r["within"]],
                   "logp_none": scores[-1] if args.with_none else None}
            append_jsonl(scores_file, [rec])
            done[r["sample_id"]] = rec
            if (i + 1) % 10 == 0:
                print(f"video test: scored {i + 1}/{len(rows)} samples ({time.perf_counter() - t0:.0f} s)", flush=True)
        items = [done[r["sample_id"]] for r in rows]
        texts = None
        if not args.no_generate:
            own = (_own_predictions(Path(args.own_predictions), gen, rows) if args.own_predictions
                   else _generate(gen, [dict(r, own=r["video_id"]) for r in rows], "own", ds,
                             out / "generations_own.jsonl"))
            texts = {"own": own}
            for kind in ("across", "within"):
                texts[kind] = _generate(gen, rows, kind, ds, out / f"generations_{kind}.jsonl")
    finally:
        gen.close()
    stats = statistics(items, videos, sources, texts, resamples=args.resamples, seed=args.seed)
    stats.update(model=gen.model_id, data=str(args.data), histories=str(args.histories), seed=args.seed,
                 resamples=args.resamples, ci="95% percentile bootstrap over samples",
                 seconds=round(time.perf_counter() - t0, 1))
    (out / "video_test.json").write_text(json.dumps(stats, indent=2) + "\n")
    print(format_video_test(stats, title=args.title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
