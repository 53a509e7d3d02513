"""The human annotation tool (paper Fig. 9) through starlette's TestClient: blind page, escaping, export."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("jinja2")
pytest.importorskip("multipart")

from starlette.testclient import TestClient  # noqa: E402

from pvllm.annotate import latest_annotations  # noqa: E402
from pvllm.annotate.__main__ import parse_args  # noqa: E402
from pvllm.annotate.app import build_app  # noqa: E402
from pvllm.annotate.merge import main as merge_main  # noqa: E402
from pvllm.metrics.alignment import human_scores  # noqa: E402
from pvllm.metrics.ficl import average_annotations  # noqa: E402
from pvllm.utils.jsonl import load_jsonl  # noqa: E402

XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'
GENS = ("pvllm_small_gen", "gemini_flash_gen", "gemini_pro_gen")
SAMPLES = {
    "s1": dict(
        user_id="u1",
        video_id="bunny_01",
        history=["first old comment", "second old comment"],
        reference="ground truth one",
    ),
    "s2": dict(user_id="u2", video_id="nope", history=["u2 history"], reference="ground truth two"),
    "s3": dict(user_id="u3", video_id="bikes_full", history=[], reference="ground truth three"),
}


EXTRA = dict(user_id="u9", video_id="v9", history=[], reference="only here")


def _pred(sid: str, gen: str, text: str | None, error: str | None = None) -> dict:
    ctx = SAMPLES.get(sid, EXTRA)
    return {
        "sample_id": sid,
        "generator": gen,
        "model": gen + "-weights",
        "generation": {},
        "text": text,
        "error": error,
        "latency_s": 0.1,
        **ctx,
    }


def _text(g: str, sid: str) -> str:
    return f"comment number {GENS.index(g)} on {sid}"


def write_runs(tmp_path: Path, *, xss: bool = False, failed: bool = False, extra: bool = False) -> list[Path]:
    runs = []
    for g in GENS:
        d = tmp_path / "runs" / g
        d.mkdir(parents=True, exist_ok=True)
        rows = []
        for sid in SAMPLES:
            text = _text(g, sid)
            if xss and g == GENS[1] and sid == "s1":
                text = XSS
            if failed and g == GENS[2] and sid == "s2":
                rows.append(_pred(sid, g, None, f"RuntimeError: {g}-weights ({g}) decode failed"))
                continue
            rows.append(_pred(sid, g, text))
        if extra and g == GENS[0]:
            rows.append(_pred("s9", g, "only in one run"))
        (d / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        runs.append(d)
    return runs


def client(tmp_path: Path, out: Path, annotator: str = "ann1", **kw) -> TestClient:
    app = build_app(write_runs(tmp_path, **kw), annotator, out, seed=0)
    return TestClient(app)


def _slots(html: str) -> list[str]:
    return sorted(set(re.findall(r'name="(m\d+)_emotion"', html)))


def _token(html: str) -> str:
    return re.search(r'name="token" value="([^"]+)"', html).group(1)


def _full_form(html: str, sid: str, value: str = "0.75") -> dict:
    form = {"sample_id": sid, "seed": "0", "token": _token(html)}
    for m in _slots(html):
        for d in ("emotion", "style", "relevance"):
            form[f"{m}_{d}"] = value
    return form


def test_page_shows_history_ground_truth_and_comments_but_no_model_names(tmp_path):
    c = client(tmp_path, tmp_path / "ann.jsonl")
    r = c.get("/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/sample/1"
    html = c.get("/sample/1").text
    for t in ("first old comment", "second old comment", "ground truth one", "0 / 3 annotated"):
        assert t in html
    for g in GENS:
        assert _text(g, "s1") in html
        assert g not in html and "weights" not in html
    assert "Model A" in html and "Model C" in html
    assert len(_slots(html)) == 3
    assert html.count('type="radio"') == 3 * 3 * 5
    assert "almost identical" in html and "slightly similar" in html
    assert c.get("/sample/4").status_code == 404


def test_generated_comment_is_escaped(tmp_path):
    c = client(tmp_path, tmp_path / "ann.jsonl", xss=True)
    html = c.get("/sample/1").text
    assert "<script>" not in html and 'onerror="window' not in html
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=" in html


def test_control_characters_are_made_visible():
    from pvllm.annotate.app import make_env

    env = make_env()
    out = env.from_string("{{ t | visible }}").render(t="a\x0bb\x02<i>\nc")
    assert out == "a\ufffdb\ufffd&lt;i&gt;\nc"


def test_submit_writes_exactly_the_expected_rows(tmp_path):
    out = tmp_path / "ann.jsonl"
    c = client(tmp_path, out)
    html = c.get("/sample/1").text
    # map the anonymous slots back through the visible comment texts (the server does it by seed)
    slot_of = {}
    for g in GENS:
        pos = html.index(_text(g, "s1"))
        slot_of[g] = re.findall(r'name="(m\d+)_emotion"', html[pos:])[0]
    form = {"sample_id": "s1", "seed": "0", "token": _token(html)}
    want = {GENS[0]: (1, 0.75, 0.5), GENS[1]: (0, 0.25, 0.5), GENS[2]: (0.75, 1, 0)}
    for g, (e, s, rel) in want.items():
        form.update(
            {
                f"{slot_of[g]}_emotion": str(e),
                f"{slot_of[g]}_style": str(s),
                f"{slot_of[g]}_relevance": str(rel),
            }
        )
    r = c.post("/sample/1", data=form, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/sample/2"
    rows = load_jsonl(out)
    assert len(rows) == 3
    for row in rows:
        assert set(row) == {
            "sample_id",
            "generator",
            "annotator",
            "emotion",
            "style",
            "relevance",
            "source",
            "created_at",
        }
        assert row["sample_id"] == "s1" and row["annotator"] == "ann1" and row["source"] == "human"
        assert (row["emotion"], row["style"], row["relevance"]) == want[row["generator"]]
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$", row["created_at"])
    assert [r["generator"] for r in rows] == sorted(GENS)  # not the blind page order
    assert len({r["created_at"] for r in rows}) == 1
    assert "1 / 3 annotated" in c.get("/sample/2").text
    # the revisited page shows the saved choices
    page1 = c.get("/sample/1").text
    assert page1.count(" checked") == 9


@pytest.mark.parametrize("bad", ["missing", "0.3", "2", "abc", "nan", ""])
def test_invalid_score_is_400_and_nothing_written(tmp_path, bad):
    out = tmp_path / "ann.jsonl"
    c = client(tmp_path, out)
    form = _full_form(c.get("/sample/1").text, "s1")
    if bad == "missing":
        del form["m1_style"]
    else:
        form["m1_style"] = bad
    r = c.post("/sample/1", data=form)
    assert r.status_code == 400
    assert "m1_style" in r.text and "Model B" in r.text and "Not saved" in r.text
    assert not out.exists() or out.read_text() == ""
    # the page comes back with the valid choices still selected (8 of 9)
    assert r.text.count(" checked") == 8


def test_stale_or_foreign_form_is_rejected(tmp_path):
    out = tmp_path / "ann.jsonl"
    c = client(tmp_path, out)
    html = c.get("/sample/1").text
    assert c.post("/sample/1", data=_full_form(html, "s2")).status_code == 400  # form of another sample
    for field, value in (("token", "guessed"), ("seed", "1")):  # cross-site post / another server start
        r = c.post("/sample/1", data={**_full_form(html, "s1"), field: value})
        assert r.status_code == 400 and "reload the page" in r.text
    assert not out.exists()


def test_loopback_server_refuses_foreign_host_header(tmp_path):
    from pvllm.annotate.__main__ import allowed_hosts

    app = build_app(
        write_runs(tmp_path), "ann1", tmp_path / "ann.jsonl", allowed_hosts=allowed_hosts("127.0.0.1")
    )
    assert TestClient(app, base_url="http://127.0.0.1:8765").get("/sample/1").status_code == 200
    assert TestClient(app, base_url="http://evil.example:8765").get("/sample/1").status_code == 400
    assert allowed_hosts("0.0.0.0") is None


def test_failed_generation_is_shown_and_not_scorable(tmp_path):
    out = tmp_path / "ann.jsonl"
    c = client(tmp_path, out, failed=True)
    html = c.get("/sample/2").text
    assert "Generation failed" in html and "decode failed" in html
    assert not any(g in html for g in GENS)  # the error message is redacted too (blind)
    assert len(_slots(html)) == 2
    r = c.post("/sample/2", data=_full_form(html, "s2"), follow_redirects=False)
    assert r.status_code == 303
    rows = load_jsonl(out)
    assert sorted(r["generator"] for r in rows) == sorted(GENS[:2])


def test_only_samples_in_all_runs(tmp_path):
    c = client(tmp_path, tmp_path / "ann.jsonl", extra=True)
    assert "0 / 3 annotated" in c.get("/sample/3").text
    assert c.get("/sample/4").status_code == 404


def test_restart_resumes_at_first_unfinished_and_latest_wins(tmp_path):
    out = tmp_path / "ann.jsonl"
    c = client(tmp_path, out)
    c.post("/sample/1", data=_full_form(c.get("/sample/1").text, "s1", "0.5"))
    c.post("/sample/2", data=_full_form(c.get("/sample/2").text, "s2", "0.5"))
    c.post("/sample/1", data=_full_form(c.get("/sample/1").text, "s1", "1"))  # resubmit: appends
    assert len(load_jsonl(out)) == 9
    # another annotator in the same file does not count for ann1
    c2 = TestClient(build_app(write_runs(tmp_path), "ann2", out))
    assert c2.get("/", follow_redirects=False).headers["location"] == "/sample/1"
    # restart as ann1: continues at sample 3
    c3 = TestClient(build_app(write_runs(tmp_path), "ann1", out))
    assert c3.get("/", follow_redirects=False).headers["location"] == "/sample/3"
    assert "2 / 3 annotated" in c3.get("/sample/3").text
    latest = latest_annotations(load_jsonl(out))
    assert len(latest) == 6
    assert {r["emotion"] for r in latest if r["sample_id"] == "s1"} == {1}
    # finishing the last one leads to /done
    r = c3.post("/sample/3", data=_full_form(c3.get("/sample/3").text, "s3"), follow_redirects=False)
    assert r.headers["location"] == "/done"
    assert "3 / 3 annotated" in c3.get("/done").text


def test_torn_last_line_is_cut_and_bad_rows_refused(tmp_path):
    out = tmp_path / "ann.jsonl"
    c = client(tmp_path, out)
    c.post("/sample/1", data=_full_form(c.get("/sample/1").text, "s1"))
    good = out.read_text()
    out.write_text(good + '{"sample_id": "s2", "gener')  # killed mid-write
    c2 = TestClient(build_app(write_runs(tmp_path), "ann1", out))
    assert out.read_text() == good
    c2.post("/sample/2", data=_full_form(c2.get("/sample/2").text, "s2"))
    assert len(load_jsonl(out)) == 6
    out.write_text(good.replace('"style": 0.75', '"style": 0.7', 1))
    with pytest.raises(ValueError, match="row 1: style=0.7"):
        build_app(write_runs(tmp_path), "ann1", out)


def test_cli_reports_bad_input(tmp_path, capsys):
    from pvllm.annotate.__main__ import main

    assert (
        main(["--predictions", str(tmp_path / "nope"), "--annotator", "a", "--out", str(tmp_path / "o")]) == 2
    )
    assert "no predictions.jsonl" in capsys.readouterr().err


def test_pick_users_is_seeded_one_sample_per_user(tmp_path):
    from pvllm.annotate.store import Sample, load_samples, pick_users

    samples = load_samples(write_runs(tmp_path))
    samples.append(Sample("s1b", "u1", "v", [], "second sample of u1"))
    picked = pick_users(samples, 2, seed=3)
    assert len(picked) == 2 and len({s.user_id for s in picked}) == 2
    assert [s.sample_id for s in picked] == [s.sample_id for s in pick_users(samples, 2, seed=3)]
    assert [s.sample_id for s in pick_users(samples, 10)] == ["s1", "s2", "s3"]
    app = build_app(write_runs(tmp_path), "ann1", tmp_path / "ann.jsonl", users=1, users_seed=0)
    assert "0 / 1 annotated" in TestClient(app).get("/sample/1").text


def test_latest_annotations_keeps_last_per_key():
    rows = [
        {"sample_id": "a", "generator": "g", "annotator": "x", "emotion": 0},
        {"sample_id": "a", "generator": "g", "annotator": "y", "emotion": 0.5},
        {"sample_id": "a", "generator": "g", "annotator": "x", "emotion": 1},
    ]
    out = latest_annotations(rows)
    assert [(r["annotator"], r["emotion"]) for r in out] == [("x", 1), ("y", 0.5)]


def test_export_loads_through_human_scores(tmp_path):
    out1, out2 = tmp_path / "a1.jsonl", tmp_path / "a2.jsonl"
    for out, annot, first, second in ((out1, "ann1", "0", "1"), (out2, "ann2", "0.5", "0.5")):
        c = TestClient(build_app(write_runs(tmp_path), annot, out))
        c.post("/sample/1", data=_full_form(c.get("/sample/1").text, "s1", first))
        if annot == "ann1":  # resubmission: the newer score must win after merging
            c.post("/sample/1", data=_full_form(c.get("/sample/1").text, "s1", second))
    merged = tmp_path / "annotations.jsonl"
    assert merge_main([str(out1), str(out2), "--out", str(merged)]) == 0
    hs = human_scores(str(merged))
    assert set(hs) == {"emotion", "style", "relevance"}
    assert set(hs["emotion"]) == {("s1", g) for g in GENS}
    assert all(v == pytest.approx(0.75) for d in hs.values() for v in d.values())  # mean of 1 and 0.5
    assert len(average_annotations(load_jsonl(out1))) == 3  # a single annotator's raw file loads too


def test_merge_writes_table3_alignment_dir(tmp_path):
    from pvllm.reports.table3 import load_alignment_set

    runs = write_runs(tmp_path)
    out = tmp_path / "a.jsonl"
    c = TestClient(build_app(runs, "ann1", out))
    c.post("/sample/2", data=_full_form(c.get("/sample/2").text, "s2", "0.25"))
    align = tmp_path / "align"
    assert merge_main([str(out), "--alignment-dir", str(align), "--predictions", *map(str, runs)]) == 0
    preds, refs, ann_path = load_alignment_set(align)
    assert set(preds) == set(GENS) and all([p["sample_id"] for p in ps] == ["s2"] for ps in preds.values())
    assert refs == {"s2": "ground truth two"}
    assert human_scores(ann_path)["style"] == {("s2", g): 0.25 for g in GENS}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**load_jsonl(out)[0], "emotion": 0.3}) + "\n")
    assert merge_main([str(bad), "--out", str(tmp_path / "m.jsonl")]) == 2
    assert not (tmp_path / "m.jsonl").exists()


def test_frames_with_dataset_and_note_when_missing(tmp_path):
    pytest.importorskip("decord")
    sample = Path(__file__).resolve().parents[1] / "data" / "sample"
    if not (sample / "videos" / "bunny_01.mp4").is_file():
        pytest.skip("sample videos are absent")
    app = build_app(write_runs(tmp_path), "ann1", tmp_path / "ann.jsonl", dataset=sample)
    c = TestClient(app)
    html = c.get("/sample/1").text
    assert html.count('src="data:image/jpeg;base64,') == 8
    assert "bunny_01" in html and "Big Buck Bunny" in html  # video id and title
    html2 = c.get("/sample/2").text
    assert "No frames" in html2 and "nope" in html2


def test_cli_args():
    a = parse_args(["--predictions", "r1", "r2", "--annotator", "A", "--out", "o.jsonl"])
    assert a.predictions == ["r1", "r2"] and a.host == "127.0.0.1" and a.port == 8765 and a.dataset is None


def test_empty_annotator_refused(tmp_path):
    with pytest.raises(ValueError, match="pseudonym"):
        build_app(write_runs(tmp_path), " ", tmp_path / "ann.jsonl")
