"""Data side of the annotation tool: the samples to annotate, the blind model order, and annotations.jsonl.

No web code here (importable without starlette). ``annotations.jsonl`` (docs/data_format.md): one row per
sample x generator x submit, append-only; a resubmitted sample appends newer rows and readers keep the
latest per (sample_id, generator, annotator) with :func:`latest_annotations`.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pvllm.metrics.ficl import (
    DIMENSIONS,
    RUBRIC_VALUES,
    latest_annotations,  # noqa: F401  (re-exported: the one definition)
)
from pvllm.utils.jsonl import append_jsonl, read_jsonl_tolerant

# Paper §4.1 rubric, in the order the page shows it.
RUBRIC_LABELS: tuple[tuple[float, str], ...] = (
    (0.0, "not similar or relevant at all"),
    (0.25, "slightly similar"),
    (0.5, "similar in some aspects"),
    (0.75, "similar in many aspects"),
    (1.0, "almost identical"),
)
DIMENSION_LABELS = {"emotion": "Emotion", "style": "Language style", "relevance": "Content relevance"}
SOURCE_HUMAN = "human"
ANNOTATION_FIELDS = ("sample_id", "generator", "annotator", *DIMENSIONS, "source", "created_at")


class ScoreError(ValueError):
    """A submitted form is incomplete or holds a value outside the rubric; ``field`` names the input."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Output:
    """One generator's comment for a sample; ``text`` is None when the generation failed."""

    generator: str
    text: str | None
    error: str | None  # shown on the page: generator and model names are already replaced by "[model]"

    @property
    def scorable(self) -> bool:
        return self.error is None and self.text is not None


@dataclass
class Sample:
    sample_id: str
    user_id: str | None
    video_id: str | None
    history: list[str]
    reference: str
    outputs: dict[str, Output] = field(default_factory=dict)  # generator -> output

    def scorable_generators(self) -> list[str]:
        return sorted(g for g, o in self.outputs.items() if o.scorable)


def predictions_file(run: str | Path) -> Path:
    run = Path(run)
    path = run if run.is_file() else run / "predictions.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{run}: no predictions.jsonl (pass an evaluation run directory)")
    return path


def load_samples(runs: Iterable[str | Path]) -> list[Sample]:
    """Samples present in every run, in the first run's order, each with every run's output.

    A run is a directory holding ``predictions.jsonl`` (pvllm.evaluation ``prediction_row`` rows).
    Within a file the last row of a (sample_id, generator) wins (append-only, resumable files). The same
    generator in two runs, or two runs disagreeing on a sample's reference or history, is an error: the
    runs would not be one evaluation.
    """
    runs = list(runs)
    if not runs:
        raise ValueError("no prediction runs given")
    per_run: list[dict[str, dict[str, dict[str, Any]]]] = []  # run -> sample_id -> generator -> row
    owner: dict[str, Path] = {}  # generator -> file
    order: list[str] = []
    for i, run in enumerate(runs):
        path = predictions_file(run)
        by_sample: dict[str, dict[str, dict[str, Any]]] = {}
        for lineno, row in enumerate(read_jsonl_tolerant(path), start=1):
            for key in ("sample_id", "generator", "reference"):
                if row.get(key) is None:
                    raise ValueError(f"{path}: row {lineno} has no {key!r}")
            gen = str(row["generator"])
            if owner.setdefault(gen, path) != path:
                raise ValueError(f"generator {gen!r} appears in both {owner[gen]} and {path}")
            sid = str(row["sample_id"])
            if i == 0 and sid not in by_sample:
                order.append(sid)
            by_sample.setdefault(sid, {})[gen] = row
        if not by_sample:
            raise ValueError(f"{path}: no predictions")
        per_run.append(by_sample)
    samples = []
    for sid in order:
        if not all(sid in r for r in per_run):
            continue
        rows = [row for r in per_run for row in r[sid].values()]
        first = rows[0]
        hist = _history(first)
        for row in rows[1:]:
            if row["reference"] != first["reference"] or _history(row) != hist:
                raise ValueError(
                    f"sample {sid!r}: generators {first['generator']!r} and {row['generator']!r} disagree on "
                    "the reference or history; the runs are not one evaluation"
                )
        s = Sample(sid, first.get("user_id"), first.get("video_id"), hist, str(first["reference"]))
        for row in rows:
            err = row.get("error")
            text = row.get("text")
            if err is None and text is None:
                err = "no text"
            gen = str(row["generator"])
            s.outputs[gen] = Output(
                gen, text, None if err is None else redact(str(err), gen, row.get("model"))
            )
        samples.append(s)
    if not samples:
        raise ValueError(f"no sample is present in all {len(runs)} runs")
    return samples


def redact(message: str, *names: Any) -> str:
    """Replace generator/model names in an error message (the page is blind): longest first."""
    for name in sorted({str(n) for n in names if n}, key=len, reverse=True):
        message = message.replace(name, "[model]")
    return message


