"""The human annotation tool (paper Fig. 9) through starlette's TestClient: blind page, escaping, export."""

from __future__ import annotations

import csv
import io
import json
import re
import threading
import time
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
from pvllm.annotate.store import read_annotations  # noqa: E402
from pvllm.metrics.alignment import human_scores  # noqa: E402
from pvllm.metrics.ficl import average_annotations  # noqa: E402
from pvllm.utils.jsonl import load_jsonl  # noqa: E402

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "data" / "sample"
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


def login(app, name: str | None = None) -> TestClient:
    """A TestClient logged in with the app's session token (``--annotator``) or a stored user's token."""
    c = TestClient(app)
    token = app.state.session_tokens[name] if name in app.state.session_tokens else name
    r = c.get(f"/login?token={token}", follow_redirects=False)
    assert r.status_code == 303, r.text
    return c


def client(tmp_path: Path, out: Path, annotator: str = "ann1", **kw) -> TestClient:
    app = build_app(write_runs(tmp_path, **kw), out, annotator=annotator, seed=0)
    return login(app, annotator)


def _slots(html: str) -> list[str]:
    return sorted(set(re.findall(r'name="(m\d+)_emotion"', html)))


def _csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def _full_form(html: str, sid: str, value: str = "0.75") -> dict:
    form = {"sample_id": sid, "seed": "0", "csrf": _csrf(html)}
    for m in _slots(html):
        for d in ("emotion", "style", "relevance"):
            form[f"{m}_{d}"] = value
    return form


def _form_by_generator(html: str, sid: str, want: dict) -> dict:
    """The form that gives each generator its (emotion, style, relevance): slots found by comment text."""
    form = {"sample_id": sid, "seed": "0", "csrf": _csrf(html)}
    for g, (e, s, rel) in want.items():
        pos = html.index(_text(g, sid))
        slot = re.findall(r'name="(m\d+)_emotion"', html[pos:])[0]
        form.update({f"{slot}_emotion": str(e), f"{slot}_style": str(s), f"{slot}_relevance": str(rel)})
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
    from pvllm.annotate.render import make_env

    env = make_env()
    out = env.from_string("{{ t | visible }}").render(t="a\x0bb\x02<i>\nc")
    assert out == "a\ufffdb\ufffd&lt;i&gt;\nc"


