"""`generator=hf_video` on every family: left-padded greedy batches equal batch 1; one multirun over the
families' generator presets reads one histories file; a LoRA run on a new family trains, merges, evaluates."""

import json

import pytest

from pvllm.data.dataset import load_pervidcom
from pvllm.data.histories import build_eval_histories
from pvllm.evaluation import to_request
from pvllm.generators.hf_video import HFVideoGenerator
from tests.conftest import SAMPLE
from tests.test_experiments import _multirun, fast_meteor  # noqa: F401  (fixture: quick METEOR stand-in)

NEW = ["qwen2_5_vl", "qwen3_vl", "llava_onevision", "smolvlm", "llava_next_video", "internvl"]
PRESETS = {"qwen2_5_vl": "QWEN2_5_VL_PATH", "qwen3_vl": "QWEN3_VL_PATH",
           "llava_onevision": "LLAVA_ONEVISION_PATH", "smolvlm2": "SMOLVLM2_PATH",
           "llava_next_video": "LLAVA_NEXT_VIDEO_PATH", "internvl3": "INTERNVL3_PATH"}


@pytest.fixture(scope="module")
def requests_():
    ds = load_pervidcom(SAMPLE)
    rows = [s.to_row() for s in build_eval_histories(ds, "test", k=5, seed=0)]
    return [to_request(r, ds) for r in rows]


@pytest.mark.parametrize("name", NEW)
def test_greedy_batch_of_one_equals_left_padded_batch(tiny_family_dirs, requests_, name):
    # min_new_tokens: a random tiny model that stops at once would make the comparison vacuous
    sampling = {"max_new_tokens": 8, "min_new_tokens": 4}
    one = HFVideoGenerator(str(tiny_family_dirs[name]), batch_size=1, sampling=sampling)
    many = HFVideoGenerator(str(tiny_family_dirs[name]), batch_size=6, sampling=sampling)
    a, b = one.generate(requests_), many.generate(requests_)
    assert [r.sample_id for r in b] == [q.sample_id for q in requests_]
    assert [r.text for r in a] == [r.text for r in b]
    assert all(r.error is None and r.text for r in a)
    assert len({r.text for r in a}) > 1  # different inputs, different outputs
    assert one.generation_config == {"do_sample": False, "max_new_tokens": 8, "min_new_tokens": 4,
                                     "num_frames": 8, "seed": 0, "family": name}


def test_every_family_reads_the_same_histories_in_one_multirun(tmp_path, tiny_family_dirs, monkeypatch):
    dirs = dict(tiny_family_dirs, smolvlm2=tiny_family_dirs["smolvlm"], internvl3=tiny_family_dirs["internvl"])
    for preset, env in PRESETS.items():
        monkeypatch.setenv(env, str(dirs[preset]))
    _multirun([f"generator={','.join(PRESETS)}", "generator.dtype=float32",
               # min_new_tokens: a tiny random model stopping at once would be an "empty generation" failure
               "generator.sampling.max_new_tokens=4", "+generator.sampling.min_new_tokens=4", "rater=lexical",
               "~logger", "max_samples=3"], tmp_path)
    runs = {d.name.split("-")[2]: d for d in (tmp_path / "eval").iterdir()
            if (d / "predictions.jsonl").exists()}
    assert sorted(runs) == sorted(PRESETS)
    histories = list((tmp_path / "histories").glob("*.jsonl"))
    assert len(histories) == 1  # one file, written once, read by every family
    rows = [json.loads(x) for x in histories[0].open()][:3]
    want = [(r["sample_id"], [h["text"] for h in r["history"]], r["reference"]) for r in rows]
    for name, d in runs.items():
        preds = [json.loads(x) for x in (d / "predictions.jsonl").open()]
        assert [(p["sample_id"], p["history"], p["reference"]) for p in preds] == want, name
        assert all(p["generator"] == name and p["error"] is None for p in preds), [
            (p["generator"], p["error"]) for p in preds]
        assert all(p["model"] == str(dirs[name].resolve()) for p in preds)
        summary = json.loads((d / "summary.json").read_text())
        assert summary["histories_file"] == str(histories[0]) and summary["n"] == 3
        assert summary["generator"] == name  # the Table-4 row name
    from pvllm.reports.table4 import report

    rows = report(runs_dir=str(tmp_path / "eval"), out_dir=str(tmp_path / "table4"))
    assert sorted(r["method"] for r in rows) == sorted(PRESETS)  # one Table-4 row per family
    assert (tmp_path / "table4" / "table4.md").is_file()
