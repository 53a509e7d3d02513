"""Figures 7/8: for chosen samples, one HTML page with the video frames, the user's history, the target
comment, and each model's comment with its FICL-Score.

    python evaluate.py experiment=qualitative report.sample_ids=[ID,...] report.runs=[RUN_DIR,...]
    python -m pvllm.reports.qualitative report.sample_ids=[ID,...] report.runs=[RUN_DIR,...]
Each run is an evaluate.py run directory (``predictions.jsonl`` + ``scores.jsonl``; a name is looked up under
``runs_dir``). All runs must share the histories of a sample (one evaluation), else it is an error. Every
text is HTML-escaped (Jinja2 autoescape on); frames are embedded as base64 JPEG, so the page stands alone.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2

from pvllm.data.dataset import load_pervidcom
from pvllm.data.video_io import VideoReadError, read_frames
from pvllm.identity import IdentityConflict, differing, stored_run_identity
from pvllm.utils.jsonl import load_jsonl

log = logging.getLogger(__name__)

FICL = (("FICL-E", "Emotion"), ("FICL-S", "Style"), ("FICL-R", "Relevance"))

TEMPLATE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; }
section { border-top: 1px solid #ccc; padding: 1em 0; }
.frames img { margin: 2px; border: 1px solid #ddd; }
.comment { font-weight: bold; }
table { border-collapse: collapse; } td, th { border: 1px solid #ddd; padding: 4px 8px; vertical-align: top; }
.error { color: #a00; }
</style></head><body>
<h1>{{ title }}</h1>
<p>{{ samples | length }} samples, {{ runs | length }} models. FICL-Score x100 ({{ raters }}).</p>
{% for s in samples %}
<section id="{{ s.sample_id }}">
<h2>Example: user {{ s.user_id }} <small>(sample {{ s.sample_id }}, video {{ s.video_id }})</small></h2>
{% if s.frames_error %}<p class="error">frames: {{ s.frames_error }}</p>{% endif %}
<div class="frames">{% for f in s.frames %}
<img alt="frame {{ loop.index }}" src="data:image/jpeg;base64,{{ f }}">{% endfor %}</div>
<h3>Comment history for user {{ s.user_id }}</h3>
{% if s.history %}<ol>{% for h in s.history %}<li>{{ h }}</li>{% endfor %}</ol>
{% else %}<p>(no history)</p>{% endif %}
<h3>Predicted comments</h3>
<table><tr><th>model</th><th>comment</th>{% for _, name in ficl %}<th>{{ name }}</th>{% endfor %}</tr>
{% for p in s.predictions %}<tr><td>{{ p.label }}<br><small>{{ p.model }}</small></td>
<td>{% if p.error %}<span class="error">{{ p.error }}</span>
{% else %}<span class="comment">{{ p.text }}</span>{% endif %}</td>
{% for col, _ in ficl %}<td>{{ p.scores[col] }}</td>{% endfor %}</tr>
{% endfor %}</table>
<h3>Target comment</h3><p class="comment">{{ s.reference }}</p>
</section>
{% endfor %}
</body></html>
"""


def _env() -> jinja2.Environment:
    # a bare Environment does not escape: comments are untrusted text (escape every field)
    return jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)


def thumbnails(path: str | Path, num_frames: int, height: int) -> list[str]:
    """``num_frames`` uniformly sampled frames as base64 JPEG, scaled to ``height`` pixels."""
    from PIL import Image

    out = []
    for arr in read_frames(path, num_frames):
        img = Image.fromarray(arr)
        img = img.resize((max(1, round(img.width * height / img.height)), height))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85)
        out.append(base64.b64encode(buf.getvalue()).decode("ascii"))
    return out


def _load_run(run: str | Path, runs_dir: str | Path | None) -> dict[str, Any]:
    d = Path(run)
    if not d.is_dir() and runs_dir is not None:
        d = Path(runs_dir) / run
    if not (d / "predictions.jsonl").is_file():
        raise FileNotFoundError(f"run {run}: no predictions.jsonl in {d}")
    preds = {p["sample_id"]: p for p in load_jsonl(d / "predictions.jsonl")}
    scores: dict[str, dict[str, Any]] = {}
    raters = set()
    if (d / "scores.jsonl").is_file():
        for r in load_jsonl(d / "scores.jsonl"):
            if r["metric"] in dict(FICL):
                v = r["value"]
                cell = f"{v:.0f}" if r["status"] == "ok" and v is not None else r["status"]
                scores.setdefault(r["sample_id"], {})[r["metric"]] = cell
                raters.add(r.get("rater"))
    else:
        log.warning("run %s has no scores.jsonl: FICL columns empty", d)
    label = next(iter(preds.values()), {}).get("generator", d.name)
    return {"dir": d, "label": label, "preds": preds, "scores": scores, "raters": raters}


