"""Ranking by likelihood (pvllm.metrics.ranking): candidates file, metrics, real HF scorers, evaluate.py."""

import json
import random
import subprocess
import sys

import pytest

from pvllm.data.histories import build_eval_histories
from pvllm.evaluation import rank_run
from pvllm.generators.base import GenerationResult, Generator
from pvllm.metrics.ranking import (
    build_candidates,
    chance_levels,
    expected_metrics,
    ranking_metrics,
)
from pvllm.utils.jsonl import load_jsonl
from tests.conftest import REPO
from tests.entrypoints import run_evaluate


class Oracle(Generator):
    """A constructed scorer: 1 for the true comment of the sample, 0 for every other candidate."""

    registry_name = "oracle"
    supports_ranking = True

    def __init__(self, truth: dict[str, str], constant: bool = False):
        self.truth, self.constant = truth, constant

    model_id = "oracle"
    generation_config = {}

    def generate(self, batch):
        return [GenerationResult(r.sample_id, "x") for r in batch]

    def score_candidates(self, batch, candidates):
        if self.constant:
            return [[0.0] * len(c) for c in candidates]
        return [[float(c == self.truth[r.sample_id]) for c in cands] for r, cands in zip(batch, candidates)]


class NoLogprobs(Oracle):
    registry_name = "api_like"
    supports_ranking = False


@pytest.fixture(scope="module")
def rows(sample_ds):
    return [s.to_row() for s in build_eval_histories(sample_ds, "val", k=5, seed=0, samples_per_user=3)]


def test_candidates_are_other_users_same_video_first_and_seeded(sample_ds, rows):
    cand = build_candidates(rows, sample_ds, n=20, seed=0)
    assert len(cand) == len(rows) == 12
    for r, c in zip(rows, cand):
        assert len(c["candidates"]) == 20 and c["candidates"][c["truth_index"]]["text"] == r["reference"]
        assert [x["source"] for x in c["candidates"]].count("truth") == 1
        others = [sample_ds.comments[x["comment_id"]] for x in c["candidates"] if x["source"] != "truth"]
        assert all(o.user_id != r["user_id"] for o in others)
        same = [o for o in others if o.video_id == r["video_id"]]
        assert len(same) == 19 - c["n_from_other_videos"]
        # filled from other videos only when the video has no further distinct comment by another user
        if c["n_from_other_videos"]:
            pool = {
                x.text
                for x in sample_ds.comments.values()
                if x.video_id == r["video_id"] and x.user_id != r["user_id"]
            }
            assert len(pool - {r["reference"]}) == len(same)
        assert len({x["text"] for x in c["candidates"]}) == 20
    assert build_candidates(rows, sample_ds, n=20, seed=0) == cand
    assert build_candidates(rows, sample_ds, n=20, seed=1) != cand


def test_metrics_oracle_constant_and_ties():
    assert expected_metrics(0, 0) == {"R@1": 1.0, "R@5": 1.0, "R@10": 1.0, "MRR": 1.0, "rank": 1.0}
    # 3 ties with the truth after 4 better: ranks 5..8 equally likely
    m = expected_metrics(4, 3)
    assert m["R@1"] == 0 and m["R@5"] == 0.25 and m["R@10"] == 1.0 and m["rank"] == 6.5
    assert m["MRR"] == pytest.approx((1 / 5 + 1 / 6 + 1 / 7 + 1 / 8) / 4)
    # constant scores: exactly chance
    s = ranking_metrics([{"scores": [0.0] * 20, "truth_index": 3}])
    ch = chance_levels(20)
    assert ch == {
        "R@1": 5.0,
        "R@5": 25.0,
        "R@10": 50.0,
        "MRR": pytest.approx(100 * 3.597739657 / 20),
        "mean_rank": 10.5,
    }
    for key in ("R@1", "R@5", "R@10", "MRR"):
        assert s[key] == pytest.approx(ch[key])
    assert s["mean_rank"] == 10.5
    failed = ranking_metrics(
        [{"scores": [1.0, 0.0], "truth_index": 0}, {"scores": None, "truth_index": 0, "error": "x"}]
    )
    assert failed["n"] == 1 and failed["n_failed"] == 1 and failed["R@1"] == 100.0
    # the truth's own score, averaged over scored samples (failed ones excluded)
    two = ranking_metrics([{"scores": [-1.5, -0.5], "truth_index": 0}, {"scores": [-2.0, -2.5], "truth_index": 1},
                           {"scores": None, "truth_index": 0, "error": "x"}])
    assert two["truth_logprob"] == pytest.approx(-2.0) and failed["truth_logprob"] == 1.0