def test_submit_writes_exactly_the_expected_rows(tmp_path):
    out = tmp_path / "ann.jsonl"
    c = client(tmp_path, out)
    html = c.get("/sample/1").text
    # map the anonymous slots back through the visible comment texts (the server does it by seed)
    want = {GENS[0]: (1, 0.75, 0.5), GENS[1]: (0, 0.25, 0.5), GENS[2]: (0.75, 1, 0)}
    form = _form_by_generator(html, "s1", want)
    form["annotator"] = "someone-else"  # ignored: rows carry the logged-in name
    r = c.post("/sample/1", data=form, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/sample/2?saved=1"
    assert "Saved sample 1." in c.get(r.headers["location"]).text
    assert "Saved sample" not in c.get("/sample/2?saved=2").text  # confirms only what is on disk
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
    r = c.post("/sample/1", data={**_full_form(html, "s1"), "seed": "1"})  # another --seed
    assert r.status_code == 400 and "reload the page" in r.text
    assert not out.exists()


def test_loopback_server_refuses_foreign_host_header(tmp_path):
    from pvllm.annotate.__main__ import allowed_hosts

    app = build_app(
        write_runs(tmp_path),
        tmp_path / "ann.jsonl",
        annotator="ann1",
        allowed_hosts=allowed_hosts("127.0.0.1"),
    )
    login_url = f"/login?token={app.state.session_tokens['ann1']}"
    assert TestClient(app, base_url="http://127.0.0.1:8765").get(login_url).status_code == 200
    assert TestClient(app, base_url="http://evil.example:8765").get(login_url).status_code == 400
    assert allowed_hosts("0.0.0.0") is None and allowed_hosts("::1") is not None


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
    c2 = client(tmp_path, out, "ann2")
    assert c2.get("/", follow_redirects=False).headers["location"] == "/sample/1"
    # restart as ann1: continues at sample 3
    c3 = client(tmp_path, out, "ann1")
    assert c3.get("/", follow_redirects=False).headers["location"] == "/sample/3"
    assert "2 / 3 annotated" in c3.get("/sample/3").text
    latest = latest_annotations(load_jsonl(out))
    assert len(latest) == 6
    assert {r["emotion"] for r in latest if r["sample_id"] == "s1"} == {1}
    # finishing the last one leads to /done
    r = c3.post("/sample/3", data=_full_form(c3.get("/sample/3").text, "s3"), follow_redirects=False)
    assert r.headers["location"] == "/done?saved=3"
    assert "3 / 3 annotated" in c3.get("/done").text


def test_torn_last_line_is_cut_and_bad_rows_refused(tmp_path):
    out = tmp_path / "ann.jsonl"
    c = client(tmp_path, out)
    c.post("/sample/1", data=_full_form(c.get("/sample/1").text, "s1"))
    good = out.read_text()
    out.write_text(good + '{"sample_id": "s2", "gener')  # killed mid-write
    c2 = client(tmp_path, out, "ann1")
    assert out.read_text() == good
    c2.post("/sample/2", data=_full_form(c2.get("/sample/2").text, "s2"))
    assert len(load_jsonl(out)) == 6
    out.write_text(good.replace('"style": 0.75', '"style": 0.7', 1))
    with pytest.raises(ValueError, match="row 1: style=0.7"):
        build_app(write_runs(tmp_path), out, annotator="ann1")


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
    app = build_app(write_runs(tmp_path), tmp_path / "ann.jsonl", annotator="ann1", users=1, users_seed=0)
    assert "0 / 1 annotated" in login(app, "ann1").get("/sample/1").text


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
        c = client(tmp_path, out, annot)
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
    c = login(build_app(runs, out, annotator="ann1"), "ann1")
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
    app = build_app(write_runs(tmp_path), tmp_path / "ann.jsonl", annotator="ann1", dataset=sample)
    c = login(app, "ann1")
    html = c.get("/sample/1").text
    assert html.count('src="data:image/jpeg;base64,') == 8
    assert "bunny_01" in html and "Big Buck Bunny" in html  # video id and title
    assert '<video id="video" controls preload="metadata" width="480" src="/video/bunny_01">' in html
    html2 = c.get("/sample/2").text
    assert "No frames" in html2 and "nope" in html2
    assert "<video" not in html2 and "No video: video &#39;nope&#39; is not in the dataset" in html2


def test_cli_args():
    a = parse_args(["--predictions", "r1", "r2", "--annotator", "A", "--out", "o.jsonl"])
    assert a.predictions == ["r1", "r2"] and a.host == "127.0.0.1" and a.port == 8765 and a.dataset is None
    assert parse_args(["--predictions", "r1", "--out", "o.jsonl"]).annotator is None


@pytest.mark.parametrize("name", [" ", "a b", "<x>", "x" * 65])
def test_bad_annotator_name_refused(tmp_path, name):
    with pytest.raises(ValueError, match="pseudonym"):
        build_app(write_runs(tmp_path), tmp_path / "ann.jsonl", annotator=name)


# --- logins, CSRF, admin view (issue 15) ---------------------------------------------------------------


def add_user(tmp_path: Path, name: str, admin: bool = False, capsys=None) -> str:
    """``python -m pvllm.annotate users add`` as a user runs it; returns the token of the printed link."""
    from pvllm.annotate.__main__ import main

    args = ["users", "add", name, "--dir", str(tmp_path), "--url", "http://127.0.0.1:9"]
    assert main(args + (["--admin"] if admin else [])) == 0
    link = capsys.readouterr().out.strip()
    assert link.startswith("http://127.0.0.1:9/login?token=")
    return link.split("token=", 1)[1]


def test_users_cli_stores_only_hashes_and_tokens_log_in(tmp_path, capsys):
    import hashlib
    import os

    from pvllm.annotate.__main__ import main

    tok_a = add_user(tmp_path, "ann-a", capsys=capsys)
    tok_boss = add_user(tmp_path, "boss", admin=True, capsys=capsys)
    assert len(tok_a) >= 40 and tok_a != tok_boss
    users_json = tmp_path / "users.json"
    text = users_json.read_text()
    assert tok_a not in text and hashlib.sha256(tok_a.encode()).hexdigest() in text
    assert os.stat(users_json).st_mode & 0o077 == 0  # owner only
    assert main(["users", "add", "ann-a", "--dir", str(tmp_path)]) == 2  # exists: needs --reset
    assert "--reset" in capsys.readouterr().err
    assert main(["users", "list", "--dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == ["ann-a\tannotator", "boss\tadmin"]

    app = build_app(write_runs(tmp_path), tmp_path / "ann.jsonl")  # users.json next to --out
    c = TestClient(app)
    r = c.get(f"/login?token={tok_a}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert c.get("/", follow_redirects=False).headers["location"] == "/sample/1"
    assert c.get("/sample/1").status_code == 200
    assert c.get("/admin").status_code == 403  # an annotator is not an admin
    boss = TestClient(app)
    assert boss.get(f"/login?token={tok_boss}", follow_redirects=False).headers["location"] == "/admin"
    assert boss.get("/sample/1").status_code == 403  # admins do not annotate
    # removing a user (while the server runs) ends its login at once
    assert main(["users", "remove", "ann-a", "--dir", str(tmp_path)]) == 0
    assert c.get("/sample/1").status_code == 401


def test_every_route_needs_a_login(tmp_path):
    app = build_app(write_runs(tmp_path), tmp_path / "ann.jsonl", annotator="ann1", dataset=SAMPLE_DIR)
    anon = TestClient(app)
    for path in (
        "/",
        "/sample/1",
        "/done",
        "/admin",
        "/admin/annotations.csv",
        "/video/bunny_01",
        "/rate.js",
    ):
        r = anon.get(path, follow_redirects=False)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert anon.post("/sample/1", data={"sample_id": "s1"}).status_code == 401
    assert anon.get("/login?token=wrong").status_code == 401
    assert anon.get("/sample/1", headers={"Authorization": "Bearer wrong"}).status_code == 401
    token = app.state.session_tokens["ann1"]
    assert anon.get("/sample/1", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    r = anon.get("/sample/1", headers={"Authorization": f"Bearer {token}"})
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["referrer-policy"] == "same-origin"


def test_csrf_token_required_and_bound_to_the_annotator(tmp_path):
    out = tmp_path / "ann.jsonl"
    app = build_app(write_runs(tmp_path), out, annotator="ann1")
    c = login(app, "ann1")
    form = _full_form(c.get("/sample/1").text, "s1")
    no_csrf = {k: v for k, v in form.items() if k != "csrf"}
    assert c.post("/sample/1", data=no_csrf).status_code == 403
    assert c.post("/sample/1", data={**form, "csrf": "0" * 64}).status_code == 403
    # another server start (or another annotator) has other CSRF tokens
    other = build_app(write_runs(tmp_path), out, annotator="ann1")
    other_csrf = _csrf(login(other, "ann1").get("/sample/1").text)
    r = c.post("/sample/1", data={**form, "csrf": other_csrf})
    assert r.status_code == 403 and "CSRF" in r.text and "Nothing was saved" in r.text
    # a cross-site page posting with the victim's cookie: the browser names the other origin
    r = c.post("/sample/1", data=form, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    assert c.post("/logout", data={}).status_code == 403
    assert not out.exists()
    r = c.post("/sample/1", data=form, headers={"Origin": "http://testserver"}, follow_redirects=False)
    assert r.status_code == 303 and len(load_jsonl(out)) == 3
    assert c.post("/logout", data={"csrf": form["csrf"]}).status_code == 200
    assert c.get("/sample/1").status_code == 401


def test_two_annotators_stay_separate_and_admin_reports_alpha(tmp_path, capsys):
    out = tmp_path / "ann.jsonl"
    tokens = {n: add_user(tmp_path, n, capsys=capsys) for n in ("ann-a", "ann-b", "ann-c")}
    boss_token = add_user(tmp_path, "boss", admin=True, capsys=capsys)
    app = build_app(write_runs(tmp_path), out)
    g0, g1, g2 = GENS
    typed = {
        "ann-a": {g0: (1, 0.5, 1), g1: (0.5, 0.5, 0), g2: (0, 0.5, 0.5)},
        "ann-b": {g0: (0.75, 0.5, 0), g1: (0.5, 0.5, 1), g2: (0, 0.5, 0.5)},
    }
    for name, want in typed.items():
        c = login(app, tokens[name])
        assert (
            c.post("/sample/1", data=_form_by_generator(c.get("/sample/1").text, "s1", want)).status_code
            == 200
        )
    c = login(app, tokens["ann-a"])  # ann-a also finishes sample 2
    c.post("/sample/2", data=_full_form(c.get("/sample/2").text, "s2", "0.25"))
    boss = login(app, boss_token)
    assert "2 / 3 annotated" in c.get("/done").text
    rows = list(csv.DictReader(io.StringIO(boss.get("/admin/annotations.csv").text)))
    got = {
        (r["annotator"], r["sample_id"], r["generator"]): (r["emotion"], r["style"], r["relevance"])
        for r in rows
    }
    for name, want in typed.items():  # both annotators' scores of the same items, each under its own name
        for g, v in want.items():
            assert tuple(float(x) for x in got[(name, "s1", g)]) == v
    assert len(rows) == 3 + 3 + 3 and {r["annotator"] for r in rows} == {"ann-a", "ann-b"}
    summary = boss.get("/admin/summary.json").json()
    # alpha by hand (Krippendorff 2011, interval): emotion units {1,.75} {.5,.5} {0,0}: D_o = 2*.0625/6,
    # D_e = 9.625/30 -> 1 - 5/77; style: all equal -> undefined; relevance {1,0} {0,1} {.5,.5}: 1 - (4/6)/.4
    alpha = {a["dimension"]: a["alpha"] for a in summary["agreement"]}
    assert alpha["emotion"] == pytest.approx(72 / 77) and alpha["style"] is None
    assert alpha["relevance"] == pytest.approx(-2 / 3)
    assert {a["dimension"]: a["units"] for a in summary["agreement"]} == {d: 3 for d in alpha}
    prog = {a["annotator"]: (a["samples_done"], a["ratings"]) for a in summary["progress"]["annotators"]}
    assert prog == {"ann-a": (2, 6), "ann-b": (1, 3), "ann-c": (0, 0)}
    per_model = {m["generator"]: m["rated"] for m in summary["progress"]["models"]}
    assert per_model[g0] == {"ann-a": 2, "ann-b": 1, "ann-c": 0}
    html = boss.get("/admin").text
    assert "0.935" in html and "-0.667" in html and "n/a" in html and "2 / 3" in html
    agree_csv = boss.get("/admin/agreement.csv").text.splitlines()
    assert agree_csv[0] == "dimension,alpha,units,values" and agree_csv[2] == "style,,3,6"
    jsonl = [json.loads(x) for x in boss.get("/admin/annotations.jsonl").text.splitlines()]
    assert jsonl == latest_annotations(load_jsonl(out))


def test_non_loopback_bind_needs_stored_users(tmp_path, capsys):
    from pvllm.annotate.__main__ import main

    runs = [str(r) for r in write_runs(tmp_path)]
    out = str(tmp_path / "ann.jsonl")
    for extra in ([], ["--annotator", "ann1"]):
        assert main(["--predictions", *runs, "--out", out, "--host", "0.0.0.0", *extra]) == 2
        err = capsys.readouterr().err
        assert "refusing to listen on 0.0.0.0" in err and "users add NAME" in err
    assert main(["--predictions", *runs, "--out", out]) == 2  # nobody could log in
    assert "nobody can log in" in capsys.readouterr().err


def test_video_is_served_with_range_requests(tmp_path):
    app = build_app(write_runs(tmp_path), tmp_path / "ann.jsonl", annotator="ann1", dataset=SAMPLE_DIR)
    c = login(app, "ann1")
    data = (SAMPLE_DIR / "videos" / "bunny_01.mp4").read_bytes()
    r = c.get("/video/bunny_01")
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4" and r.content == data
    assert r.headers["accept-ranges"] == "bytes"
    r = c.get("/video/bunny_01", headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == data[100:200]
    assert r.headers["content-range"] == f"bytes 100-199/{len(data)}"
    assert c.get("/video/nope").status_code == 404
    assert c.get("/video/..%2Fvideos.jsonl").status_code == 404


# --- a real server process, killed ----------------------------------------------------------------------


class ServerProcess:
    """``python -m pvllm.annotate ... --port 0`` in a subprocess; ``base`` and the login ``links``."""

    def __init__(self, args: list[str]):
        import subprocess
        import sys

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pvllm.annotate", *args, "--port", "0"],
            stderr=subprocess.PIPE,
            text=True,
        )
        self.links: dict[str, str] = {}
        self.log: list[str] = []
        for line in self.proc.stderr:
            self.log.append(line)
            m = re.match(r"(\S+) \(\d+ done\): open (http://\S+)", line)
            if m:
                self.links[m.group(1)] = m.group(2)
            m = re.match(r"listening on (http://[^/]+)/", line)
            if m:
                self.base = m.group(1)
                # keep reading its stderr: a full pipe would block the server
                threading.Thread(target=self.log.extend, args=(self.proc.stderr,), daemon=True).start()
                return
        raise RuntimeError("server did not start:\n" + "".join(self.log))

    def kill(self) -> None:
        import signal

        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill()


def test_killed_server_loses_no_confirmed_save(tmp_path):
    import httpx

    runs = [str(r) for r in write_runs(tmp_path)]
    out = tmp_path / "ann.jsonl"
    args = ["--predictions", *runs, "--out", str(out), "--annotator", "ann1"]
    srv = ServerProcess(args)
    confirmed: list[tuple[str, float]] = []
    try:
        with httpx.Client(base_url=srv.base, follow_redirects=True) as c:
            assert c.get(srv.links["ann1"]).status_code == 200  # login -> redirect -> sample 1
            for n, sid in ((1, "s1"), (2, "s2")):
                r = c.post(f"/sample/{n}", data=_full_form(c.get(f"/sample/{n}").text, sid, "0.5"))
                assert r.status_code == 200 and f"Saved sample {n}." in r.text
                confirmed.append((sid, 0.5))
            html3 = c.get("/sample/3").text
            stop = threading.Event()

            def hammer():  # resubmit sample 3 until the kill; note each value the server confirmed
                k = 0
                while not stop.is_set():
                    v = (0.0, 0.25, 0.5, 0.75, 1.0)[k % 5]
                    try:
                        r = c.post("/sample/3", data=_full_form(html3, "s3", str(v)), follow_redirects=False)
                    except httpx.HTTPError:
                        return
                    if r.status_code == 303:
                        confirmed.append(("s3", v))
                    k += 1

            t = threading.Thread(target=hammer)
            t.start()
            deadline = time.monotonic() + 10
            while sum(s == "s3" for s, _ in confirmed) < 5 and time.monotonic() < deadline:
                time.sleep(0.02)
            srv.kill()  # SIGKILL: no shutdown handler runs
            stop.set()
            t.join(timeout=10)
    finally:
        srv.stop()
    s3 = [v for s, v in confirmed if s == "s3"]
    assert len(s3) >= 5
    rows = read_annotations(out)
    on_disk = [(r["sample_id"], r["emotion"]) for r in rows]
    # every confirmed save is on disk with all of its rows, in order (one unconfirmed save may follow)
    saves = [on_disk[i : i + 3] for i in range(0, len(on_disk) - len(on_disk) % 3, 3)]
    assert [(s[0][0], s[0][1]) for s in saves][: len(confirmed)] == confirmed
    assert all(len({x for x in s}) == 1 for s in saves)
    assert len(saves) - len(confirmed) in (0, 1)
    # a restart resumes: samples 1-3 are done, the latest sample-3 scores are on the revisited page
    srv2 = ServerProcess(args)
    try:
        with httpx.Client(base_url=srv2.base, follow_redirects=True) as c:
            r = c.get(srv2.links["ann1"])
            assert r.url.path == "/done" and "3 / 3 annotated" in r.text
            last = saves[-1][0][1]
            checked = re.findall(
                r'<input type="radio"[^>]*value="([^"]+)"[^>]*checked', c.get("/sample/3").text
            )
            assert checked == [f"{last:g}"] * 9
    finally:
        srv2.stop()
