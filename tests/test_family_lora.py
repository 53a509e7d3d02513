"""Issue 11: a LoRA run on a new family (Qwen2.5-VL, tiny random) trains through train.py, merges into an
HF directory of the same family, and evaluates through generator=hf_video."""

import json

import torch

from pvllm.models.builder import build_pvllm
from pvllm.models.families import model_parts
from tests.entrypoints import run_evaluate
from tests.test_train import TRAIN, _losses, _run


def test_lora_on_qwen2_5_vl_trains_merges_and_evaluates(tmp_path, tiny_family_dirs):
    base = tiny_family_dirs["qwen2_5_vl"]
    run = tmp_path / "train"
    _run(TRAIN[:2] + ["model=tiny_qwen2_5_vl", f"model.pretrained={base}", "model.lora={r: 4, alpha: 8}",
                      "optim.lr=1e-2", "scheduler.name=constant", "logger=csv", "trainer.max_steps=3",
                      "trainer.enable_progress_bar=false", f"hydra.run.dir={run}"])
    losses = _losses(run)
    assert sorted(losses) == [0, 1, 2] and all(0 < v < 20 for v in losses.values())
    merged = run / "hf_model"
    assert not (merged / "adapter_config.json").exists()  # merged: a plain HF directory of the family
    a, b = build_pvllm(str(base)), build_pvllm(str(merged), family="qwen2_5_vl")
    pa, pb = model_parts(a.model), model_parts(b.model)
    assert all(torch.equal(x, y) for x, y in zip(pa["vision_encoder"], pb["vision_encoder"]))  # frozen
    assert all(torch.equal(x, y) for x, y in zip(pa["llm.word_embeddings"], pb["llm.word_embeddings"]))
    # the projector trained next to the adapters
    assert not all(torch.equal(x, y) for x, y in zip(pa["projector"], pb["projector"]))
    qa = a.model.model.language_model.layers[0].self_attn.q_proj.weight
    qb = b.model.model.language_model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(qa, qb)  # the adapters were merged into the attention weights
    ma = a.model.model.language_model.layers[0].mlp.down_proj.weight
    assert torch.equal(ma, b.model.model.language_model.layers[0].mlp.down_proj.weight)  # no adapter there
    summary = run_evaluate(["generator=hf_video", f"generator.pretrained={merged}", "rater=lexical",
                            "~logger",
                            "max_samples=2", "generator.sampling.max_new_tokens=4",
                            f"paths.output_root={tmp_path / 'out'}"], tmp_path / "eval")
    assert summary["n"] == 2 and summary["generator"] == "hf_video"
    preds = [json.loads(x) for x in (tmp_path / "eval" / "predictions.jsonl").open()]
    assert [p["error"] for p in preds] == [None, None]
    assert all(p["model"] == str(merged.resolve()) for p in preds)
