"""FICL-Score (paper §4.2, Table 2): an LLM judge rates (generated, ground truth) on emotion, language
style and content relevance, after K few-shot samples x 3 models with human scores (K x 3 shots).

A reply that cannot be parsed is never scored 0: the judge is asked once more to extract the three
scores (the paper's fallback), and if that fails too the item is recorded as ``parse_failed``.
"""

from __future__ import annotations

import math
import random
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pvllm.raters.base import RUBRIC_VALUES, format_score
from pvllm.utils.jsonl import load_jsonl

DIMENSIONS = ("emotion", "style", "relevance")

# Table 2, verbatim (the paper's "lets" included).
RUBRIC = (
    "From 0 (not similar or relevant at all), 0.25 (slightly similar), 0.5 (similar in some aspects), "
    "0.75 (similar in many aspects) to 1 (almost identical), rate the similarity between generated comment "
    "and ground-truth in terms of emotion, language style, and content relevance. Generate your final output "
    'in form of "Emotion: x, Style: y, Relevance: z", where x, y and z are the scores you pick for each '
    "dimension."
)
START_LINE = "Now lets get started!"

EXTRACT_PROMPT = (
    "Below is a reply that rates a generated comment against a ground-truth comment on emotion, language "
    "style and content relevance. Extract the three scores it gives. Answer with exactly one line in the "
    'form "Emotion: x, Style: y, Relevance: z", where x, y and z are each one of 0, 0.25, 0.5, 0.75, 1. '
    'If the reply does not give all three scores, answer "none".\n\nReply:\n'
)


@dataclass(frozen=True)
class FewShotExample:
    """One shot: a model's comment for a sample, its ground truth, and the human (or stated) scores."""

    sample_id: str
    generator: str
    generated: str
    ground_truth: str
    emotion: float
    style: float
    relevance: float


@dataclass
class FICLResult:
    emotion: float | None
    style: float | None
    relevance: float | None
    status: str  # ok / parse_failed / out_of_range / error
    reply: str | None = None
    reasked: bool = False
    error: str | None = None
    snapped: bool = False  # a value off the rubric (e.g. 0.6) was snapped to the nearest rubric value
    raw_values: tuple[float, float, float] | None = None  # out_of_range: the judge's numbers, kept as given


def build_prefix(examples: Sequence[FewShotExample]) -> str:
    """The part of the prompt shared by every scored item (rubric + shots): cacheable."""
    parts = [RUBRIC, ""]
    for i, ex in enumerate(examples):
        parts += [
            f"Example {i}",
            f"Generated comment: {ex.generated}",
            f"Ground-truth: {ex.ground_truth}",
            f"Emotion similarity: {format_score(ex.emotion)}",
            f"Language Style similarity: {format_score(ex.style)}",
            f"Content Relevance similarity: {format_score(ex.relevance)}",
            "",
        ]
    return "\n".join(parts) + "\n"


def build_query(generated: str, ground_truth: str) -> str:
    return f"{START_LINE}\nGenerated comment: {generated}\nGround-truth: {ground_truth}"


def build_ficl_prompt(examples: Sequence[FewShotExample], generated: str, ground_truth: str) -> str:
    """The full Table-2 prompt for one item."""
    return build_prefix(examples) + build_query(generated, ground_truth)


_NUM = r"(\d+(?:\.\d+)?|\.\d+)"
_SEP = r"\s*(?:similarity|score)?\s*(?:[:=\-]|is)?\s*"
_NOT_EMOTION = r"(?:(?!emotion).)*?"
_SCORES_RE = re.compile(
    rf"emotion{_SEP}\**\s*{_NUM}{_NOT_EMOTION}style{_SEP}\**\s*{_NUM}{_NOT_EMOTION}relevance{_SEP}\**\s*{_NUM}",
    re.IGNORECASE | re.DOTALL,
)


def snap(x: float) -> float:
    """Nearest rubric value; ties go to the lower value."""
    return min(RUBRIC_VALUES, key=lambda v: (abs(v - x), v))


