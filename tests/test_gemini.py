"""Gemini generator and raters with the real google-genai SDK against a local server speaking its wire format."""

from __future__ import annotations

import base64
import logging
import random
from pathlib import Path

import pytest

pytest.importorskip("google.genai")

try:
    from fakes.gemini_server import FakeGeminiServer, text_reply
    from fakes.scripted_server import Reply
except ImportError:  # run from the repo root with tests/ as a package
    from tests.fakes.gemini_server import FakeGeminiServer, text_reply
    from tests.fakes.scripted_server import Reply

from pvllm.clients import AuthError, MissingCredentialsError, RetryPolicy
from pvllm.generators import GENERATORS
from pvllm.generators.base import GenerationRequest
from pvllm.generators.gemini import GeminiGenerator
from pvllm.prompt import build_instruction
from pvllm.raters import RATERS
from pvllm.raters.gemini import GeminiFlashRater, GeminiProRater

ROOT = Path(__file__).resolve().parents[1]
VIDEO = ROOT / "data" / "sample" / "videos" / "bikes_01.mp4"
SHARED_VIDEO = ROOT.parent / "shared" / "data" / "videos" / "sample_demo_3.mp4"
SECRET = "AIza-test-secret-0123456789"
FAST_RETRY = {"attempts": 4, "initial_delay_s": 0.02, "max_delay_s": 0.2, "exp_base": 2.0, "jitter": 0.5}
ERR_429 = Reply(
    429, {"error": {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED"}}
)
ERR_500 = Reply(500, {"error": {"code": 500, "message": "Internal error", "status": "INTERNAL"}})


@pytest.fixture
def server():
    with FakeGeminiServer() as s:
        yield s


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", SECRET)
    monkeypatch.delenv("GOOGLE_GEMINI_BASE_URL", raising=False)


def make_gen(server, **kw) -> GeminiGenerator:
    kw.setdefault("retry", FAST_RETRY)
    kw.setdefault("max_concurrency", 1)  # scripted replies are consumed in request order
    return GeminiGenerator(model="gemini-test", base_url=server.url, timeout_s=5, **kw)


def req(sample_id: str, history=("first comment", "second\ncomment"), video=VIDEO) -> GenerationRequest:
    return GenerationRequest(sample_id, str(video), list(history), build_instruction(list(history)))


def test_registered_and_sdk_free_import():
    assert GENERATORS.get("gemini") is GeminiGenerator
    assert RATERS.get("gemini_flash") is GeminiFlashRater and RATERS.get("gemini_pro") is GeminiProRater


def test_inline_video_prompt_and_key_at_the_wire(server, caplog):
    caplog.set_level(logging.DEBUG)
    gen = make_gen(server, video_transport="inline")
    out = gen.generate([req("s1"), req("s2", history=())])
    gen.close()
    assert [(r.sample_id, r.text, r.error) for r in out] == [
        ("s1", "a fake comment", None),
        ("s2", "a fake comment", None),
    ]
    calls = server.generate_calls()
    assert len(calls) == 2
    assert calls[0].path == "/v1/models/gemini-test:generateContent"
    body = calls[0].json()
    parts = body["contents"][0]["parts"]
    # Video first, then the Figure-5 text: the exact bytes of the file, base64, mime video/mp4.
    # (The SDK sends URL-safe base64 and snake_case inner keys.)
    assert base64.urlsafe_b64decode(parts[0]["inlineData"]["data"]) == VIDEO.read_bytes()
    assert parts[0]["inlineData"]["mime_type"] == "video/mp4"
    assert parts[1]["text"] == build_instruction(["first comment", "second\ncomment"])
    assert "1. first comment\n2. second comment" in parts[1]["text"]
    assert calls[1].json()["contents"][0]["parts"][1]["text"] == build_instruction([])
    # Model defaults (paper): no sampling field is sent.
    assert "generationConfig" not in body
    # The key travels only in its header; never in URLs, recorded params, or logs.
    assert all(c.headers["x-goog-api-key"] == SECRET for c in calls)
    assert all(SECRET not in c.path for c in server.requests)
    assert SECRET not in repr(gen.generation_config) + gen.model_id
    assert SECRET not in caplog.text
    assert gen.model_id == "gemini-api:gemini-test"
    assert gen.generation_config == {"server_defaults": True, "video_transport": "inline"}


def test_greedy_sends_temperature_zero(server):
    gen = make_gen(server, greedy=True, sampling={"max_output_tokens": 64, "temperature": 1.0})
    assert gen.generate([req("s1")])[0].text == "a fake comment"
    assert server.generate_calls()[0].json()["generationConfig"] == {
        "temperature": 0.0,
        "maxOutputTokens": 64,
    }
    assert gen.generation_config == {
        "temperature": 0.0,
        "max_output_tokens": 64,
        "server_defaults": False,
        "video_transport": "auto",
    }


def test_upload_protocol_processing_then_active_once_per_video_and_deleted(server):
    server.processing_polls = 1
    gen = make_gen(server, video_transport="upload", upload_poll_s=0.01)
    out = gen.generate([req("a"), req("b")])
    assert [r.error for r in out] == [None, None]
    assert len(server.files) == 1, "two samples of one video upload it once"
    ((fid, f),) = server.files.items()
    assert f["bytes"] == VIDEO.read_bytes() and f["mime_type"] == "video/mp4"
    assert f["start_headers"]["x-goog-upload-protocol"] == "resumable"
    assert f["polls"] == 2  # PROCESSING once, then ACTIVE
    part = server.generate_calls()[0].json()["contents"][0]["parts"][0]
    file_data = part.get("fileData") or part.get("file_data")
    assert file_data["fileUri" if "fileUri" in file_data else "file_uri"].endswith(f"/files/{fid}")
    assert not f["deleted"]
    gen.close()
    assert f["deleted"]


@pytest.mark.skipif(not SHARED_VIDEO.is_file(), reason="shared test data (../shared/data) absent")
def test_auto_transport_uploads_a_real_clip_over_the_inline_limit(server):
    gen = make_gen(server, video_transport="auto", inline_max_bytes=100_000)  # the clip is ~460 kB
    assert gen.generate([req("real", video=SHARED_VIDEO)])[0].text == "a fake comment"
    assert server.uploaded_bytes() == [SHARED_VIDEO.read_bytes()]
    gen.close()


def test_429_and_500_are_retried_with_growing_backoff(server):
    server.push(ERR_429, ERR_500, ERR_500)
    out = make_gen(server).generate([req("s1")])
    assert (out[0].text, out[0].error) == ("a fake comment", None)
    calls = server.generate_calls()
    assert len(calls) == 4
    gaps = [b.t - a.t for a, b in zip(calls, calls[1:])]
    # Backoff before try n+1 lies in [0.5, 1] x 0.02 x 2^n s (jitter 0.5).
    for n, gap in enumerate(gaps):
        assert gap >= 0.5 * 0.02 * 2**n - 0.002, gaps
    assert gaps[2] > gaps[0]


def test_timeout_is_retried(server):
    server.push(Reply(200, text_reply("too late"), delay_s=1.5))
    out = GeminiGenerator(
        model="gemini-test", base_url=server.url, timeout_s=0.5, retry=FAST_RETRY, max_concurrency=1
    ).generate([req("s1")])
    assert (out[0].text, out[0].error) == ("a fake comment", None)
    assert len(server.generate_calls()) == 2


def test_malformed_reply_is_retried_then_recorded_naming_the_item(server):
    server.push(*[Reply(200, "<html>proxy error</html>")] * 4)
    out = make_gen(server).generate([req("bad-one"), req("good-one")])
    assert out[0].text is None
    assert "bad-one" in out[0].error and "malformed reply" in out[0].error and "4 attempts" in out[0].error
    assert (out[1].text, out[1].error) == ("a fake comment", None)
    assert len(server.generate_calls()) == 5


def test_bounded_retries_give_up_on_persistent_429(server):
    server.push(*[ERR_429] * 10)
    out = make_gen(server).generate([req("s9")])
    assert out[0].text is None and "s9" in out[0].error and "HTTP 429" in out[0].error
    assert len(server.generate_calls()) == FAST_RETRY["attempts"]


def test_400_and_empty_reply_are_not_retried(server):
    server.push(
        Reply(400, {"error": {"code": 400, "message": "Bad video", "status": "INVALID_ARGUMENT"}}),
        Reply(200, {"candidates": [], "promptFeedback": {"blockReason": "SAFETY"}}),
    )
    out = make_gen(server).generate([req("x400"), req("xempty")])
    assert "HTTP 400" in out[0].error and "x400" in out[0].error
    assert "empty reply" in out[1].error and "SAFETY" in out[1].error
    assert out[0].text is None and out[1].text is None
    assert len(server.generate_calls()) == 2


def test_bad_key_stops_generation(server):
    server.push(
        Reply(403, {"error": {"code": 403, "message": "API key not valid", "status": "PERMISSION_DENIED"}})
    )
    with pytest.raises(AuthError, match="HTTP 403"):
        make_gen(server).generate([req("s1"), req("s2")])
    assert len(server.generate_calls()) == 1


def test_missing_video_file_is_a_per_item_error(server, tmp_path):
    out = make_gen(server).generate([req("gone", video=tmp_path / "nope.mp4")])
    assert out[0].text is None and "nope.mp4" in out[0].error
    assert server.generate_calls() == []


def test_missing_key_fails_before_any_request(server, monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY")
    with pytest.raises(MissingCredentialsError, match="GEMINI_API_KEY"):
        make_gen(server)
    with pytest.raises(MissingCredentialsError, match="MY_GEMINI_KEY"):
        make_gen(server, api_key_env="MY_GEMINI_KEY")
    with pytest.raises(MissingCredentialsError, match="GEMINI_API_KEY"):
        GeminiFlashRater(base_url=server.url)
    assert server.requests == []


def test_vertex_without_project_names_the_variable(monkeypatch):
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    with pytest.raises(MissingCredentialsError, match="GOOGLE_CLOUD_PROJECT"):
        GeminiGenerator(vertexai=True)
    with pytest.raises(ValueError, match="Vertex"):
        GeminiGenerator(vertexai=True, video_transport="upload")


def test_concurrent_batch_keeps_order(server):
    server.default_text = lambda body: body["contents"][0]["parts"][1]["text"].split("\n")[1]
    gen = make_gen(server, max_concurrency=4)
    reqs = [req(f"s{i}", history=(f"comment number {i}",)) for i in range(6)]
    assert [r.text for r in gen.generate(reqs)] == [f"1. comment number {i}" for i in range(6)]


def test_rater_temperature_zero_retries_and_failures(server):
    rater = GeminiFlashRater(model="gemini-judge", base_url=server.url, retry=FAST_RETRY, max_concurrency=1)
    assert rater.name == "gemini:gemini-judge" and rater.params == {"temperature": 0.0}
    server.push(ERR_500, Reply(200, text_reply("Emotion: 0.5, Style: 0.75, Relevance: 1")))
    server.push(*[ERR_429] * 4)
    out = rater.complete(["judge this", "and this"])
    assert out == ["Emotion: 0.5, Style: 0.75, Relevance: 1", None]
    calls = server.generate_calls()
    assert len(calls) == 6
    assert calls[0].path == "/v1/models/gemini-judge:generateContent"
    assert calls[0].json()["generationConfig"] == {"temperature": 0.0}
    assert calls[0].json()["contents"][0]["parts"] == [{"text": "judge this"}]
    rater.close()


def test_rater_defaults_and_api_version(server):
    assert GeminiProRater(base_url=server.url).name == "gemini:gemini-2.5-pro"
    flash = GeminiFlashRater(base_url=server.url, api_version="v1beta")
    assert flash.name == "gemini:gemini-3.5-flash"
    assert flash.complete(["hi"]) == ["a fake comment"]
    assert server.generate_calls()[0].path == "/v1beta/models/gemini-3.5-flash:generateContent"


def test_retry_policy_delays_hand_computed():
    p = RetryPolicy(attempts=5, initial_delay_s=1.0, max_delay_s=3.0, exp_base=2.0, jitter=0.0)
    rng = random.Random(0)
    assert [p.delay(n, rng) for n in range(4)] == [1.0, 2.0, 3.0, 3.0]
    assert p.delay(0, rng, retry_after_s=2.5) == 2.5  # server's Retry-After when longer
    assert p.delay(0, rng, retry_after_s=60) == 3.0  # ... still capped
    j = RetryPolicy(initial_delay_s=1.0, jitter=0.5)
    ds = [j.delay(1, random.Random(s)) for s in range(50)]
    assert all(1.0 <= d <= 2.0 for d in ds) and len(set(ds)) > 40
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


def _compose(overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base=None, config_dir=str(ROOT / "conf")):
        return compose("evaluate", overrides=overrides)


@pytest.mark.parametrize(
    ("name", "model", "rater_cls"),
    [
        ("gemini_flash", "gemini-3.5-flash", GeminiFlashRater),
        ("gemini_pro", "gemini-2.5-pro", GeminiProRater),
    ],
)
def test_hydra_configs_build_working_clients(server, name, model, rater_cls):
    import hydra

    fast = [f"{g}.retry.initial_delay_s=0.01" for g in ("generator", "rater")]
    cfg = _compose(
        [
            f"generator={name}",
            f"rater={name}",
            f"generator.base_url={server.url}",
            f"rater.base_url={server.url}",
            "generator.max_concurrency=1",
            *fast,
        ]
    )
    assert "GEMINI_API_KEY" in str(cfg.generator) and SECRET not in str(
        cfg
    )  # the config names the variable only
    gen = hydra.utils.instantiate(cfg.generator)
    rater = hydra.utils.instantiate(cfg.rater)
    assert isinstance(rater, rater_cls) and rater.name == f"gemini:{model}"
    server.push(ERR_429)
    assert gen.generate([req("cfg")])[0].text == "a fake comment"
    assert rater.complete(["judge"]) == ["a fake comment"]
    paths = [c.path for c in server.generate_calls()]
    assert paths == [f"/v1/models/{model}:generateContent"] * 3
    assert gen.generation_config == {"server_defaults": True, "video_transport": "auto"}
    gen.close()
    rater.close()


def test_ficl_through_the_cache_end_to_end(server, tmp_path):
    """Gemini judge -> SQLite cache -> FICL parse + re-ask: replies decided by the generated text in the prompt."""
    from pvllm.metrics.ficl import EXTRACT_PROMPT, FewShotExample, ficl_score_llm
    from pvllm.raters.cache import CachedRater

    def judge(body):
        prompt = body["contents"][0]["parts"][0]["text"]
        if "ALPHA" in prompt:
            return "Emotion: 0.5, Style: 0.75, Relevance: 1"
        if "BETA" in prompt and not prompt.startswith(EXTRACT_PROMPT):  # first ask: chatty, unparseable
            return "Both comments are quite similar in tone."
        return "emotion 0.25 | style: 0.25 | relevance: 0"  # the re-ask (or anything else)

    server.default_text = judge
    server.push(*[ERR_500] * FAST_RETRY["attempts"])  # the first request fails for good -> None, not cached
    shot = FewShotExample("shot1", "pvllm", "nice video", "great video", 0.75, 1.0, 0.5)
    pairs = [("GAMMA comment", "truth"), ("ALPHA comment", "truth"), ("BETA comment", "truth")]
    cache = tmp_path / "rater_cache.sqlite"
    rater = GeminiFlashRater(model="judge", base_url=server.url, retry=FAST_RETRY, max_concurrency=1)
    cached = CachedRater(rater, cache, progress=False)
    first = ficl_score_llm(cached.complete, [shot], pairs)
    cached.close()
    assert [r.status for r in first] == ["error", "ok", "ok"]
    assert (first[1].emotion, first[1].style, first[1].relevance) == (0.5, 0.75, 1.0)
    assert first[2].reasked and first[2].status == "ok"
    n_first = len(server.generate_calls())
    assert n_first == FAST_RETRY["attempts"] + 1 + 1 + 1  # failed item, ALPHA, BETA, BETA re-ask

    cached = CachedRater(rater, cache, progress=False)  # a rerun (e.g. after a crash)
    again = ficl_score_llm(cached.complete, [shot], pairs)
    cached.close()
    assert len(server.generate_calls()) == n_first + 1  # only the earlier failure is asked again
    assert [r.status for r in again] == ["ok", "ok", "ok"]


def test_vertex_route_with_adc(server, monkeypatch):
    """The paper's route: Vertex AI, project/location from the environment, OAuth token from ADC."""
    import google.auth
    from google.oauth2.credentials import Credentials

    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "my-proj")
    monkeypatch.setenv("GOOGLE_CLOUD_LOCATION", "europe-west4")
    monkeypatch.setattr(
        google.auth, "default", lambda scopes=None: (Credentials(token="ya29.adc-token"), "my-proj")
    )
    gen = GeminiGenerator(model="gemini-1.5-flash-001", vertexai=True, base_url=server.url, retry=FAST_RETRY)
    assert gen.model_id == "vertex:gemini-1.5-flash-001"
    assert gen.generate([req("v1")])[0].text == "a fake comment"
    (call,) = server.generate_calls()
    assert call.path == (
        "/v1beta1/projects/my-proj/locations/europe-west4/publishers/google/models/gemini-1.5-flash-001:generateContent"
    )
    assert call.headers["authorization"] == "Bearer ya29.adc-token" and "x-goog-api-key" not in call.headers
    assert "inlineData" in call.json()["contents"][0]["parts"][0]  # Vertex has no Files API: inline


def test_vertex_without_adc_names_the_variable(monkeypatch):
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    def no_adc(scopes=None):
        raise DefaultCredentialsError("no ADC")

    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "my-proj")
    monkeypatch.setattr(google.auth, "default", no_adc)
    with pytest.raises(MissingCredentialsError, match="GOOGLE_APPLICATION_CREDENTIALS"):
        GeminiFlashRater(vertexai=True)
