"""Ranking evaluation (LiveBot, Ma et al. 2018): rank the true comment among N candidates by likelihood.

A judge-free test of personalization. For each evaluation sample the candidates are the ground truth
plus N-1 comments of *other users on the same video* (filled from other videos when that video has too
few, and flagged), drawn once (seeded) into a candidates file that every model ranks. A model scores
each candidate by its length-normalized log-likelihood as the reply to the Figure-5 prompt
(``Generator.score_candidates``); the rank of the ground truth gives Recall@1/5/10, MRR (x100) and the
mean rank, reported beside their chance levels.

``ranking.score`` (:data:`SCORES`) chooses the score of a candidate ``c`` (log-probabilities of its reply
tokens, end of turn included, after the Figure-5 prompt with the video):
- ``mean``: the mean log-probability per token (length-normalized log-likelihood; the default);
- ``sum``: the sum, log p(c | video, history);
- ``pmi``: log p(c | video, history) - log p(c | video, no history), both sums over the same tokens, the
  second after the same prompt without the history: how much the history raises the candidate, which
  removes the pull of generic lines (the no-history request of a ``history.mode=none`` run is the same
  prompt, so every PMI is 0 there: chance).

Ties are resolved in expectation (a random order among equal scores): the ground truth with ``g``
strictly better and ``t`` equal competitors is equally likely at ranks g+1 .. g+t+1. So the metrics do
not depend on candidate order, and a constant scorer gets exactly chance.
"""

from __future__ import annotations

import logging
import random
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pvllm.data.dataset import PerVidCom
from pvllm.utils.jsonl import load_jsonl, write_jsonl

log = logging.getLogger(__name__)
RECALL_AT = (1, 5, 10)
SCORES = ("mean", "sum", "pmi")
CANDIDATES_VERSION = 1


def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def _take(
    pool: Sequence, source: str, user: str, want: int, rng: random.Random, seen: set[str], picked: list[dict]
) -> None:
    """Append distinct comments of users other than ``user`` from ``pool`` (shuffled) until ``want``."""
    pool = [c for c in pool if c.user_id != user]
    rng.shuffle(pool)
    for c in pool:
        if len(picked) == want:
            return
        key = _norm(c.text)
        if key and key not in seen:
            seen.add(key)
            picked.append({"text": c.text, "comment_id": c.comment_id, "source": source})


PROTOCOLS = ("same_video", "livebot")