def parse_scores(reply: str | None) -> tuple[float, float, float] | None:
    """``Emotion: x, Style: y, Relevance: z`` anywhere in the reply (last occurrence wins), each snapped
    to {0, .25, .5, .75, 1}; None when absent or a value lies outside [0, 1]."""
    parsed = parse_scores_detail(reply)
    return None if parsed is None else parsed[0]


def parse_scores_detail(reply: str | None) -> tuple[tuple[float, float, float], bool] | None:
    """``parse_scores`` and whether any value was off the rubric (snapped: counted in the summary)."""
    if not reply:
        return None
    matches = list(_SCORES_RE.finditer(reply))
    if not matches:
        return None
    values = [float(g) for g in matches[-1].groups()]
    if any(not (0.0 <= v <= 1.0) or math.isnan(v) for v in values):
        return None
    e, s, r = (snap(v) for v in values)
    return (e, s, r), any(v not in RUBRIC_VALUES for v in values)


def out_of_range_values(reply: str | None) -> tuple[float, float, float] | None:
    """The judge's three numbers when the reply has the score format but a value lies outside [0, 1]
    (e.g. a 0-10 scale): readable, not on the rubric. None otherwise."""
    if not reply:
        return None
    matches = list(_SCORES_RE.finditer(reply))
    if not matches:
        return None
    values = tuple(float(g) for g in matches[-1].groups())
    return values if any(not (0.0 <= v <= 1.0) for v in values) else None


def _out_of_range(reply: str, values: tuple[float, float, float], reasked: bool) -> FICLResult:
    shown = ", ".join(f"{d} {v:g}" for d, v in zip(("Emotion", "Style", "Relevance"), values))
    return FICLResult(None, None, None, "out_of_range", reply, reasked=reasked, raw_values=values,
                      error=f"out of range: {shown} (the rubric is 0, 0.25, 0.5, 0.75, 1); not scored")


def ficl_score_llm(
    complete: Callable[[list[str]], list[str | None]],
    examples: Sequence[FewShotExample],
    pairs: Sequence[tuple[str, str]],
) -> list[FICLResult]:
    """Score (generated, ground_truth) pairs with an LLM judge behind ``complete`` (a rater's, cached)."""
    prompts = [build_ficl_prompt(examples, g, t) for g, t in pairs]
    replies = complete(prompts)
    if len(replies) != len(prompts):
        raise RuntimeError(f"rater returned {len(replies)} replies for {len(prompts)} prompts")
    results: list[FICLResult] = []
    reask_idx: list[int] = []
    for i, reply in enumerate(replies):
        if reply is None:
            results.append(FICLResult(None, None, None, "error", None, error="rater request failed"))
            continue
        parsed = parse_scores_detail(reply)
        if parsed is None and (raw := out_of_range_values(reply)) is not None:
            results.append(_out_of_range(reply, raw, reasked=False))  # readable: asking again gives the same
        elif parsed is None:
            reask_idx.append(i)
            results.append(FICLResult(None, None, None, "parse_failed", reply, reasked=True))
        else:
            results.append(FICLResult(*parsed[0], "ok", reply, snapped=parsed[1]))
    if reask_idx:
        extra = complete([EXTRACT_PROMPT + (replies[i] or "") for i in reask_idx])
        for i, second in zip(reask_idx, extra):
            parsed = parse_scores_detail(second)
            if parsed is None and (raw := out_of_range_values(second)) is not None:
                results[i] = _out_of_range(second, raw, reasked=True)
            elif parsed is None:
                why = (
                    "re-ask request failed"
                    if second is None
                    else f"unparseable after re-ask: {second[:200]!r}"
                )
                results[i].error = why
            else:
                results[i].emotion, results[i].style, results[i].relevance = parsed[0]
                results[i].status, results[i].snapped = "ok", parsed[1]
    return results


# ---------------------------------------------------------------------------------------------------
# Few-shot pool: predictions of several models + annotations (+ ground truths) of non-scored samples.


