"""Ranking at scale (issue 23 item 1) and calibrated scoring (issue 22 item 3): the packed scorer (prompt and
video once per sample, candidates of several samples in one row) equals one full sequence per candidate on
every family; ranking.score = mean | sum | pmi on a hand-made case; the progress bar stays off stdout."""

from pathlib import Path

import pytest
import torch

from pvllm.generators.base import (
    CandidateLogprobs,
    GenerationRequest,
    GenerationResult,
    Generator,
    without_history,
)
from pvllm.metrics.ranking import rank_resumable, ranking_metrics
from pvllm.models.families import FAMILIES, reply_logprob, reply_token_ids
from pvllm.prompt import build_instruction
from tests.conftest import SAMPLE

HISTORY = ["best rabbit clip EVER 😂🔥", "OMG the street is SO GOOD 🔥🔥🔥"]
CANDS = ["nice.", "THIS BUNNY THO 😍😍\r\nso cute", "ok", "Where was this filmed? Is the taxi real?"]


def _requests() -> list[GenerationRequest]:
    return [GenerationRequest(f"s{i}", str(SAMPLE / "videos" / v), HISTORY[: i + 1],
                              build_instruction(HISTORY[: i + 1], "Bunny"), title="Bunny", include_title=True)
            for i, v in enumerate(["bunny_02.mp4", "bikes_01.mp4"])]


def _close(got, want):
    torch.testing.assert_close(torch.tensor(got, dtype=torch.float32), torch.tensor(want, dtype=torch.float32))


@pytest.mark.parametrize("name", FAMILIES.names())
@pytest.mark.parametrize("score_tokens", [100_000, 1])  # two samples in one packed pass; each sample alone
def test_packed_scores_equal_one_full_sequence_per_candidate(name, score_tokens, tiny_family_dirs, tiny_model_dir):
    """Every family: sums with and without the history (PMI's two prompts branching after the video) and
    means equal the training-path log-likelihood of one full sequence (families.reply_logprob)."""
    from pvllm.generators.hf_video import HFVideoGenerator

    d = tiny_model_dir if name == "video_llava" else tiny_family_dirs[name]
    gen = HFVideoGenerator(str(d), score_tokens=score_tokens)
    reqs = _requests()
    cands = [CANDS, CANDS[::-1]]
    got = gen.candidate_logprobs(reqs, cands, no_history=True)
    means = gen.score_candidates(reqs, cands)
    for req, cs, g, m in zip(reqs, cands, got, means):
        clip = gen._frames(req)
        want = [reply_logprob(gen.model, gen.processor, req.prompt, clip, c, None) for c in cs]
        none = without_history(req)
        want_none = [reply_logprob(gen.model, gen.processor, none.prompt, clip, c, None) for c in cs]
        n = [len(reply_token_ids(gen.processor, req.prompt, c, None)) for c in cs]
        _close(g.logprob, want)
        _close(g.logprob_no_history, want_none)
        _close(m, [w / k for w, k in zip(want, n)])
        assert g.n_tokens == n and len(set(g.logprob)) == 4
        assert max(abs(a - b) for a, b in zip(g.logprob, g.logprob_no_history)) > 1e-3  # the history matters
    # the two prompts share one root that holds every visual token: the video runs once per sample
    items = gen._prompt_items([reqs[0], without_history(reqs[0])], gen._frames(reqs[0]), [[1, 2]])
    assert len(items) == 1 and len(items[0].branches) == 2 and all(items[0].branches)