def build_candidates(rows: Sequence[dict], ds: PerVidCom, n: int = 20, seed: int = 0,
                     protocol: str = "same_video", livebot: dict | None = None) -> list[dict]:
    """One candidates row per evaluation sample: the ground truth and ``n - 1`` distractors, shuffled.

    ``protocol="livebot"``: LiveBot's candidate set (Ma et al. 2019) instead, see ``build_livebot_candidates``.

    Distractors are comments by other users (never the sample's user) on the target video, distinct in
    text (after NFKC/case/space normalization) from the truth and each other; when the video has too few,
    the rest come from other videos and the row says how many (``n_from_other_videos``). Seeded per
    sample id, so adding samples does not change the others.
    """
    if n < 2:
        raise ValueError(f"ranking needs at least 2 candidates, got n={n}")
    if protocol == "livebot":
        return build_livebot_candidates(rows, ds, n, seed, **(livebot or {}))
    if protocol != "same_video":
        raise ValueError(f"unknown ranking.protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    by_video: dict[str, list] = {}
    for c in sorted(ds.comments.values(), key=lambda c: c.comment_id):
        by_video.setdefault(c.video_id, []).append(c)
    all_videos = sorted(by_video)
    out = []
    for r in rows:
        rng = random.Random(f"candidates:{seed}:{r['sample_id']}")
        seen = {_norm(r["reference"])}
        picked: list[dict] = []

        _take(by_video.get(r["video_id"], []), "same_video", r["user_id"], n - 1, rng, seen, picked)
        n_same = len(picked)
        if len(picked) < n - 1:
            others = [v for v in all_videos if v != r["video_id"]]
            _take(
                [c for v in others for c in by_video[v]],
                "other_video",
                r["user_id"],
                n - 1,
                rng,
                seen,
                picked,
            )
        if len(picked) < n - 1:
            raise ValueError(
                f"sample {r['sample_id']}: only {len(picked)} distinct comments by other users "
                f"exist in {ds.root}; ranking needs {n - 1} (lower ranking.n_candidates)"
            )
        cands = [{"text": r["reference"], "comment_id": r["target_comment_id"], "source": "truth"}, *picked]
        rng.shuffle(cands)
        out.append(
            {
                "sample_id": r["sample_id"],
                "user_id": r["user_id"],
                "video_id": r["video_id"],
                "candidates": cands,
                "truth_index": next(i for i, c in enumerate(cands) if c["source"] == "truth"),
                "n_from_other_videos": n - 1 - n_same,
                "n": n,
                "seed": seed,
                "version": CANDIDATES_VERSION,
            }
        )
    return out


def build_livebot_candidates(rows: Sequence[dict], ds: PerVidCom, n: int = 100, seed: int = 0,
                             popular: int = 20, plausible: int = 20) -> list[dict]:
    """LiveBot's candidates (Ma et al. 2019, their ``get_candidate_set``): the truth, the ``popular`` most
    frequent training-split comments, the ``plausible`` training comments most similar to the target
    video's title (character 1-3-gram TF-IDF cosine; LiveBot used the surrounding comments, which here
    would be the target video's own comments), then random training comments up to ``n``.

    Texts compare after NFKC/case/space normalization; a text is never taken twice, never equal to the
    truth and never equal to any comment of the sample's user (so no candidate repeats their history).
    Frequency ties break by text, similarity ties by text; the random part is seeded per sample id."""
    from collections import Counter

    from pvllm.utils.textsim import char_ngrams, idf, tfidf_cosine

    if popular + plausible > n - 1:
        raise ValueError(f"livebot candidates: popular {popular} + plausible {plausible} > n - 1 = {n - 1}")
    train_users = set(ds.users("train"))
    train = sorted((c for c in ds.comments.values() if c.user_id in train_users), key=lambda c: c.comment_id)
    freq: Counter = Counter()
    first: dict[str, Any] = {}
    for c in train:
        k = _norm(c.text)
        if k:
            freq[k] += 1
            first.setdefault(k, c)
    texts = sorted(first)
    by_freq = sorted(texts, key=lambda k: (-freq[k], k))
    grams = [char_ngrams(first[k].text) for k in texts]
    weights = idf(grams)
    plaus_by_video: dict[str, list[str]] = {}
    out = []
    for r in rows:
        rng = random.Random(f"livebot:{seed}:{r['sample_id']}")
        own = {_norm(c.text) for c in ds.comments_of(r["user_id"])}
        seen = own | {_norm(r["reference"])}
        picked: list[dict] = []

        def take(keys, source, want, seen=seen, picked=picked):
            for k in keys:
                if len(picked) >= want:
                    return
                if k not in seen:
                    seen.add(k)
                    picked.append({"text": first[k].text, "comment_id": first[k].comment_id, "source": source})

        take(by_freq, "popular", popular)
        v = r["video_id"]
        if v not in plaus_by_video:
            sims = tfidf_cosine(char_ngrams(ds.videos[v].title or ""), grams, weights)
            plaus_by_video[v] = [texts[i] for i in sorted(range(len(texts)), key=lambda i: (-sims[i], texts[i]))]
        take(plaus_by_video[v], "plausible", popular + plausible)
        pool = list(texts)
        rng.shuffle(pool)
        take(pool, "random", n - 1)
        if len(picked) < n - 1:
            raise ValueError(f"sample {r['sample_id']}: only {len(picked)} distinct training comments not by "
                             f"this user exist in {ds.root}; livebot candidates need {n - 1}")
        cands = [{"text": r["reference"], "comment_id": r["target_comment_id"], "source": "truth"}, *picked]
        rng.shuffle(cands)
        out.append({"sample_id": r["sample_id"], "user_id": r["user_id"], "video_id": v, "candidates": cands,
                    "truth_index": next(i for i, c in enumerate(cands) if c["source"] == "truth"),
                    "n_from_other_videos": 0, "n": n, "seed": seed, "protocol": "livebot",
                    "version": CANDIDATES_VERSION})
    return out


def history_overlap(cand_rows: Sequence[dict], rows: Sequence[dict]) -> dict[str, int]:
    """Candidates whose text (normalized) equals a comment of the sample's history: distractors and truths,
    and the samples with such a distractor (a history-copying scorer would favour them)."""
    hist = {r["sample_id"]: {_norm(h["text"]) for h in r["history"]} for r in rows}
    n_d = n_t = n_s = 0
    for c in cand_rows:
        h = hist.get(c["sample_id"], set())
        d = sum(1 for i, x in enumerate(c["candidates"]) if i != c["truth_index"] and _norm(x["text"]) in h)
        n_d += d
        n_s += d > 0
        n_t += _norm(c["candidates"][c["truth_index"]]["text"]) in h
    return {"n_distractors_equal_history": n_d, "n_samples_with_distractor_equal_history": n_s,
            "n_truths_equal_history": n_t}




def load_or_build_candidates(
    path: Path, rows: Sequence[dict], ds: PerVidCom, n: int, seed: int, protocol: str = "same_video",
    livebot: dict | None = None,
) -> list[dict]:
    """Read the shared candidates file (checking it matches these samples and settings) or write it once."""
    if path.is_file():
        cand = load_jsonl(path)
        by_id = {c["sample_id"]: c for c in cand}
        missing = [r["sample_id"] for r in rows if r["sample_id"] not in by_id]
        if missing:
            raise ValueError(
                f"{path}: no candidates for {len(missing)} samples (first {missing[:3]}); "
                "delete the file or change ranking.candidates_file"
            )
        for r in rows:
            c = by_id[r["sample_id"]]
            if (
                c["n"] != n
                or c["seed"] != seed
                or c.get("protocol", "same_video") != protocol
                or c["candidates"][c["truth_index"]]["text"] != r["reference"]
            ):
                raise ValueError(
                    f"{path}: sample {r['sample_id']} was drawn with other settings "
                    f"(n={c['n']}, seed={c['seed']}, protocol {c.get('protocol', 'same_video')}) or "
                    "another ground truth; delete the file "
                    "or change ranking.candidates_file"
                )
        log.info("read candidates of %d samples from %s", len(rows), path)
        return [by_id[r["sample_id"]] for r in rows]
    cand = build_candidates(rows, ds, n, seed, protocol, livebot)
    write_jsonl(path, cand)
    log.info("wrote candidates of %d samples to %s", len(cand), path)
    return cand


def truth_rank_stats(scores: Sequence[float], truth_index: int) -> tuple[int, int]:
    """(g, t): candidates scoring strictly higher than the truth, and equal to it (truth excluded)."""
    s = scores[truth_index]
    g = sum(1 for i, x in enumerate(scores) if i != truth_index and x > s)
    t = sum(1 for i, x in enumerate(scores) if i != truth_index and x == s)
    return g, t


def expected_metrics(g: int, t: int) -> dict[str, float]:
    """Recall@k, reciprocal rank and rank of the truth, averaged over a random order of the ties."""
    ranks = range(g + 1, g + t + 2)
    out = {f"R@{k}": sum(1 for r in ranks if r <= k) / (t + 1) for k in RECALL_AT}
    out["MRR"] = sum(1.0 / r for r in ranks) / (t + 1)
    out["rank"] = g + 1 + t / 2
    return out


def chance_levels(n: int) -> dict[str, float]:
    """What a random order of ``n`` candidates scores (Recall/MRR x100; mean rank in 1..n)."""
    return {
        **{f"R@{k}": 100.0 * min(k, n) / n for k in RECALL_AT},
        "MRR": 100.0 * sum(1.0 / r for r in range(1, n + 1)) / n,
        "mean_rank": (n + 1) / 2,
    }


def ranking_metrics(items: Sequence[dict]) -> dict[str, Any]:
    """Summary of ranking rows (``scores`` + ``truth_index``): Recall@1/5/10 and MRR x100, mean rank.

    Rows with ``error`` set are excluded and counted (``n_failed``), never scored as a miss.
    """
    ok = [it for it in items if it.get("error") is None]
    ns = {len(it["scores"]) for it in ok}
    if len(ns) > 1:
        raise ValueError(f"ranking rows have different candidate counts {sorted(ns)}")
    per = [expected_metrics(*truth_rank_stats(it["scores"], it["truth_index"])) for it in ok]
    out: dict[str, Any] = {"n": len(ok), "n_failed": len(items) - len(ok)}
    for k in RECALL_AT:
        out[f"R@{k}"] = 100.0 * sum(p[f"R@{k}"] for p in per) / len(per) if per else float("nan")
    out["MRR"] = 100.0 * sum(p["MRR"] for p in per) / len(per) if per else float("nan")
    out["mean_rank"] = sum(p["rank"] for p in per) / len(per) if per else float("nan")
    # the true comment's own mean log-probability per token (its score under ``mean``; from the stored sums
    # under sum/pmi): compares conditions on the same samples where ranks cannot (e.g. the video ablation:
    # every candidate is on the same video)
    truth = [float(it["logprob"][it["truth_index"]] / it["n_tokens"][it["truth_index"]]) if "logprob" in it
             else float(it["scores"][it["truth_index"]]) for it in ok]
    out["truth_logprob"] = sum(truth) / len(truth) if truth else float("nan")
    n = ns.pop() if ns else 0
    out["n_candidates"] = n
    out["chance"] = chance_levels(n) if n else None
    return out


def candidate_scores(generator: Any, batch: list, candidates: list[list[str]], score: str = "mean"
                     ) -> list[dict[str, Any] | None]:
    """Per request: ``{"scores": [...]}`` under ``score`` (:data:`SCORES`), with the log-probability sums
    behind them for ``sum``/``pmi`` (``logprob``, ``n_tokens``, ``logprob_no_history``); None where the
    generator failed on the request. ``mean`` goes through ``Generator.score_candidates`` (so any ranker
    with scores works); ``sum``/``pmi`` need ``Generator.candidate_logprobs``."""
    if score not in SCORES:
        raise ValueError(f"ranking.score must be one of {', '.join(SCORES)}, got {score!r}")
    if score == "mean":
        return [None if s is None else {"scores": s} for s in generator.score_candidates(batch, candidates)]
    out: list[dict[str, Any] | None] = []
    for lp in generator.candidate_logprobs(batch, candidates, no_history=score == "pmi"):
        if lp is None:
            out.append(None)
            continue
        rec: dict[str, Any] = {"logprob": lp.logprob, "n_tokens": lp.n_tokens}
        if score == "pmi":
            rec["logprob_no_history"] = lp.logprob_no_history
            rec["scores"] = [a - b for a, b in zip(lp.logprob, lp.logprob_no_history)]
        else:
            rec["scores"] = list(lp.logprob)
        out.append(rec)
    return out


def _progress(total: int, initial: int) -> Any:
    """A progress bar with an ETA on stderr (never stdout, where the tables go); sparse when not a terminal."""
    import sys

    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="ranking", unit="sample", file=sys.stderr, dynamic_ncols=True,
                mininterval=1.0 if sys.stderr.isatty() else 30.0)