def check_same_histories(loaded: Sequence[dict[str, Any]]) -> None:
    """Columns of one page: distinct labels, and (where recorded) the same dataset and histories draw."""
    labels = [r["label"] for r in loaded]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ValueError(f"runs {[str(r['dir']) for r in loaded]} share the column label(s) {dup}: give "
                         "report.labels=[...] (generator names are distinct per config, e.g. gemini_flash)")
    first = None
    for r in loaded:
        ident = stored_run_identity(r["dir"])
        if ident is None:
            continue  # hand-made run directories: the per-sample check below still compares contents
        if first is None:
            first = (r, ident)
        elif ident["histories"]["id"] != first[1]["histories"]["id"]:
            raise IdentityConflict(
                f"runs {first[0]['dir']} and {r['dir']} read different histories ("
                + "; ".join(differing(first[1]["histories"], ident["histories"])) + ")")


def build_page(
    sample_ids: Sequence[str],
    runs: Sequence[str | Path],
    data_root: str | Path,
    *,
    runs_dir: str | Path | None = None,
    labels: Sequence[str] | None = None,
    num_frames: int = 8,
    thumb_height: int = 96,
    title: str = "Generated comments (Figures 7/8)",
) -> tuple[str, dict[str, int]]:
    """The HTML page and counts of what is missing (predictions, frames)."""
    if not sample_ids or not runs:
        raise ValueError("give report.sample_ids=[...] and report.runs=[...] (evaluate.py run directories)")
    if labels is not None and len(labels) != len(runs):
        raise ValueError(f"report.labels has {len(labels)} names for {len(runs)} runs")
    loaded = [_load_run(r, runs_dir) for r in runs]
    for run, label in zip(loaded, labels or []):
        run["label"] = label
    check_same_histories(loaded)
    ds = load_pervidcom(data_root, check_files=False)
    counts = {"samples": 0, "missing_predictions": 0, "frame_errors": 0}
    samples = []
    for sid in sample_ids:
        have = [r for r in loaded if sid in r["preds"]]
        if not have:
            raise KeyError(f"sample {sid} is in none of the runs {[str(r['dir']) for r in loaded]}")
        first = have[0]["preds"][sid]
        for r in have[1:]:
            p = r["preds"][sid]
            if (p["history"], p["reference"], p["video_id"]) != (
                first["history"],
                first["reference"],
                first["video_id"],
            ):
                raise ValueError(
                    f"sample {sid}: runs {have[0]['dir']} and {r['dir']} saw different histories "
                    "or targets (not one evaluation)"
                )
        try:
            frames, frames_error = (
                thumbnails(ds.video_path(first["video_id"]), num_frames, thumb_height),
                None,
            )
        except (VideoReadError, KeyError) as e:
            frames, frames_error = [], str(e)
            counts["frame_errors"] += 1
            log.warning("sample %s: no frames: %s", sid, e)
        preds = []
        for r in loaded:
            p = r["preds"].get(sid)
            if p is None:
                counts["missing_predictions"] += 1
                log.warning("sample %s: no prediction in %s", sid, r["dir"])
            sc = r["scores"].get(sid, {})
            preds.append(
                {
                    "label": r["label"],
                    "model": (p or {}).get("model", ""),
                    "text": (p or {}).get("text"),
                    "error": "no prediction in this run" if p is None else p.get("error"),
                    "scores": {col: sc.get(col, "-") for col, _ in FICL},
                }
            )
        samples.append(
            {**first, "sample_id": sid, "frames": frames, "frames_error": frames_error, "predictions": preds}
        )
        counts["samples"] += 1
    raters = ", ".join(sorted(str(x) for r in loaded for x in r["raters"])) or "no rater"
    html = (
        _env()
        .from_string(TEMPLATE)
        .render(title=title, samples=samples, runs=loaded, ficl=FICL, raters=raters)
    )
    return html, counts


def report(
    cfg=None,
    *,
    sample_ids: Sequence[str],
    runs: Sequence[str],
    runs_dir: str | None = None,
    labels: Sequence[str] | None = None,
    data_root: str | None = None,
    out_dir: str,
    num_frames: int = 8,
    thumb_height: int = 96,
) -> Path:
    """Hydra ``report`` hook (conf/experiment/qualitative.yaml): write ``out_dir``/qualitative.html."""
    if data_root is None:
        data_root = cfg.data.root
    html, counts = build_page(
        list(sample_ids),
        list(runs),
        data_root,
        runs_dir=runs_dir,
        labels=None if labels is None else list(labels),
        num_frames=num_frames,
        thumb_height=thumb_height,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "qualitative.html"
    path.write_text(html, encoding="utf-8")
    print(f"qualitative page: {path} ({counts})")
    return path


if __name__ == "__main__":
    import sys

    from pvllm.reports.table3 import run_experiment

    run_experiment("qualitative", sys.argv[1:])