@dataclass
class FewShotPool:
    """Annotated outputs of several models on samples that are never scored (train-split users)."""

    examples: dict[str, list[FewShotExample]]  # sample_id -> one example per annotated generator
    source: str  # "human" or the stated procedure, from annotations.jsonl

    @classmethod
    def from_dir(cls, path: str | Path) -> FewShotPool:
        """Read ``predictions.jsonl`` (several generators), ``references.jsonl`` (sample_id, text) and
        ``annotations.jsonl`` (docs/data_format.md; several annotators are averaged, then snapped)."""
        path = Path(path)
        texts = {(p["sample_id"], p["generator"]): p["text"] for p in load_jsonl(path / "predictions.jsonl")}
        refs = {r["sample_id"]: r["text"] for r in load_jsonl(path / "references.jsonl")}
        anns = load_jsonl(path / "annotations.jsonl")
        means = average_annotations(anns)
        by_sample: dict[str, list[FewShotExample]] = defaultdict(list)
        for (sid, gen), (e, s, r) in sorted(means.items()):
            if (sid, gen) not in texts or texts[(sid, gen)] is None:
                raise ValueError(f"{path}: annotation for ({sid}, {gen}) has no prediction text")
            if sid not in refs:
                raise ValueError(f"{path}: annotation for sample {sid} has no reference in references.jsonl")
            by_sample[sid].append(
                FewShotExample(sid, gen, texts[(sid, gen)], refs[sid], snap(e), snap(s), snap(r))
            )
        sources = sorted({a.get("source", "?") for a in anns})
        return cls(dict(by_sample), "; ".join(sources))

    @property
    def sample_ids(self) -> set[str]:
        return set(self.examples)

    def select(self, k: int, seed: int = 0, models_per_sample: int = 3) -> list[FewShotExample]:
        """K samples (seeded) x ``models_per_sample`` models each, in a fixed order."""
        eligible = sorted(s for s, exs in self.examples.items() if len(exs) >= models_per_sample)
        if k > len(eligible):
            raise ValueError(
                f"K={k} few-shot samples requested, but only {len(eligible)} samples have "
                f"{models_per_sample} annotated models"
            )
        chosen = random.Random(seed).sample(eligible, k)
        out: list[FewShotExample] = []
        for sid in chosen:
            out += sorted(self.examples[sid], key=lambda e: e.generator)[:models_per_sample]
        return out


def latest_annotations(rows) -> list[dict]:
    """Keep, per (sample_id, generator, annotator), only the latest row (last in file order).

    The annotation tool only appends, so a resubmitted sample's newer rows come after the older ones;
    concatenating several annotators' files keeps this true since the key includes the annotator.
    """
    latest: dict[tuple[str, str, str], dict] = {}
    for r in rows:
        key = (str(r["sample_id"]), str(r["generator"]), str(r.get("annotator", "")))
        latest[key] = dict(r)  # a re-assigned key keeps its position, takes the newer row
    return list(latest.values())


def average_annotations(annotations: list[dict]) -> dict[tuple[str, str], tuple[float, float, float]]:
    """(sample_id, generator) -> mean (emotion, style, relevance) over annotators; checks the rubric.

    A resubmitted score replaces the annotator's earlier one (``latest_annotations``), never averages with it.
    """
    acc: dict[tuple[str, str], list[tuple[float, float, float]]] = defaultdict(list)
    for i, a in enumerate(latest_annotations(annotations)):
        vals = []
        for d in DIMENSIONS:
            v = a.get(d)
            if not isinstance(v, (int, float)) or float(v) not in RUBRIC_VALUES:
                raise ValueError(
                    f"annotation {i} ({a.get('sample_id')}, {a.get('generator')}): {d}={v!r} "
                    f"is not one of {RUBRIC_VALUES}"
                )
            vals.append(float(v))
        acc[(a["sample_id"], a["generator"])].append((vals[0], vals[1], vals[2]))
    return {k: tuple(sum(x[j] for x in v) / len(v) for j in range(3)) for k, v in acc.items()}  # type: ignore[misc]