def test_text_only_pvllm_and_text_llm_equal_full_sequences(tiny_model_dir, tmp_path):
    """Text-only PV-LLM (video=false, the real-danmaku setting) and a plain causal LM (text_only generator)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from pvllm.generators.hf_video import HFVideoGenerator
    from pvllm.generators.likelihood import mean_reply_logprobs
    from pvllm.generators.text_only import TextOnlyGenerator

    reqs = _requests()
    gen = HFVideoGenerator(str(tiny_model_dir), video=False, score_tokens=100_000)
    got = gen.candidate_logprobs(reqs, [CANDS, CANDS], no_history=True)
    tok = gen.processor.tokenizer
    for req, g in zip(reqs, got):
        for r, vals in ((req, g.logprob), (without_history(req), g.logprob_no_history)):
            prompt = gen._encode([r.prompt], [None])["input_ids"][0].tolist()
            replies = [reply_token_ids(gen.processor, r.prompt, c, None) for c in CANDS]
            want = mean_reply_logprobs(gen.model, [prompt] * 4, replies, tok.pad_token_id)
            _close([v / len(x) for v, x in zip(vals, replies)], want)

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path)
    text = TextOnlyGenerator(model_path=str(tmp_path), greedy=True, device="cpu", include_title=True)
    got = text.candidate_logprobs(reqs, [CANDS, CANDS], no_history=True)
    for req, g in zip(reqs, got):
        for r, vals in ((req, g.logprob), (without_history(req), g.logprob_no_history)):
            prompt = text.tokenizer(text.prompt_text(r), add_special_tokens=False)["input_ids"]
            replies = [text.tokenizer(c.strip(), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                       for c in CANDS]
            _close([v / len(x) for v, x in zip(vals, replies)], mean_reply_logprobs(text.model, [prompt] * 4,
                                                                                   replies, tok.pad_token_id))


# Hand-made log-probabilities per token of three candidates, with the history and without it:
#   A: 4 tokens of -1 (sum -4, mean -1); without history sum -2
#   B: 1 token of -3 (sum -3, mean -3);  without history sum -6
#   C: 10 tokens of -0.5 (sum -5, mean -0.5); without history sum -4.5
# mean: C -0.5 > A -1 > B -3;  sum: B -3 > A -4 > C -5;  pmi: B +3 > C -0.5 > A -2
TOKENS = {"A": ([-1.0] * 4, -2.0), "B": ([-3.0], -6.0), "C": ([-0.5] * 10, -4.5)}
EXPECTED_RANK = {  # rank of each truth (1 = best) under each score, by hand from the lines above
    "A": {"mean": 2, "sum": 2, "pmi": 3},
    "B": {"mean": 3, "sum": 1, "pmi": 1},
    "C": {"mean": 1, "sum": 3, "pmi": 2},
}


class HandMade(Generator):
    """Candidates scored from the table above (a scorer with known per-token log-probabilities)."""

    registry_name = "hand_made"
    model_id = "hand_made"
    generation_config: dict = {}
    supports_ranking = True

    def generate(self, batch):
        return [GenerationResult(r.sample_id, "x") for r in batch]

    def score_candidates(self, batch, candidates):
        return [r.mean for r in self.candidate_logprobs(batch, candidates)]

    def candidate_logprobs(self, batch, candidates, no_history=False):
        return [CandidateLogprobs([sum(TOKENS[c][0]) for c in cs], [len(TOKENS[c][0]) for c in cs],
                                  [TOKENS[c][1] for c in cs] if no_history else None) for cs in candidates]


@pytest.mark.parametrize("score", ["mean", "sum", "pmi"])
def test_scores_rank_a_hand_made_case_as_computed_by_hand(score, tmp_path, capsys):
    order = ["C", "A", "B"]  # candidate order in the file
    rows = [{"sample_id": f"t{t}", "user_id": "u", "candidates": [{"text": c} for c in order],
             "truth_index": order.index(t)} for t in "ABC"]
    reqs = {r["sample_id"]: GenerationRequest(r["sample_id"], None, ["h"], "p") for r in rows}
    items = rank_resumable(HandMade(), rows, reqs, tmp_path / "ranking.jsonl", batch_size=2, score=score)
    assert [it["truth_rank"] for it in items] == [EXPECTED_RANK[t][score] for t in "ABC"]
    assert all(it["score"] == score for it in items)
    if score == "pmi":
        assert items[0]["scores"] == [-0.5, -2.0, 3.0] and items[0]["logprob_no_history"] == [-4.5, -2.0, -6.0]
    m = ranking_metrics(items)
    assert m["MRR"] == pytest.approx(100 * sum(1 / EXPECTED_RANK[t][score] for t in "ABC") / 3)
    # the truth's mean log-prob per token, whatever the score: A -1, B -3, C -0.5
    assert m["truth_logprob"] == pytest.approx((-1 - 3 - 0.5) / 3)
    out = capsys.readouterr()
    assert out.out == "" and "ranking" in out.err and "3/3" in out.err  # the bar: stderr only
    other = "sum" if score != "sum" else "mean"
    with pytest.raises(ValueError, match=f"ranked with ranking.score={score}, not {other}"):
        rank_resumable(HandMade(), rows, reqs, tmp_path / "ranking.jsonl", score=other)


def test_pmi_without_history_is_zero_and_score_recorded(sample_ds, tiny_model_dir, tmp_path):
    """history.mode=none: PMI compares a prompt with itself (0 for every candidate: exactly chance); the
    summary records the score; a generator without token log-probabilities is n/a under sum."""
    from pvllm.data.histories import build_eval_histories
    from pvllm.evaluation import rank_run
    from pvllm.generators.video_llava import PVLLMGenerator
    from tests.test_ranking import Oracle

    rows = [s.to_row() for s in build_eval_histories(sample_ds, "val", k=0, seed=0, mode="none")][:2]
    gen = PVLLMGenerator(pretrained=str(tiny_model_dir), greedy=True)
    s = rank_run(gen, rows, sample_ds, tmp_path, candidates_file=tmp_path / "c.jsonl", n=5, seed=0, batch_size=2,
                 include_title=False, score="pmi")
    assert s["score"] == "pmi" and s["status"] == "ok" and s["mean_rank"] == 3.0 and s["R@1"] == pytest.approx(20)
    rows_out = [r for r in Path(tmp_path / "ranking.jsonl").read_text().splitlines()]
    assert len(rows_out) == 2 and '"scores": [0.0, 0.0, 0.0, 0.0, 0.0]' in rows_out[0]
    (tmp_path / "o").mkdir()
    na = rank_run(Oracle({}), rows, sample_ds, tmp_path / "o", candidates_file=tmp_path / "c.jsonl", n=5, seed=0,
                  batch_size=2, include_title=False, score="sum")
    assert na["status"] == "n/a" and na["score"] == "sum" and "sum|pmi is n/a" in na["reason"]


def test_config_rejects_an_unknown_score(tmp_path):
    from pvllm.config import ConfigError, validate_eval_config
    from tests.entrypoints import compose_config

    cfg = compose_config("evaluate", ["stage=rank", "ranking.score=ppl"], tmp_path)
    with pytest.raises(ConfigError, match=r"ranking.score: mean \| sum \| pmi, got 'ppl'"):
        validate_eval_config(cfg)
    assert compose_config("evaluate", [], tmp_path).ranking.score == "mean"