def pick_users(samples: list[Sample], n: int, seed: int = 0) -> list[Sample]:
    """``n`` users drawn at random (seeded) with one sample each (their first), in the samples' order.

    The paper annotates 100 random users (50 per split), one sample each. Every annotator must use the same
    ``n`` and ``seed`` to see the same samples. ``n`` >= the number of users keeps one sample per user.
    """
    if n <= 0:
        raise ValueError(f"--users must be positive, got {n}")
    first: dict[str, Sample] = {}
    for s in samples:
        first.setdefault(s.user_id if s.user_id is not None else s.sample_id, s)
    users = sorted(first)
    chosen = set(random.Random(seed).sample(users, min(n, len(users))))
    keep = {id(first[u]) for u in chosen}
    return [s for s in samples if id(s) in keep]


def _history(row: Mapping[str, Any]) -> list[str]:
    """The history comments' texts (plain strings, or ``{comment_id, video_id, text}`` records)."""
    return [str(h["text"]) if isinstance(h, Mapping) else str(h) for h in (row.get("history") or [])]


def blind_order(sample_id: str, generators: Iterable[str], seed: int) -> list[str]:
    """Seeded per-sample shuffle of the generators: the page shows "Model A, B, ..." in this order."""
    gens = sorted(generators)
    random.Random(f"{seed}:{sample_id}").shuffle(gens)
    return gens


def parse_score(raw: Any) -> float | None:
    """A rubric value from a form string/number; None when absent or outside {0, .25, .5, .75, 1}."""
    if raw is None or isinstance(raw, bool):
        return None
    try:
        v = float(str(raw).strip())
    except ValueError:
        return None
    if math.isnan(v) or v not in RUBRIC_VALUES:
        return None
    return v


def now_iso() -> str:
    """ISO-8601 UTC timestamp with microseconds (keeps rows of quick resubmits distinct)."""
    return datetime.now(timezone.utc).isoformat()


def annotation_row(
    sample_id: str, generator: str, annotator: str, scores: Mapping[str, float], created_at: str | None = None
) -> dict[str, Any]:
    """One annotations.jsonl row (docs/data_format.md) (``source: "human"``)."""
    row: dict[str, Any] = {"sample_id": sample_id, "generator": generator, "annotator": annotator}
    for d in DIMENSIONS:
        row[d] = scores[d]
    row["source"] = SOURCE_HUMAN
    row["created_at"] = created_at or now_iso()
    return row


def read_annotations(path: str | Path) -> list[dict[str, Any]]:
    """All rows of an annotations.jsonl (a torn last line from a kill is dropped); missing file -> []."""
    return read_jsonl_tolerant(path)


def check_row(row: Mapping[str, Any], where: str) -> None:
    """Raise ValueError naming ``where`` and the field unless ``row`` is an annotation row (see the docs)."""
    for f in ANNOTATION_FIELDS:
        if row.get(f) is None:
            raise ValueError(f"{where}: missing field {f!r}")
    for d in DIMENSIONS:
        v = row[d]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or parse_score(v) is None:
            raise ValueError(f"{where}: {d}={v!r} is not one of 0, 0.25, 0.5, 0.75, 1")


def repair_torn_tail(path: Path) -> bool:
    """Cut an incomplete last line (a write killed half-way) so that the next append starts a clean line.

    Returns True when something was cut. A complete last row that only lacks its newline gets one.
    """
    if not path.is_file():
        return False
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return False
    cut = data.rfind(b"\n") + 1
    tail = data[cut:]
    try:
        complete = isinstance(json.loads(tail), dict)
    except ValueError:
        complete = False
    with path.open("r+b") as f:
        if complete:
            f.seek(0, 2)
            f.write(b"\n")
        else:
            f.truncate(cut)
        f.flush()
        os.fsync(f.fileno())
    return not complete


class AnnotationStore:
    """The annotators' shared ``--out`` file: latest scores per (annotator, sample_id, generator).

    Appends are flushed and fsynced (and the folder too when the file is new) before :meth:`append`
    returns, so a confirmed save survives a killed server or a power cut.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.latest: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.repaired = repair_torn_tail(self.path)
        rows = read_annotations(self.path)
        for i, r in enumerate(rows, start=1):
            check_row(r, f"{self.path}: row {i}")
        for r in latest_annotations(rows):
            self.latest[(str(r["annotator"]), str(r["sample_id"]), str(r["generator"]))] = r

    def scores(self, annotator: str, sample_id: str, generator: str) -> dict[str, float] | None:
        r = self.latest.get((annotator, sample_id, generator))
        return None if r is None else {d: r[d] for d in DIMENSIONS}

    def is_done(self, annotator: str, sample: Sample) -> bool:
        """Every scorable output of the sample has a score by ``annotator`` (vacuous if none is)."""
        return all((annotator, sample.sample_id, g) in self.latest for g in sample.scorable_generators())

    def rows(self) -> list[dict[str, Any]]:
        """The latest row per (sample_id, generator, annotator), in file order (what merge writes)."""
        return list(self.latest.values())

    def append(self, rows: list[dict[str, Any]]) -> None:
        new = not self.path.exists()
        append_jsonl(self.path, rows)  # flush + fsync
        if new:  # the file's directory entry must be durable too
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for r in rows:
            key = (str(r["annotator"]), str(r["sample_id"]), str(r["generator"]))
            self.latest[key] = r  # a re-assigned key keeps its place, as in latest_annotations
