"""What the admin view shows and exports: progress per annotator and per model, and agreement.

Agreement is Krippendorff's alpha (interval metric) per dimension, computed by
:func:`pvllm.metrics.agreement.krippendorff_alpha_interval`, the function Table 3 reports: a unit is a
(sample_id, generator) pair, its values the annotators' latest scores. No web code here.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from typing import Any

from pvllm.annotate.store import ANNOTATION_FIELDS, AnnotationStore, Sample
from pvllm.metrics.agreement import krippendorff_alpha_interval
from pvllm.metrics.ficl import DIMENSIONS


def agreement(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per dimension: alpha (None where undefined), pairable units (>= 2 annotators) and their values."""
    rows = list(rows)
    out = []
    for d in DIMENSIONS:
        units: dict[tuple[str, str], dict[str, float]] = {}
        for r in rows:
            units.setdefault((str(r["sample_id"]), str(r["generator"])), {})[str(r["annotator"])] = float(
                r[d]
            )
        pairable = [u for u in units.values() if len(u) >= 2]
        alpha = krippendorff_alpha_interval(units)
        out.append(
            {
                "dimension": d,
                "alpha": None if math.isnan(alpha) else alpha,
                "units": len(pairable),
                "values": sum(len(u) for u in pairable),
            }
        )
    return out


def progress(samples: list[Sample], store: AnnotationStore, annotators: Iterable[str]) -> dict[str, Any]:
    """Samples finished per annotator, and (sample, model) items rated per model and annotator."""
    names = sorted(set(annotators) | {a for a, _, _ in store.latest})
    scorable = [s for s in samples if s.scorable_generators()]
    per_annotator = []
    for a in names:
        per_annotator.append(
            {
                "annotator": a,
                "samples_done": sum(store.is_done(a, s) for s in scorable),
                "samples": len(scorable),
                "ratings": sum(1 for k in store.latest if k[0] == a),
            }
        )
    gens = sorted({g for s in samples for g in s.outputs})
    per_model = []
    for g in gens:
        items = [s.sample_id for s in samples if g in s.outputs and s.outputs[g].scorable]
        rated = {a: sum((a, sid, g) in store.latest for sid in items) for a in names}
        per_model.append({"generator": g, "items": len(items), "rated": rated})
    return {"annotators": per_annotator, "models": per_model}


def annotations_csv(rows: Iterable[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(ANNOTATION_FIELDS), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


def agreement_csv(table: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["dimension", "alpha", "units", "values"], lineterminator="\n")
    w.writeheader()
    for r in table:
        w.writerow({**r, "alpha": "" if r["alpha"] is None else repr(r["alpha"])})
    return buf.getvalue()
