"""The annotation tool in real Chromium (headless, selenium): logins, keyboard rating, resume, export, XSS.

One server process (``python -m pvllm.annotate``, as a user starts it) and one browser for the module.
Needs Debian's ``chromium`` and ``chromium-driver``; without them these tests skip, except in CI
(``CI=true`` or ``PVLLM_REQUIRE_BROWSER=1``, which ``.ci/run`` sets) where that is a failure.
``PVLLM_UPDATE_SCREENSHOT=1`` also writes the rating page's screenshot to docs/annotate_rating_page.png.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
from pathlib import Path

import pytest

from pvllm.utils.jsonl import load_jsonl

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO / "data" / "sample"
SCREENSHOT = REPO / "docs" / "annotate_rating_page.png"


def _problem() -> str | None:
    for mod in ("selenium", "starlette", "jinja2", "python_multipart", "uvicorn", "httpx"):
        try:
            __import__(mod)
        except ImportError:
            return f"python package {mod} is not installed (pip install -e '.[dev]')"
    for exe in ("chromium", "chromedriver"):
        if shutil.which(exe) is None:
            return f"{exe} is not installed (apt-get install chromium chromium-driver)"
    return None


_PROBLEM = _problem()
_REQUIRED = (
    os.environ.get("CI", "").lower() in ("true", "1") or os.environ.get("PVLLM_REQUIRE_BROWSER") == "1"
)
if _PROBLEM and _REQUIRED:
    raise RuntimeError(f"browser tests are required here (CI / PVLLM_REQUIRE_BROWSER=1) but {_PROBLEM}")
pytestmark = pytest.mark.skipif(_PROBLEM is not None, reason=f"no real browser: {_PROBLEM}")

if _PROBLEM is None:
    import httpx
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

GENS = ("pvllm", "gemini_flash", "gemini_pro")
XSS_SCRIPT = "<script>alert(1)</script>"
XSS_IMG = "<img src=x onerror=alert(1)>"
SAMPLES = {
    "s1": dict(
        video_id="bunny_01",
        history=["The sound design in this short is unreal", "Rewatching this every spring, never gets old"],
        reference="That meadow at sunrise looks like a painting, I could watch it for hours",
        texts={
            "pvllm": "The meadow at dawn is so peaceful, I could watch this for hours",
            "gemini_flash": "Beautiful animation! The colours are amazing.",
            "gemini_pro": "Big Buck Bunny is a 2008 short film by the Blender Institute.",
        },
    ),
    "s2": dict(
        video_id="bikes_full",
        history=["Cycling in the city is the best commute", "Love seeing bike lanes this busy"],
        reference="So many bikes at one crossing, this is how every city should look",
        texts={
            "pvllm": "Look at all those bikes, every city needs crossings like this",
            "gemini_flash": "Traffic at the crossing seems very busy today.",
            "gemini_pro": "Nice video of bicycles.",
        },
    ),
    "s3": dict(
        video_id="nope",
        history=[XSS_SCRIPT, "plain history"],
        reference=XSS_IMG,
        texts={"pvllm": XSS_SCRIPT, "gemini_flash": XSS_IMG, "gemini_pro": "harmless"},
    ),
}
TEXT_TO_GEN = {(sid, t): g for sid, s in SAMPLES.items() for g, t in s["texts"].items()}
RUBRIC = (0.0, 0.25, 0.5, 0.75, 1.0)
DIMS = ("emotion", "style", "relevance")


def write_runs(root: Path) -> list[Path]:
    runs = []
    for g in GENS:
        d = root / "runs" / g
        d.mkdir(parents=True)
        with (d / "predictions.jsonl").open("w") as f:
            for sid, s in SAMPLES.items():
                row = {
                    "sample_id": sid,
                    "generator": g,
                    "model": g + "-weights",
                    "generation": {},
                    "text": s["texts"][g],
                    "error": None,
                    "latency_s": 0.1,
                    "user_id": "u-" + sid,
                    "video_id": s["video_id"],
                    "history": s["history"],
                    "reference": s["reference"],
                }
                f.write(json.dumps(row) + "\n")
        runs.append(d)
    return runs


def add_user(store: Path, name: str, admin: bool = False) -> str:
    """The login link ``python -m pvllm.annotate users add`` prints (its stdout)."""
    from pvllm.annotate.__main__ import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
        assert (
            main(
                ["users", "add", name, "--dir", str(store), "--url", "http://placeholder"]
                + admin * ["--admin"]
            )
            == 0
        )
    return buf.getvalue().strip()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.test_annotate import ServerProcess

    root = tmp_path_factory.mktemp("annotate_browser")
    store = root / "store"
    links = {n: add_user(store, n) for n in ("ann-a", "ann-b", "ann-c", "ann-d")}
    links["boss"] = add_user(store, "boss", admin=True)
    out = store / "annotations.jsonl"
    runs = [str(r) for r in write_runs(root)]
    srv = ServerProcess(["--predictions", *runs, "--out", str(out), "--dataset", str(SAMPLE_DIR)])
    srv.user_links = {n: link.replace("http://placeholder", srv.base) for n, link in links.items()}
    srv.tokens = {n: link.split("token=", 1)[1] for n, link in links.items()}
    srv.out = out
    srv.shots = root
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def driver():
    os.environ.setdefault("SE_OFFLINE", "true")  # no Selenium Manager lookups (no network here)
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=900,1400",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    ):
        opts.add_argument(arg)
    d = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    yield d
    d.quit()


def wait(driver, cond, timeout: float = 10):
    return WebDriverWait(driver, timeout).until(cond)


def no_alert(driver) -> bool:
    try:
        WebDriverWait(driver, 0.5).until(EC.alert_is_present())
    except TimeoutException:
        return True
    driver.switch_to.alert.accept()
    return False


def open_sample(driver, url: str) -> None:
    driver.get(url)
    wait(driver, EC.presence_of_element_located((By.ID, "rate")))


def page_models(driver, sid: str) -> list[str]:
    """The generators in the page's (blind) order, found through their comments' visible text."""
    comments = driver.find_elements(By.CSS_SELECTOR, ".comment")
    return [TEXT_TO_GEN[(sid, c.text)] for c in comments]


def type_scores(driver, digits: str, enter: bool = True) -> None:
    keys = ActionChains(driver)
    for k in digits:
        keys.send_keys(k)
    if enter:
        keys.send_keys(Keys.ENTER)
    keys.perform()


def typed_values(driver, sid: str, digits: str) -> dict[str, tuple[float, float, float]]:
    """What the digits mean: row by row (model x dimension, page order), key k = k/4."""
    vals = [RUBRIC[int(k)] for k in digits]
    return {g: tuple(vals[3 * i : 3 * i + 3]) for i, g in enumerate(page_models(driver, sid))}


def rate(driver, base: str, n: int, sid: str, digits: str) -> dict[str, tuple[float, float, float]]:
    """Rate sample n with the keyboard, Enter, and wait for the server's confirmation."""
    open_sample(driver, f"{base}/sample/{n}")
    want = typed_values(driver, sid, digits)
    type_scores(driver, digits)
    saved = wait(driver, EC.presence_of_element_located((By.ID, "saved")))
    assert saved.text == f"Saved sample {n}."
    return want