def test_oracle_scorer_gets_recall_at_1_of_100_and_order_does_not_matter(sample_ds, rows, tmp_path):
    truth = {r["sample_id"]: r["reference"] for r in rows}
    f = tmp_path / "cand.jsonl"
    s = rank_run(
        Oracle(truth),
        rows,
        sample_ds,
        tmp_path,
        candidates_file=f,
        n=20,
        seed=0,
        batch_size=5,
        include_title=False,
    )
    assert (s["R@1"], s["R@5"], s["R@10"], s["MRR"], s["mean_rank"], s["n"]) == (
        100.0,
        100.0,
        100.0,
        100.0,
        1.0,
        12,
    )
    assert s["chance"]["R@1"] == 5.0 and s["candidates_sha256"]
    const_dir = tmp_path / "const"
    const_dir.mkdir()
    c = rank_run(
        Oracle(truth, constant=True),
        rows,
        sample_ds,
        const_dir,
        candidates_file=f,
        n=20,
        seed=0,
        batch_size=5,
        include_title=False,
    )
    assert c["R@1"] == pytest.approx(5.0) and c["mean_rank"] == 10.5
    assert c["candidates_sha256"] == s["candidates_sha256"]  # the same file, read back, not redrawn
    # a generator without log-probabilities: n/a, never 0
    na_dir = tmp_path / "na"
    na_dir.mkdir()
    na = rank_run(
        NoLogprobs(truth),
        rows,
        sample_ds,
        na_dir,
        candidates_file=f,
        n=20,
        seed=0,
        batch_size=5,
        include_title=False,
    )
    assert na["status"] == "n/a" and "R@1" not in na
    # another N or seed against an existing file is refused, not mixed
    with pytest.raises(ValueError, match="other settings"):
        rank_run(
            Oracle(truth),
            rows,
            sample_ds,
            tmp_path / "x",
            candidates_file=f,
            n=10,
            seed=0,
            batch_size=5,
            include_title=False,
        )


