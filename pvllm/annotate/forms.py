"""The rating form behind the sample page: the blind model order, the form fields by slot, a submitted form
checked into annotation rows (ScoreError naming the first bad field), and what the page shows."""

from __future__ import annotations

import threading
from typing import Any

from pvllm.annotate.frames import FrameSource
from pvllm.annotate.store import (
    DIMENSION_LABELS,
    RUBRIC_LABELS,
    AnnotationStore,
    Sample,
    ScoreError,
    annotation_row,
    blind_order,
    now_iso,
    parse_score,
)
from pvllm.metrics.ficl import DIMENSIONS


def slot_name(i: int) -> str:
    return f"m{i}"


def model_label(i: int) -> str:
    return "Model " + (chr(ord("A") + i) if i < 26 else str(i + 1))


class Annotator:
    """The state behind the app: samples, the shared store, the blind order; thread-safe submits."""

    def __init__(
        self, samples: list[Sample], store: AnnotationStore, seed: int = 0, frames: FrameSource | None = None
    ):
        self.samples, self.store, self.seed, self.frames = samples, store, seed, frames
        self.lock = threading.Lock()

    def order(self, s: Sample) -> list[str]:
        return blind_order(s.sample_id, s.outputs, self.seed)

    def done_count(self, annotator: str) -> int:
        return sum(self.store.is_done(annotator, s) for s in self.samples)

    def first_unfinished(self, annotator: str, start: int = 0) -> int | None:
        """Index of the first unfinished sample at or after ``start``, wrapping around; None if none."""
        n = len(self.samples)
        for k in range(n):
            i = (start + k) % n
            if not self.store.is_done(annotator, self.samples[i]):
                return i
        return None

    def parse_form(self, s: Sample, form: dict[str, Any], annotator: str) -> list[dict[str, Any]]:
        """The rows a submitted form stands for; ScoreError naming the first bad field otherwise."""
        if str(form.get("sample_id", "")) != s.sample_id:
            raise ScoreError(
                "sample_id",
                f"form is for sample {form.get('sample_id')!r}, not {s.sample_id!r}; reload the page",
            )
        if str(form.get("seed", "")) != str(self.seed):
            raise ScoreError("seed", "the page was made with another model order (seed); reload the page")
        rows = []
        created_at = now_iso()  # one time stamp for the whole submit
        for i, gen in enumerate(self.order(s)):
            if not s.outputs[gen].scorable:
                continue
            scores = {}
            for d in DIMENSIONS:
                name = f"{slot_name(i)}_{d}"
                raw = form.get(name)
                label = f"{model_label(i)} {DIMENSION_LABELS[d]}"
                if raw is None or str(raw).strip() == "":
                    raise ScoreError(name, f"missing score for {label} (field {name})")
                v = parse_score(raw)
                if v is None:
                    raise ScoreError(
                        name,
                        f"invalid score {str(raw)[:40]!r} for {label} (field {name}); "
                        "choose one of 0, 0.25, 0.5, 0.75, 1",
                    )
                scores[d] = v
            rows.append(annotation_row(s.sample_id, gen, annotator, scores, created_at))
        return sorted(rows, key=lambda r: r["generator"])  # file order says nothing about the page order

    def page_context(
        self, user: str, idx: int, form: dict[str, Any] | None = None, error: str | None = None
    ) -> dict[str, Any]:
        """What sample.html shows; with ``form`` (a rejected submit) its valid choices stay selected."""
        s = self.samples[idx]
        models = []
        for i, gen in enumerate(self.order(s)):
            out = s.outputs[gen]
            scores = self.store.scores(user, s.sample_id, gen)
            if form is not None:
                scores = {d: parse_score(form.get(f"{slot_name(i)}_{d}")) for d in DIMENSIONS}
            models.append(
                {
                    "slot": slot_name(i),
                    "label": model_label(i),
                    "scorable": out.scorable,
                    "text": out.text,
                    "error": out.error,
                    "scores": scores,
                }
            )
        frames, note, video_src, video_note = [], None, None, None
        if self.frames is not None:
            frames, note = self.frames.thumbnails(s.video_id)
            if self.frames.video_file(s.video_id) is not None:
                video_src = f"/video/{s.video_id}"
            else:
                video_note = f"video {s.video_id!r} is not in the dataset (or its file is missing)"
        return {
            "n": idx + 1,
            "total": len(self.samples),
            "done": self.done_count(user),
            "finished": self.store.is_done(user, s) and bool(s.scorable_generators()),
            "sample_id": s.sample_id,
            "seed": self.seed,
            "history": s.history,
            "reference": s.reference,
            "models": models,
            "any_scorable": any(m["scorable"] for m in models),
            "rubric": RUBRIC_LABELS,
            "dims": DIMENSIONS,
            "dim_labels": DIMENSION_LABELS,
            "show_frames": self.frames is not None,
            "frames": frames,
            "frames_note": note,
            "video_src": video_src,
            "video_note": video_note,
            "error": error,
            "video_id": s.video_id,
            "video_title": self.frames.title(s.video_id) if self.frames else None,
        }