def rank_resumable(
    generator: Any, cand_rows: Sequence[dict], requests: dict[str, Any], out: Path, *, batch_size: int = 1,
    score: str = "mean",
) -> list[dict]:
    """Score every candidate of every sample not yet in ``out`` (ranking.jsonl), appending as it goes
    (``batch_size`` samples per ``score_candidates`` call: the generator packs their candidates)."""
    from pvllm.utils.jsonl import append_jsonl, read_jsonl_tolerant

    done = read_jsonl_tolerant(out)
    for r in done:
        if r.get("model") != generator.model_id:
            raise ValueError(
                f"{out}: sample {r['sample_id']} was ranked by {r.get('model')}, not "
                f"{generator.model_id}; use another run directory"
            )
        if r.get("score", "mean") != score:  # rows written before ranking.score existed are `mean`
            raise ValueError(
                f"{out}: sample {r['sample_id']} was ranked with ranking.score={r.get('score', 'mean')}, not "
                f"{score}; use another run directory"
            )
    finished = {r["sample_id"] for r in done}
    todo = [c for c in cand_rows if c["sample_id"] not in finished]
    bar = _progress(len(cand_rows), len(cand_rows) - len(todo))
    try:
        for i in range(0, len(todo), batch_size):
            chunk = todo[i : i + batch_size]
            scored = candidate_scores(
                generator, [requests[c["sample_id"]] for c in chunk],
                [[x["text"] for x in c["candidates"]] for c in chunk], score,
            )
            recs = []
            for c, sc in zip(chunk, scored):
                s = None if sc is None else sc["scores"]
                g, t = truth_rank_stats(s, c["truth_index"]) if s is not None else (None, None)
                recs.append(
                    {
                        "sample_id": c["sample_id"],
                        "user_id": c["user_id"],
                        "model": generator.model_id,
                        "score": score,
                        "scores": s,
                        **({k: v for k, v in sc.items() if k != "scores"} if sc else {}),
                        "truth_index": c["truth_index"],
                        "truth_rank": None if g is None else g + 1 + t / 2,
                        "error": None if s is not None else "scoring failed",
                    }
                )
            append_jsonl(out, recs)
            done += recs
            bar.update(len(chunk))
    finally:
        bar.close()
    order = {c["sample_id"]: i for i, c in enumerate(cand_rows)}
    return sorted([r for r in done if r["sample_id"] in order], key=lambda r: order[r["sample_id"]])


