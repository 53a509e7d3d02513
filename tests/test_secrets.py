"""Issue 16 item 12: no API key in stderr, logs, Hydra outputs or W&B records, on every path that reads one
(YouTube collector, Gemini and OpenAI generators and raters), run through the real entry points against the
fake servers in tests/fakes/, including error replies that echo the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

from tests.fakes.gemini_server import FakeGeminiServer
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.scripted_server import Reply
from tests.fakes.youtube_server import FakeComment, FakeVideo, FakeYouTube

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"YOUTUBE_API_KEY": "yt-key-MUST-NOT-LEAK-0001", "OPENAI_API_KEY": "sk-openai-MUST-NOT-LEAK-0002",
        "GEMINI_API_KEY": "AIza-gemini-MUST-NOT-LEAK-0003", "PVLLM_PSEUDONYM_KEY": "hmac-MUST-NOT-LEAK-0004"}


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, **KEYS, PVLLM_OUTPUTS=str(tmp_path / "outputs"), WANDB_MODE="offline",
               OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    for var in ("OPENAI_BASE_URL", "GOOGLE_GEMINI_BASE_URL"):
        env.pop(var, None)
    return env


def _assert_no_key(*texts: str, files: Path | None = None) -> None:
    blobs = list(texts)
    if files is not None:
        blobs += [p.read_bytes().decode("utf-8", "replace") for p in files.rglob("*") if p.is_file()]
    for var, key in KEYS.items():
        for i, b in enumerate(blobs):
            assert key not in b, f"{var}'s value leaked into output #{i}: ...{b[max(0, b.find(key) - 200):][:400]}"


def test_config_redaction_hides_secrets_not_hyperparameters(monkeypatch):
    from pvllm.utils.lightning import loggable_config

    monkeypatch.setenv("OPENAI_API_KEY", KEYS["OPENAI_API_KEY"])
    cfg = OmegaConf.create({
        "generator": {"max_new_tokens": 64, "tokenizer": "tok-dir", "api_key_env": "OPENAI_API_KEY",
                      "api_key": "inline-secret-value", "hf_token": "hf_abcdefgh",
                      "base_url": f"http://h/v1?key={KEYS['OPENAI_API_KEY']}"},
        "data": {"max_reply_tokens": 32}, "tokens_per_s": 3,
    })  # fmt: skip
    got = loggable_config(cfg)
    assert got["generator"]["max_new_tokens"] == 64 and got["generator"]["tokenizer"] == "tok-dir"
    assert got["data"]["max_reply_tokens"] == 32 and got["tokens_per_s"] == 3
    assert got["generator"]["api_key_env"] == "OPENAI_API_KEY"  # the variable's name, not its value
    assert got["generator"]["api_key"] == "<redacted>" and got["generator"]["hf_token"] == "<redacted>"
    assert got["generator"]["base_url"] == "http://h/v1?key=<redacted>"


def test_youtube_http_errors_do_not_print_the_key(tmp_path):
    fake = FakeYouTube([FakeVideo("vid1", "A short", 10, "PT10S", [FakeComment("c1", "UCx", "@x", "hi", 0)])])
    fake.faults[("search", 1)] = (400, "badRequest")  # re-raised by the collector, after the last retry
    url = fake.start()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pvllm.data.collect", "youtube", "--out", str(tmp_path / "raw"), "--query",
             "cats", "--endpoint", url, "--backoff-s", "0.01"],
            cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=300)  # fmt: skip
    finally:
        fake.stop()
    assert proc.returncode != 0 and "HttpError 400" in proc.stderr  # it failed loudly ...
    assert "key=<redacted>" in proc.stderr  # ... with the request URL, its key cut out
    assert fake.keys_seen == {KEYS["YOUTUBE_API_KEY"]}  # the key did travel, to the server only
    _assert_no_key(proc.stdout, proc.stderr, files=tmp_path / "raw")


def _evaluate(tmp_path: Path, run: str, *overrides: str) -> tuple[subprocess.CompletedProcess, Path]:
    run_dir = tmp_path / run
    proc = subprocess.run(
        [sys.executable, "evaluate.py", "split=test", "samples_per_user=1", f"hydra.run.dir={run_dir}",
         *overrides],
        cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    return proc, run_dir


RETRY = ["{}.retry.attempts=2", "{}.retry.initial_delay_s=0.01", "{}.retry.max_delay_s=0.02", "{}.max_concurrency=1"]


def test_openai_generator_and_rater_never_write_the_key(tmp_path):
    key = KEYS["OPENAI_API_KEY"]
    echo = {"error": {"message": f"Incorrect API key provided: {key}", "type": "invalid_request_error"}}
    with FakeOpenAIServer(default_text="3") as server:
        server.push(Reply(500, echo))  # retried: the warning carries the server's message
        proc, run_dir = _evaluate(
            tmp_path, "openai", "generator=openai_compatible", "generator.model=video-llm",
            f"generator.base_url={server.url}/v1", "rater=openai_compatible", "rater.model=judge",
            f"rater.base_url={server.url}/v1", *[r.format("generator") for r in RETRY],
            *[r.format("rater") for r in RETRY])  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert all(r.headers.get("authorization") == f"Bearer {key}" for r in server.requests)
        n_preds = len((run_dir / "predictions.jsonl").read_text().splitlines())
        assert len(server.requests) > n_preds + 1  # the rater sent requests with the key too
        server.push(Reply(401, echo))  # an auth failure stops the run: its message must not carry the key
        failed, run2 = _evaluate(
            tmp_path, "openai401", "generator=openai_compatible", "generator.model=other-llm",
            f"generator.base_url={server.url}/v1", "rater=lexical", *[r.format("generator") for r in RETRY])
    assert failed.returncode != 0 and "Incorrect API key provided: <redacted>" in failed.stderr
    assert (run_dir / "wandb").is_dir()  # the W&B (offline) records were written, and are checked below
    _assert_no_key(proc.stdout, proc.stderr, failed.stdout, failed.stderr, files=tmp_path)


def test_gemini_generator_and_rater_never_write_the_key(tmp_path):
    key = KEYS["GEMINI_API_KEY"]
    echo = {"error": {"code": 400, "message": f"API key not valid: {key}", "status": "INVALID_ARGUMENT"}}
    with FakeGeminiServer() as server:
        server.push(Reply(400, echo))  # one sample's error is recorded in predictions.jsonl
        proc, run_dir = _evaluate(
            tmp_path, "gemini", "generator=gemini_flash", f"generator.base_url={server.url}",
            "generator.video_transport=inline", "rater=gemini_flash", f"rater.base_url={server.url}",
            *[r.format("generator") for r in RETRY], *[r.format("rater") for r in RETRY])  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert server.requests and all(r.headers.get("x-goog-api-key") == key for r in server.requests)
        n_preds = len((run_dir / "predictions.jsonl").read_text().splitlines())
        assert len(server.generate_calls()) > n_preds  # generator and rater both sent the key
    assert "API key not valid: <redacted>" in (run_dir / "predictions.jsonl").read_text()
    _assert_no_key(proc.stdout, proc.stderr, files=tmp_path)
