"""Issue 16 item 12 and issue 25 items 1-3: no API key in stderr, stdout, logs, JSONL rows, Hydra outputs or W&B
records, on every path that reads one (YouTube collector, Gemini and OpenAI-compatible generators and raters, a
key inside a base_url), run through the real entry points against the fake servers in tests/fakes/, which echo
the key in error bodies and headers. The variables have innocent names (LLM_AUTH, ...), so only redaction by
*value* can catch them; the test greps every file the run wrote and both streams for every value."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

from tests.fakes.gemini_server import FakeGeminiServer
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.scripted_server import ECHO_KEY, Reply
from tests.fakes.youtube_server import FakeComment, FakeVideo, FakeYouTube

ROOT = Path(__file__).resolve().parents[1]
# innocent names: nothing in them says "key" or "token"
KEYS = {"VIDEO_SRC": "yt-key-MUST-NOT-LEAK-0001", "LLM_AUTH": "sk-openai-MUST-NOT-LEAK-0002",
        "JUDGE_AUTH": "sk-judge-MUST-NOT-LEAK-0005", "GEM_AUTH": "AIza-gemini-MUST-NOT-LEAK-0003",
        "GEM_JUDGE": "AIza-gemjudge-MUST-NOT-LEAK-0006", "PVLLM_PSEUDONYM_KEY": "hmac-MUST-NOT-LEAK-0004"}
URL_PASS = "urlpass-MUST-NOT-LEAK-0007"  # only inside a base_url on the command line, in no variable
ALL_SECRETS = {**KEYS, "base_url password": URL_PASS}


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, **KEYS, PVLLM_OUTPUTS=str(tmp_path / "outputs"), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env.update({"WANDB_MODE": "offline", **extra})
    for var in ("OPENAI_BASE_URL", "GOOGLE_GEMINI_BASE_URL", "OPENAI_API_KEY", "GEMINI_API_KEY"):
        env.pop(var, None)
    return env


def _assert_no_key(*texts: str, files: Path | None = None) -> int:
    """No secret value in the texts nor in any file under ``files``; returns the number of files read."""
    blobs = list(texts)
    paths = [p for p in files.rglob("*") if p.is_file()] if files is not None else []
    blobs += [p.read_bytes().decode("utf-8", "replace") for p in paths]
    names = [f"stream #{i}" for i in range(len(texts))] + [str(p) for p in paths]
    for var, key in ALL_SECRETS.items():
        for name, b in zip(names, blobs, strict=True):
            assert key not in b, f"{var}'s value leaked into {name}: ...{b[max(0, b.find(key) - 200):][:400]}"
    return len(paths)


def test_config_redaction_hides_secrets_not_hyperparameters(monkeypatch):
    from pvllm.utils.lightning import loggable_config

    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-MUST-NOT-LEAK-0002")
    cfg = OmegaConf.create({
        "generator": {"max_new_tokens": 64, "tokenizer": "tok-dir", "api_key_env": "OPENAI_API_KEY",
                      "api_key": "inline-secret-value", "hf_token": "hf_abcdefgh",
                      "base_url": "http://h/v1?key=sk-openai-MUST-NOT-LEAK-0002"},
        "data": {"max_reply_tokens": 32}, "tokens_per_s": 3,
    })  # fmt: skip
    got = loggable_config(cfg)
    assert got["generator"]["max_new_tokens"] == 64 and got["generator"]["tokenizer"] == "tok-dir"
    assert got["data"]["max_reply_tokens"] == 32 and got["tokens_per_s"] == 3
    assert got["generator"]["api_key_env"] == "OPENAI_API_KEY"  # the variable's name, not its value
    assert got["generator"]["api_key"] == "<redacted>" and got["generator"]["hf_token"] == "<redacted>"
    assert got["generator"]["base_url"] == "http://h/v1?key=<redacted>"


def test_registry_by_value_skips_placeholders_and_finds_url_credentials(monkeypatch):
    from pvllm.utils import secrets

    monkeypatch.setattr(secrets, "_registry", set())
    monkeypatch.setenv("SRV_AUTH", "opaque-value-123456")  # an innocent name: only its value identifies it
    monkeypatch.setenv("SHORT_ONE", "abc")
    cfg = OmegaConf.create({
        "generator": {"api_key_env": "SRV_AUTH", "base_url": "https://bob:pa55-word-xyz@h.example/v1"},
        "rater": {"api_key_env": "SHORT_ONE", "base_url": "http://h/v1?alt=json&key=qk-98765432&x=1"},
        "other": {"api_key_env": "${oc.env:UNSET_VARIABLE_NAME}", "note": "${hydra:runtime.output_dir}"},
    })  # fmt: skip
    secrets.register_config_secrets(cfg)
    assert secrets._registry == {"opaque-value-123456", "pa55-word-xyz", "qk-98765432"}  # "abc": too short
    assert not secrets.register_secret("not-needed")  # the placeholder sent when no key is set
    assert not secrets.register_secret("abcdefg")  # 7 characters
    text = 'say "opaque-value-123456" pa55%2Dword-xyz qk-98765432 not-needed bearer-less'
    assert secrets.redact_values(text) == 'say "<redacted>" pa55%2Dword-xyz <redacted> not-needed bearer-less'
    assert secrets.redact_values(secrets.quote("a/b opaque-value-123456", safe="")) == "a%2Fb%20<redacted>"
    # a credential on the command line moves to the environment: Hydra saves and pickles the reference
    argv = secrets.protect_argv(["generator.base_url=https://bob:pa55-word-xyz@h.example/v1", "-m", "k=1,2"])
    var = argv[0].split("${oc.env:")[1].split("}")[0]
    assert argv == [f"generator.base_url=https://bob:${{oc.env:{var}}}@h.example/v1", "-m", "k=1,2"]
    assert os.environ.pop(var) == "pa55-word-xyz"
    assert secrets.public_url("https://bob:pa55-word-xyz@h/v1") == "https://bob:<redacted>@h/v1"


def test_youtube_http_errors_do_not_print_the_key(tmp_path):
    fake = FakeYouTube([FakeVideo("vid1", "A short", 10, "PT10S", [FakeComment("c1", "UCx", "@x", "hi", 0)])])
    fake.faults[("search", 1)] = (400, "badRequest")  # re-raised by the collector, after the last retry
    fake.echo_key = True  # the error body and a header repeat the key
    url = fake.start()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pvllm.data.collect", "youtube", "--out", str(tmp_path / "raw"), "--query",
             "cats", "--endpoint", url, "--backoff-s", "0.01", "--api-key-env", "VIDEO_SRC"],
            cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=300)  # fmt: skip
    finally:
        fake.stop()
    assert proc.returncode != 0 and "HttpError 400" in proc.stderr  # it failed loudly ...
    assert "key=<redacted>" in proc.stderr  # ... with the request URL, its key cut out
    assert "for API key <redacted>" in proc.stderr  # the echoed key too
    assert fake.keys_seen == {KEYS["VIDEO_SRC"]}  # the key did travel, to the server only
    assert "for API key <redacted>" in (tmp_path / "raw" / "responses.jsonl").read_text()  # error body, stored
    assert _assert_no_key(proc.stdout, proc.stderr, files=tmp_path) >= 2


def _evaluate(tmp_path: Path, run: str, *overrides: str, env: dict | None = None
              ) -> tuple[subprocess.CompletedProcess, Path]:
    run_dir = tmp_path / run
    proc = subprocess.run(
        [sys.executable, "evaluate.py", "split=test", "samples_per_user=1", f"hydra.run.dir={run_dir}",
         f"paths.cache_dir={tmp_path / 'cache'}", *overrides],
        cwd=ROOT, env=env or _env(tmp_path), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    return proc, run_dir


RETRY = ["{}.retry.attempts=2", "{}.retry.initial_delay_s=0.01", "{}.retry.max_delay_s=0.02", "{}.max_concurrency=1"]
OPENAI_ECHO = {"error": {"message": f"Incorrect API key provided: {ECHO_KEY}", "type": "invalid_request_error"}}


def test_openai_generator_and_rater_never_write_the_key(tmp_path):
    gkey, rkey = KEYS["LLM_AUTH"], KEYS["JUDGE_AUTH"]
    with FakeOpenAIServer() as gen, FakeOpenAIServer(default_text="3") as judge:
        gen.echo_key_header = judge.echo_key_header = True
        gen.push(Reply(500, OPENAI_ECHO), Reply(400, OPENAI_ECHO))  # retried (a warning), then one sample's error
        judge.push(Reply(500, OPENAI_ECHO), Reply(400, OPENAI_ECHO))  # retried, then one failed rating (logged)
        proc, run_dir = _evaluate(
            tmp_path, "openai", "generator=openai_compatible", "generator.model=video-llm",
            f"generator.base_url={gen.url}/v1", "generator.api_key_env=LLM_AUTH", "rater=openai_compatible",
            "rater.model=judge", f"rater.base_url={judge.url}/v1", "rater.api_key_env=JUDGE_AUTH",
            *[r.format("generator") for r in RETRY], *[r.format("rater") for r in RETRY])  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert gen.requests and all(r.headers.get("authorization") == f"Bearer {gkey}" for r in gen.requests)
        assert judge.requests and all(r.headers.get("authorization") == f"Bearer {rkey}" for r in judge.requests)
        # a key inside the base_url (user:KEY@host), and a server that echoes it in the 401 that stops the run
        gen.push(Reply(401, OPENAI_ECHO))
        url = gen.url.replace("http://", f"http://someone:{URL_PASS}@")
        failed, run2 = _evaluate(
            tmp_path, "openai401", "generator=openai_compatible", "generator.model=other-llm",
            f"generator.base_url={url}/v1", "generator.api_key_env=null", "rater=lexical",
            *[r.format("generator") for r in RETRY])  # fmt: skip
        assert gen.requests[-1].headers["authorization"].startswith("Basic ")  # the password did travel
    assert "Incorrect API key provided: <redacted>" in (run_dir / "predictions.jsonl").read_text()
    assert "Incorrect API key provided: <redacted>" in proc.stdout + proc.stderr  # the retry warning, logged
    assert failed.returncode == 1 and "Incorrect API key provided: <redacted>" in failed.stderr
    assert "error: openai_compatible" in failed.stderr and "Traceback" not in failed.stderr  # the message alone
    assert "${oc.env:PVLLM_SECRET_" in (run2 / ".hydra" / "overrides.yaml").read_text()  # the reference only
    assert list((run_dir / "wandb").rglob("*.wandb"))  # the W&B (offline) records were written, checked below
    assert (run_dir / "evaluate.log").is_file() and (run_dir / "scores.jsonl").is_file()
    _assert_no_key(proc.stdout, proc.stderr, failed.stdout, failed.stderr, files=tmp_path)


def test_gemini_generator_and_rater_never_write_the_key(tmp_path):
    gkey, rkey = KEYS["GEM_AUTH"], KEYS["GEM_JUDGE"]
    echo = {"error": {"code": 400, "message": f"API key not valid: {ECHO_KEY}", "status": "INVALID_ARGUMENT"}}
    with FakeGeminiServer() as gen, FakeGeminiServer() as judge:
        gen.echo_key_header = judge.echo_key_header = True
        gen.push(Reply(400, echo))  # one sample's error is recorded in predictions.jsonl
        judge.push(Reply(503, echo), Reply(400, echo))  # retried (a warning), then one failed rating
        proc, run_dir = _evaluate(
            tmp_path, "gemini", "generator=gemini_flash", f"generator.base_url={gen.url}",
            "generator.api_key_env=GEM_AUTH", "generator.video_transport=inline", "rater=gemini_flash",
            f"rater.base_url={judge.url}", "rater.api_key_env=GEM_JUDGE",
            *[r.format("generator") for r in RETRY], *[r.format("rater") for r in RETRY],
            env=_env(tmp_path, WANDB_MODE="disabled"))  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert gen.requests and all(r.headers.get("x-goog-api-key") == gkey for r in gen.requests)
        assert judge.generate_calls() and all(r.headers.get("x-goog-api-key") == rkey for r in judge.requests)
    assert "API key not valid: <redacted>" in (run_dir / "predictions.jsonl").read_text()
    assert "API key not valid: <redacted>" in proc.stdout + proc.stderr
    assert not (run_dir / "wandb").exists()  # WANDB_MODE=disabled is respected (no offline run)
    _assert_no_key(proc.stdout, proc.stderr, files=tmp_path)


def test_submitit_multirun_keeps_url_credentials_out_of_pickles_and_saved_configs(tmp_path):
    """A key inside a base_url on the command line of a sweep: Hydra's multirun.yaml, each job's .hydra/, the
    submitit pickles (submitted and result) and the job logs hold ``${oc.env:...}``; the job still sends it."""
    with FakeOpenAIServer() as server:
        server.push(Reply(400, OPENAI_ECHO))  # echoed: the Basic-auth password of the URL
        url = server.url.replace("http://", f"http://someone:{URL_PASS}@") + "/v1"
        proc = subprocess.run(
            [sys.executable, "evaluate.py", "-m", "hydra/launcher=submitit_local", "split=test", "samples_per_user=1",
             "max_samples=2", "history.k=1", "generator=openai_compatible", "generator.model=m",
             f"generator.base_url={url}", "generator.api_key_env=LLM_AUTH", "rater=lexical",
             *[r.format("generator") for r in RETRY]],
            cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=600)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        basic = {r.headers.get("authorization") for r in server.chat_calls()}
    assert len(basic) == 1 and basic.pop().startswith("Basic ")  # user:password of the URL, resolved in the job
    sweep = tmp_path / "outputs" / "eval"
    pickles = list(sweep.rglob(".submitit/*/*.pkl"))
    assert len(pickles) >= 2 and (sweep / "multirun.yaml").is_file()  # the job submitted, its result
    assert "${oc.env:PVLLM_SECRET_" in (sweep / "multirun.yaml").read_text()
    preds = "".join(p.read_text() for p in sweep.glob("*/predictions.jsonl"))
    assert "Incorrect API key provided: <redacted>" in preds
    _assert_no_key(proc.stdout, proc.stderr, files=tmp_path)