def export(server, fmt: str = "csv") -> list[dict]:
    r = httpx.get(
        f"{server.base}/admin/annotations.{fmt}", headers={"Authorization": f"Bearer {server.tokens['boss']}"}
    )
    assert r.status_code == 200
    if fmt == "csv":
        return [{**row, **{d: float(row[d]) for d in DIMS}} for row in csv.DictReader(io.StringIO(r.text))]
    return [json.loads(x) for x in r.text.splitlines()]


def exported(rows: list[dict], annotator: str, sid: str) -> dict[str, tuple[float, float, float]]:
    return {
        r["generator"]: tuple(r[d] for d in DIMS)
        for r in rows
        if r["annotator"] == annotator and r["sample_id"] == sid
    }


def test_login_rate_two_samples_with_keyboard_reload_and_export(server, driver):
    base = server.base
    driver.get(server.user_links["ann-a"])
    wait(driver, EC.url_contains("/sample/1"))
    assert "/login" not in driver.current_url  # the token leaves the address bar
    # the video plays in the HTML5 player: metadata and first frame come through the Range-serving route
    wait(driver, lambda d: d.execute_script("return document.getElementById('video').readyState") >= 2)
    duration = driver.execute_script("return document.getElementById('video').duration")
    # the player's duration is the file's own (videos.jsonl records it to 0.1 s)
    recorded = {v["video_id"]: v["duration_s"] for v in load_jsonl(SAMPLE_DIR / "videos.jsonl")}["bunny_01"]
    assert duration == pytest.approx(recorded, abs=0.11)
    # sample 1: type all but the last row, screenshot (outlined row visible), then finish and Enter
    digits1 = "432101234"
    want1 = typed_values(driver, "s1", digits1)
    type_scores(driver, digits1[:-3], enter=False)
    shot = server.shots / "rating_page.png"
    save_screenshot(driver, shot)
    type_scores(driver, digits1[-3:])
    saved = wait(driver, EC.presence_of_element_located((By.ID, "saved")))
    assert saved.text == "Saved sample 1." and driver.current_url.endswith("/sample/2?saved=1")
    want2 = rate(driver, base, 2, "s2", "000444222")
    assert driver.current_url.endswith("/sample/3?saved=2")
    # reload: progress kept; "/" resumes at the first unfinished sample; revisited pages show the choices
    driver.refresh()
    assert driver.find_element(By.ID, "progress").text == "2 / 3 annotated"
    driver.get(base + "/")
    wait(driver, EC.url_contains("/sample/3"))
    open_sample(driver, base + "/sample/1")
    checked = driver.execute_script(
        "return Array.from(document.querySelectorAll('tr.cell')).map("
        "r => r.querySelector('input:checked').value)"
    )
    assert [float(v) for v in checked] == [RUBRIC[int(k)] for k in digits1]
    # export (admin): exactly the numbers typed, under the logged-in name
    for fmt in ("csv", "jsonl"):
        rows = export(server, fmt)
        assert exported(rows, "ann-a", "s1") == want1
        assert exported(rows, "ann-a", "s2") == want2
        assert not exported(rows, "ann-a", "s3")
    # the admin view in the browser shows ann-a's progress
    driver.get(server.user_links["boss"])
    wait(driver, EC.url_contains("/admin"))
    cells = [td.text for td in driver.find_elements(By.CSS_SELECTOR, "#annotators tr:nth-child(2) td")]
    assert cells == ["ann-a", "2 / 3", "6"]


