"""Figures 7/8 page: frames, history, target, each model's comment and FICL scores; all text escaped."""

import base64
import io
import re

import pytest
from markupsafe import escape
from PIL import Image

from pvllm.data.histories import build_eval_histories
from pvllm.utils.jsonl import write_jsonl
from tests.conftest import SAMPLE
from tests.entrypoints import compose_config, entry_module

XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'


def _run_dir(root, name, generator, rows, texts, ficl):
    d = root / "eval" / name
    d.mkdir(parents=True)
    write_jsonl(
        d / "predictions.jsonl",
        [
            {
                "sample_id": r["sample_id"],
                "generator": generator,
                "model": f"{generator}-weights",
                "generation": {},
                "text": t,
                "error": None if t is not None else "HTTP 500",
                "latency_s": 0.1,
                "user_id": r["user_id"],
                "video_id": r["video_id"],
                "history": [h["text"] for h in r["history"]],
                "reference": r["reference"],
            }
            for r, t in zip(rows, texts)
        ],
    )
    write_jsonl(
        d / "scores.jsonl",
        [
            {
                "sample_id": r["sample_id"],
                "generator": generator,
                "metric": m,
                "value": v,
                "rater": "lexical/x",
                "status": "ok",
            }
            for r, vals in zip(rows, ficl)
            for m, v in zip(("FICL-E", "FICL-S", "FICL-R"), vals)
        ],
    )
    return d


@pytest.fixture()
def runs(tmp_path, sample_ds):
    rows = [s.to_row() for s in build_eval_histories(sample_ds, "val", k=5, seed=0)][:2]
    rows[0]["history"][0]["text"] = "history & <b>bold</b>"
    a = _run_dir(
        tmp_path, "run-a", "pvllm", rows, [XSS, "nice bikes"], [(25.0, 50.0, 75.0), (0.0, 100.0, 50.0)]
    )
    b = _run_dir(
        tmp_path, "run-b", "gemini_flash", rows, ["so fun 😂", None], [(100.0, 75.0, 0.0), (0, 0, 0)]
    )
    return tmp_path, rows, a, b


def test_page_shows_everything_escaped(runs, capsys):
    root, rows, a, b = runs
    cfg = compose_config(
        "evaluate",
        [
            "experiment=qualitative",
            f"paths.output_root={root}",
            "report.num_frames=3",
            f"report.sample_ids=[{rows[0]['sample_id']},{rows[1]['sample_id']}]",
            f"report.runs=[{a},run-b]",
        ],
        root / "r",
    )
    path = entry_module("evaluate").evaluate(cfg)  # stage=report: the page only
    page = path.read_text(encoding="utf-8")
    assert path == root / "reports" / "qualitative" / "qualitative.html"
    # no markup from the data survives: the only tags are the template's own
    assert "<script" not in page and 'onerror="window' not in page
    assert (
        "&lt;script&gt;window.__xss=1&lt;/script&gt;&lt;img src=x onerror=&#34;window.__xss=2&#34;&gt;"
        in page
    )
    assert "history &amp; &lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold" not in page
    for r in rows:
        assert str(escape(r["reference"])) in page
        for h in r["history"][1:]:
            assert f"<li>{escape(h['text'])}</li>" in page
    assert "so fun 😂" in page and "HTTP 500" in page and "pvllm-weights" in page
    # FICL cells: E/S/R of each model, row by row
    row_a0 = page[page.index("pvllm-weights") :]
    assert re.search(r"<td>25</td><td>50</td><td>75</td>", row_a0)
    assert "<td>100</td><td>75</td><td>0</td>" in page
    # 3 frames per sample, real JPEG thumbnails 96 px high
    imgs = re.findall(r'src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(imgs) == 3 * len(rows)
    im = Image.open(io.BytesIO(base64.b64decode(imgs[0])))
    assert im.format == "JPEG" and im.height == 96
    assert "{'samples': 2, 'missing_predictions': 0, 'frame_errors': 0}" in capsys.readouterr().out


def test_page_refuses_runs_of_different_histories(runs):
    from pvllm.reports.qualitative import build_page

    root, rows, a, b = runs
    other = dict(rows[0], history=[])
    c = _run_dir(root, "run-c", "text_only", [other], ["hi"], [(1, 2, 3)])
    with pytest.raises(ValueError, match="different histories"):
        build_page([rows[0]["sample_id"]], [a, c], SAMPLE)
    with pytest.raises(KeyError, match="none of the runs"):
        build_page(["no-such-id"], [a, b], SAMPLE)
    # a sample missing from one run is shown as such and counted
    page, counts = build_page([rows[1]["sample_id"]], [a, c], SAMPLE, num_frames=1, labels=["PV-LLM", "Text"])
    assert "<td>PV-LLM<br>" in page and "<td>Text<br>" in page and "<td>pvllm<br>" not in page
    assert counts == {"samples": 1, "missing_predictions": 1, "frame_errors": 0}
    assert "no prediction in this run" in page