def format_ranking(rows: Sequence[tuple[str, dict | None]], title: str = "", first_col: str = "method",
                   extra: tuple[str, Sequence[str]] | None = None) -> str:
    """Markdown: one row per (name, ranking summary); ``None`` (no log-probs, e.g. an API model) is n/a.
    ``extra``: (column name, one value per row), a last column (the demo's copy rate)."""
    cols = [f"R@{k}" for k in RECALL_AT] + ["MRR", "mean_rank"]
    more = [f" {extra[0]} |", *(f" {v} |" for v in extra[1])] if extra else [""] * (len(rows) + 1)
    lines = ([title] if title else []) + [
        f"| {first_col} | " + " | ".join(cols) + " | truth logp | n | N |" + more[0],
        "|" + "---|" * (len(cols) + 4 + bool(extra)),
    ]
    chance = None
    for (name, s), tail in zip(rows, more[1:]):
        if s is None:
            lines.append(f"| {name} | " + " | ".join("n/a" for _ in cols) + " | n/a | - | - |" + tail)
            continue
        chance = s.get("chance") or chance
        lines.append(
            f"| {name} | " + " | ".join(f"{s[c]:.1f}" for c in cols)
            + f" | {s.get('truth_logprob', float('nan')):.3f} | {s['n']} | {s['n_candidates']} |" + tail
        )
    if chance:
        lines.append("| *chance* | " + " | ".join(f"{chance[c]:.1f}" for c in cols) + " | | | |" + " |" * bool(extra))
    return "\n".join(lines)