def save_screenshot(driver, path: Path) -> None:
    """The whole page as PNG (palette-reduced: small enough to commit under docs/)."""
    from PIL import Image

    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(900, min(height + 140, 2400))
    # show a frame of the clip, not the loading indicator: seek and wait for the frame
    driver.execute_async_script(
        "var v = document.getElementById('video'), done = arguments[0];"
        "v.addEventListener('seeked', () => done(), {once: true}); v.currentTime = 0.6;"
    )
    wait(driver, lambda d: d.execute_script("return document.getElementById('video').readyState >= 2"))
    driver.get_screenshot_as_file(str(path))
    img = Image.open(path).convert("RGB").quantize(colors=64)
    img.save(path, optimize=True)
    assert img.width >= 800 and path.stat().st_size < 400_000
    if os.environ.get("PVLLM_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(path, SCREENSHOT)


def test_comments_with_markup_show_as_text_and_no_alert_fires(server, driver):
    driver.get(server.user_links["ann-d"])
    wait(driver, EC.url_contains("/sample/1"))
    open_sample(driver, server.base + "/sample/3")
    assert no_alert(driver)
    texts = {c.text for c in driver.find_elements(By.CSS_SELECTOR, ".comment")}
    assert texts == {XSS_SCRIPT, XSS_IMG, "harmless"}
    assert driver.find_element(By.ID, "ground-truth").text == XSS_IMG
    assert XSS_SCRIPT in driver.find_element(By.ID, "history").text
    n_img = driver.execute_script("return document.querySelectorAll('#rate img, #history img').length")
    n_script = driver.execute_script("return document.querySelectorAll('body script:not([src])').length")
    assert (n_img, n_script) == (0, 0)
    assert no_alert(driver)


def test_request_without_token_is_refused(server, driver):
    for path in ("/", "/sample/1", "/admin", "/admin/annotations.csv", "/video/bunny_01"):
        assert httpx.get(server.base + path).status_code == 401, path
    r = httpx.get(server.base + "/admin", headers={"Authorization": f"Bearer {server.tokens['ann-a']}"})
    assert r.status_code == 403
    driver.delete_all_cookies()
    driver.get(server.base + "/sample/1")
    assert "Not logged in" in wait(driver, EC.presence_of_element_located((By.ID, "error"))).text


def test_replayed_form_without_valid_csrf_is_refused(server, driver):
    before = server.out.read_text() if server.out.exists() else ""
    driver.get(server.user_links["ann-d"])
    wait(driver, EC.url_contains("/sample/"))
    open_sample(driver, server.base + "/sample/2")
    driver.execute_script("document.querySelector('#rate input[name=csrf]').value = 'replayed'")
    type_scores(driver, "111111111")
    err = wait(driver, EC.presence_of_element_located((By.ID, "error")))
    assert "no valid security (CSRF) token" in err.text
    # the same form replayed outside the page: with the cookie but without the token
    form = {"sample_id": "s2", "seed": "0", **{f"m{i}_{d}": "0.25" for i in range(3) for d in DIMS}}
    cookies = {c["name"]: c["value"] for c in driver.get_cookies()}
    r = httpx.post(f"{server.base}/sample/2", data=form, cookies=cookies)
    assert r.status_code == 403
    assert (server.out.read_text() if server.out.exists() else "") == before
    assert not exported(export(server), "ann-d", "s2")


def test_two_annotators_ratings_stay_separate(server, driver):
    want = {}
    for name, digits in (("ann-b", "444444444"), ("ann-c", "012340123")):
        driver.get(server.user_links[name])
        wait(driver, EC.url_contains("/sample/1"))
        want[name] = rate(driver, server.base, 1, "s1", digits)
    assert want["ann-b"] != want["ann-c"]
    rows = export(server)
    for name in want:
        assert exported(rows, name, "s1") == want[name]
    summary = httpx.get(
        f"{server.base}/admin/summary.json", headers={"Authorization": f"Bearer {server.tokens['boss']}"}
    ).json()
    done = {a["annotator"]: a["samples_done"] for a in summary["progress"]["annotators"]}
    assert done["ann-b"] >= 1 and done["ann-c"] >= 1
