"""Off-rubric and unparseable judge replies, and the FICL few-shot pool, through evaluate.py with a remote
generator and judge answered by the local fake OpenAI-compatible server (tests/fakes/)."""

from __future__ import annotations

import pytest

from pvllm.identity import canonical_hash
from pvllm.utils.jsonl import load_jsonl
from tests.bad_inputs.conftest import evaluate
from tests.fakes.openai_server import FakeOpenAIServer

RUBRIC_START = "From 0 (not similar"


def _is_judge(body) -> bool:
    return isinstance(body["messages"][0]["content"], str)


def _prompt(body) -> str:
    return body["messages"][0]["content"]


def remote_args(tmp_path, server, ds, **kw) -> list[str]:
    args = [f"data.root={ds}", "generator=openai_compatible", "generator.model=fake-vlm",
            f"generator.base_url={server.url}/v1", "generator.api_key_env=null", "generator.max_concurrency=1",
            "generator.batch_size=1", "rater=openai_compatible", "rater.model=fake-judge",
            f"rater.base_url={server.url}/v1", "rater.api_key_env=null", "rater.max_concurrency=1",
            "~logger", f"paths.output_root={tmp_path / 'out'}", f"paths.cache_dir={tmp_path / 'cache'}"]
    return args + [f"{k}={v}" for k, v in kw.items()]


@pytest.fixture()
def server():
    with FakeOpenAIServer() as s:
        yield s


def test_off_rubric_and_unparseable_replies_are_counted_and_retried_after_a_fix(tmp_path, server, mini_ds):
    judged: list[str] = []  # FICL prompts in the order the judge saw them (first pass only)

    def broken_judge(body):
        if not _is_judge(body):
            return f"comment {canonical_hash(body['messages'][0]['content'][-1]['text'], 6)}"
        p = _prompt(body)
        if p.startswith("Below is a reply"):  # the re-ask: extract scores from the first reply
            return "none" if "I refuse" in p else "Emotion: 0.5, Style: 0.5, Relevance: 0.5"
        judged.append(p)
        return ["Emotion: 0.6, Style: 0.25, Relevance: 1",  # 0.6 is off the rubric: snapped to 0.5
                "I refuse to give numbers.",  # unparseable, and the re-ask says "none"
                "It is similar. Emotion: 0.75, Style: 0.75, Relevance: 0.75"][min(len(judged) - 1, 2)]

    server.default_text = broken_judge
    args = remote_args(tmp_path, server, mini_ds, **{"ficl.k_shots": 0})
    s = evaluate(args, tmp_path / "run")
    assert (s["n_requested"], s["n_scored"], s["ficl_n_requested"]) == (4, 4, 4)
    assert s["ficl_n_ok"] == 3 and s["ficl_n_parse_failed"] == 1 and s["ficl_n_snapped"] == 1
    assert s["ficl_n_reasked"] == 1 and s["ficl_first_pass_parse_rate"] == 3 / 4
    assert s["ficl_parse_success_rate"] == 3 / 4
    scores = {(r["sample_id"], r["metric"]): r for r in load_jsonl(tmp_path / "run" / "scores.jsonl")}
    failed = [k for k, r in scores.items() if r["status"] == "parse_failed"]
    assert len(failed) == 3 and all(scores[k]["value"] is None for k in failed)  # never scored 0
    # the same item is scored once the judge is fixed: its unparseable reply was not cached
    server.default_text = lambda body: "Emotion: 1, Style: 1, Relevance: 1"
    n_before = len(server.chat_calls())
    s2 = evaluate(args + ["stage=score"], tmp_path / "run")
    assert len(server.chat_calls()) - n_before == 1  # only the failed item is asked again
    assert s2["ficl_n_ok"] == 4 and s2["ficl_n_parse_failed"] == 0 and s2["ficl_n_snapped"] == 1


def test_a_number_outside_the_rubric_is_out_of_range_and_kept(tmp_path, server, mini_ds):
    """Issue 25 item 9: "Emotion: 7, Style: 8, Relevance: 10" (a 0-10 scale) is readable, so not
    "unparseable": status out_of_range, the judge's numbers kept in scores.jsonl, not scored, counted; the
    rerun after the judge is fixed asks only that item again."""
    judged: list[str] = []

    def ten_point_judge(body):
        if not _is_judge(body):
            return f"comment {canonical_hash(body['messages'][0]['content'][-1]['text'], 6)}"
        judged.append(_prompt(body))
        return "Emotion: 7, Style: 8, Relevance: 10" if len(judged) == 2 else "Emotion: 1, Style: 0.5, Relevance: 0"

    server.default_text = ten_point_judge
    args = remote_args(tmp_path, server, mini_ds, **{"ficl.k_shots": 0})
    s = evaluate(args, tmp_path / "run")
    assert s["ficl_n_ok"] == 3 and s["ficl_n_out_of_range"] == 1 and s["ficl_n_parse_failed"] == 0
    assert s["ficl_n_reasked"] == 0 and len(judged) == 4  # readable: not asked again
    rows = [r for r in load_jsonl(tmp_path / "run" / "scores.jsonl") if r["metric"].startswith("FICL")]
    oor = {r["metric"]: r for r in rows if r["status"] == "out_of_range"}
    assert {m: r["judge_value"] for m, r in oor.items()} == {"FICL-E": 7, "FICL-S": 8, "FICL-R": 10}
    assert all(r["value"] is None and "out of range: Emotion 7, Style 8, Relevance 10" in r["error"]
               for r in oor.values())
    assert s["FICL-E"] == 100.0 and s["FICL-S"] == 50.0  # the three in-range items only
    n_before = len(server.chat_calls())
    s2 = evaluate(args + ["stage=score"], tmp_path / "run")  # the judge answers in range now
    assert len(server.chat_calls()) - n_before == 1 and s2["ficl_n_ok"] == 4 and s2["ficl_n_out_of_range"] == 0
    ids = [r["sample_id"] for r in load_jsonl(tmp_path / "run" / "scores.jsonl") if r["metric"] == "FICL-E"]
    assert len(ids) == len(set(ids)) == 4


def test_sample_fewshot_pool_on_other_data_is_an_error_unless_allowed(tmp_path, server, mini_ds):
    server.default_text = lambda b: "Emotion: 0.5, Style: 0.5, Relevance: 0.5" if _is_judge(b) else "nice"
    args = remote_args(tmp_path, server, mini_ds, **{"ficl.k_shots": 1})
    with pytest.raises(ValueError, match=r"ficl.fewshot_dir is the bundled sample's few-shot pool .* "
                                         r"ficl.allow_sample_pool=true"):
        evaluate(args, tmp_path / "run")
    assert server.chat_calls() == []  # refused before any request
    s = evaluate(args + ["ficl.allow_sample_pool=true"], tmp_path / "run")
    assert s["ficl_pool"] == "sample pool (illustrative, not human)"
    assert s["identity"]["scoring"]["fewshot_pool"]["bundled_sample"] is True
    # the pool is part of the prompt: the judge saw one sample x 3 models of it
    judge = [_prompt(c.json()) for c in server.chat_calls() if _is_judge(c.json())]
    assert len(judge) == 4 and all(p.count("Example ") == 3 for p in judge)