def test_real_video_llava_scores_follow_candidate_order(sample_ds, rows, tiny_model_dir):
    """Shuffling the candidates permutes the tiny PV-LLM's scores (batch-independent), no metric changes."""
    from pvllm.evaluation import to_request
    from pvllm.generators.video_llava import PVLLMGenerator

    gen = PVLLMGenerator(pretrained=str(tiny_model_dir), greedy=True, score_tokens=300)
    cand = build_candidates(rows[:3], sample_ds, n=10, seed=0)
    reqs = [to_request(r, sample_ds) for r in rows[:3]]
    texts = [[x["text"] for x in c["candidates"]] for c in cand]
    scores = gen.score_candidates(reqs, texts)
    perm = list(range(10))
    random.Random(0).shuffle(perm)
    shuffled = gen.score_candidates(reqs, [[t[i] for i in perm] for t in texts])
    for s, sh in zip(scores, shuffled):
        assert len(s) == 10 and all(x < 0 for x in s) and len(set(s)) == 10
        assert sh == pytest.approx([s[i] for i in perm], abs=1e-5)
    items = [{"scores": s, "truth_index": c["truth_index"]} for s, c in zip(scores, cand)]
    items_sh = [{"scores": sh, "truth_index": perm.index(c["truth_index"])} for sh, c in zip(shuffled, cand)]
    m, m_sh = ranking_metrics(items), ranking_metrics(items_sh)
    # ranks equal exactly; the truth's mean log-prob to rounding (candidates packed in another order)
    assert m.pop("truth_logprob") == pytest.approx(m_sh.pop("truth_logprob"), abs=1e-6) and m == m_sh
    # the score is the mean log-prob of " candidate" + EOS after the chat prompt: check one by hand
    import torch

    from pvllm.data.video_io import read_frames
    from pvllm.prompt import chat_prompt

    tok = gen.processor.tokenizer
    enc = gen.processor(
        text=[chat_prompt(reqs[0].prompt)], videos=[read_frames(reqs[0].video_path, 8)], return_tensors="pt"
    )
    reply = tok(" " + texts[0][0].strip(), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = torch.cat([enc["input_ids"], torch.tensor([reply])], dim=1)
    with torch.no_grad():
        logits = gen.model(input_ids=ids, pixel_values_videos=enc["pixel_values_videos"]).logits[0]
    lp = torch.log_softmax(logits.float(), -1)
    n0 = enc["input_ids"].shape[1]
    want = sum(lp[n0 - 1 + j, t].item() for j, t in enumerate(reply)) / len(reply)
    assert scores[0][0] == pytest.approx(want, abs=1e-4)


@pytest.fixture(scope="module")
def tiny_llama_dir(tiny_model_dir, tmp_path_factory):
    """A tiny random Llama causal LM (real HF classes) with the tiny model's tokenizer, saved to disk."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    d = tmp_path_factory.mktemp("llama")
    LlamaForCausalLM(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def test_text_only_scorer_real_small_llama(sample_ds, rows, tiny_llama_dir):
    """The text-only generator ranks through the same helper (a tiny random Llama saved and reloaded)."""
    from pvllm.evaluation import to_request
    from pvllm.generators.text_only import TextOnlyGenerator

    gen = TextOnlyGenerator(model_path=str(tiny_llama_dir), greedy=True, batch_size=3, device="cpu")
    cand = build_candidates(rows[:2], sample_ds, n=6, seed=0)
    reqs = [to_request(r, sample_ds) for r in rows[:2]]
    texts = [[x["text"] for x in c["candidates"]] for c in cand]
    a = gen.score_candidates(reqs, texts)
    gen.batch_size = 6
    b = gen.score_candidates(reqs, texts)
    assert [len(x) for x in a] == [6, 6] and a[0] == pytest.approx(b[0], abs=1e-5)


def test_evaluate_ranks_and_every_model_reads_one_candidates_file(tmp_path, tiny_model_dir, tiny_llama_dir):
    """evaluate.py stage=all with ranking on, a rank-only run of another setting and another model (text-only
    LLM): one candidates file, one sha256."""
    common = [
        f"generator.pretrained={tiny_model_dir}",
        "generator=pvllm",
        "generator.greedy=true",
        "generator.sampling.max_new_tokens=6",
        "~rater",
        "~logger",
        "ranking.n_candidates=8",
        f"paths.output_root={tmp_path}",
    ]
    s_all = run_evaluate(common + ["ranking.enabled=true"], output_dir=tmp_path / "k")
    assert s_all["ranking"]["status"] == "ok" and s_all["ranking"]["n"] == 4
    assert {"copy_history", "distinct-1", "ci95"} <= set(s_all)
    f = tmp_path / "candidates" / "sample_val_s0_n1_N8_c0.jsonl"
    before = f.read_bytes()
    s_none = run_evaluate(common + ["stage=rank", "history.mode=none", "ranking.score=pmi"],
                          output_dir=tmp_path / "none")
    assert s_none["candidates_sha256"] == s_all["ranking"]["candidates_sha256"] and f.read_bytes() == before
    # PMI without a history compares a prompt with itself: every score 0, exactly chance (mean rank (8+1)/2)
    assert s_none["score"] == "pmi" and s_all["ranking"]["score"] == "mean" and s_none["mean_rank"] == 4.5
    assert not (tmp_path / "none" / "predictions.jsonl").exists()  # rank only: nothing generated
    assert len(load_jsonl(tmp_path / "none" / "ranking.jsonl")) == 4
    s_text = run_evaluate(
        [
            "generator=text_only",
            f"generator.model_path={tiny_llama_dir}",
            "~rater",
            "~logger",
            "ranking.n_candidates=8",
            f"paths.output_root={tmp_path}",
            "stage=rank",
        ],
        output_dir=tmp_path / "text",
    )
    assert s_text["model"] == str(tiny_llama_dir) and s_text["status"] == "ok"
    assert s_text["candidates_sha256"] == s_all["ranking"]["candidates_sha256"] and f.read_bytes() == before


@pytest.mark.slow
def test_ranking_history_experiment_is_one_command(tmp_path, tiny_model_dir):
    """`python evaluate.py experiment=ranking_history` runs k, none and others and prints the table."""
    proc = subprocess.run(
        [
            sys.executable,
            "evaluate.py",
            "experiment=ranking_history",
            f"generator.pretrained={tiny_model_dir}",
            "ranking.n_candidates=5",
            "~logger",
            f"paths.output_root={tmp_path}",
            "hydra/job_logging=disabled",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "eval").rglob("ranking_summary.json")]
    assert sorted(s["history_mode"] for s in summaries) == ["k", "none", "others"]
    assert len({s["candidates_sha256"] for s in summaries}) == 1
    table = (tmp_path / "reports" / "ranking" / "ranking.md").read_text()
    assert "history k (k=5)" in table and "no history" in table and "others' history" in table
    assert "| *chance* | 20.0 | 100.0 | 100.0 | 45.7 | 3.0 |" in table


def test_shared_prompt_scores_equal_one_full_sequence_per_candidate(sample_ds, rows, tiny_model_dir,
                                                                     tiny_llama_dir):
    """The prompt-once path (KV cache repeated per candidate batch, replies right-padded) gives the scores of
    one full left-padded sequence per candidate, for replies of 1..n tokens and any batch split."""
    import torch
    from transformers import AutoModelForCausalLM

    from pvllm.evaluation import to_request
    from pvllm.generators.likelihood import mean_reply_logprobs, shared_prompt_reply_logprobs
    from pvllm.generators.video_llava import PVLLMGenerator

    gen = PVLLMGenerator(pretrained=str(tiny_model_dir), greedy=True)
    req = to_request(rows[0], sample_ds)
    enc = gen._encode([req.prompt], [gen._frames(req)])
    prompt, pix = enc["input_ids"][0].tolist(), enc["pixel_values_videos"]
    g = torch.Generator().manual_seed(0)
    replies = [torch.randint(5, 200, (n,), generator=g).tolist() for n in (1, 7, 3, 12, 2)]
    pad = gen.processor.tokenizer.pad_token_id
    want = mean_reply_logprobs(gen.model, [prompt] * 5, replies, pad,
                               extra={"pixel_values_videos": pix.expand(5, *pix.shape[1:])})
    for bs in (1, 2, 5):
        got = shared_prompt_reply_logprobs(gen.model, prompt, replies, pad,
                                           extra={"pixel_values_videos": pix}, batch_size=bs)
        assert got == pytest.approx(want, abs=1e-5)
    assert len(set(want)) == 5
    llama = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    text_prompt = torch.randint(5, 200, (40,), generator=g).tolist()
    want = mean_reply_logprobs(llama, [text_prompt] * 5, replies, pad)
    assert shared_prompt_reply_logprobs(llama, text_prompt, replies, pad, batch_size=3) == pytest.approx(
        want, abs=1e-5)
