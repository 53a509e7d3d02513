"""yt-dlp downloads from a local HTTP server serving the real mp4s of ../shared/data/videos in place."""

import hashlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pvllm.data.download import download_videos, find_video_file, main, video_stem
from pvllm.utils.jsonl import load_jsonl, write_jsonl

VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos"
pytestmark = pytest.mark.skipif(
    not (VIDEOS / "bikes.mp4").exists(), reason="../shared/data/videos not present"
)


class RangeServer:
    """Serves files from a folder with HTTP Range support; counts body bytes sent per path."""

    def __init__(self, root: Path):
        self.root = root
        self.sent: dict[str, int] = {}
        self.ranges: list[str | None] = []
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                path = srv.root / self.path.lstrip("/")
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                rng = self.headers.get("Range")
                srv.ranges.append(rng)
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                self.send_response(206 if rng else 200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(data) - start))
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                self.wfile.write(data[start:])
                srv.sent[self.path] = srv.sent.get(self.path, 0) + len(data) - start

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = RangeServer(VIDEOS)
    yield s
    s.stop()


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_download_rate_limited_failures_listed_and_rerun_skips(server, tmp_path):
    size = (VIDEOS / "bikes.mp4").stat().st_size  # 0.51 MB
    items = [("clipA", f"{server.url}/bikes.mp4"), ("gone", f"{server.url}/not_there.mp4")]
    t0 = time.monotonic()
    report = download_videos(items, tmp_path, rate_limit=400_000, retries=0)
    elapsed = time.monotonic() - t0
    assert report.downloaded == ["clipA"] and [f["video_id"] for f in report.failed] == ["gone"]
    assert "404" in report.failed[0]["error"]
    assert sha(tmp_path / "clipA.mp4") == sha(VIDEOS / "bikes.mp4")
    assert elapsed >= 0.5 * size / 400_000  # ~1.3 s at 400 kB/s; unlimited takes ~0.1 s
    assert load_jsonl(tmp_path / "failed_downloads.jsonl") == report.failed
    assert "bikes" in (tmp_path / "download_archive.txt").read_text()

    before = dict(server.sent)
    report = download_videos(items, tmp_path, retries=0)
    assert report.skipped == ["clipA"] and report.downloaded == [] and len(report.failed) == 1
    assert server.sent.get("/bikes.mp4") == before["/bikes.mp4"]  # nothing re-fetched


def test_partial_file_resumes_with_range(server, tmp_path):
    data = (VIDEOS / "sample_demo_3.mp4").read_bytes()
    (tmp_path / "demo.mp4.part").write_bytes(data[:200_000])
    report = download_videos([("demo", f"{server.url}/sample_demo_3.mp4")], tmp_path, retries=0)
    assert report.downloaded == ["demo"]
    assert (tmp_path / "demo.mp4").read_bytes() == data
    # the generic extractor's probe GET is not a media download; the media GET asks for the rest only
    assert server.ranges[-1] == "bytes=200000-"
    assert server.ranges.count(None) == 1 and len(server.ranges) == 2


def test_unsafe_ids_get_stable_file_names_and_cli_lists_failures(server, tmp_path, capsys):
    assert video_stem("abc_DEF-12") == "abc_DEF-12"
    assert video_stem("無職転生Ⅱ/03") == video_stem("無職転生Ⅱ/03") != video_stem("無職転生Ⅱ/04")
    assert video_stem("無職転生Ⅱ/03").startswith("v_") and "/" not in video_stem("無職転生Ⅱ/03")
    write_jsonl(
        tmp_path / "videos.jsonl",
        [{"video_id": "無職転生Ⅱ/03", "url": f"{server.url}/bikes.mp4"}, {"video_id": "x"}],
    )
    rc = main(
        ["--videos", str(tmp_path / "videos.jsonl"), "--out", str(tmp_path / "v"), "--retries", "0",
         "--url-template", server.url + "/missing/{video_id}.mp4"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 1
    assert (
        "downloaded 1, already present 0, failed 1" in out and f"FAILED x {server.url}/missing/x.mp4" in out
    )
    assert find_video_file(tmp_path / "v", "無職転生Ⅱ/03").name == video_stem("無職転生Ⅱ/03") + ".mp4"
