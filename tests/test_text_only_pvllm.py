"""Text-only PV-LLM (video.mode=none): no frames read, no video token, for comments-only datasets."""

from pvllm.data.collate import PVLLMCollator, SampleDataset
from pvllm.data.histories import build_eval_histories
from pvllm.evaluation import to_request
from pvllm.models.transform import ModelTransform
from pvllm.prompt import build_prompt


def test_text_only_items_collate_without_video(sample_ds, tiny_model_dir):
    from pvllm.models.builder import build_pvllm

    bundle = build_pvllm(str(tiny_model_dir))
    samples = build_eval_histories(sample_ds, "val", k=3, seed=0)
    item = SampleDataset(sample_ds, samples, 8, include_title=True, video=False)[0]
    assert item["frames"] is None and "<video>" not in item["prompt"]
    assert item["prompt"] == build_prompt(
        [h["text"] for h in samples[0].history], sample_ds.videos[samples[0].video_id].title, video_token=None
    )
    assert item["prompt"].startswith("USER: Video title: ")
    batch = PVLLMCollator(ModelTransform(bundle.processor))([item])
    assert batch["pixel_values_videos"] is None
    tok = bundle.processor.tokenizer
    reply = tok(" " + samples[0].reference.strip(), add_special_tokens=False)["input_ids"] + [
        tok.eos_token_id
    ]
    assert (
        batch["labels"][0][batch["labels"][0] != -100].tolist() == reply
    )  # only the reply (+ EOS) is learned
    out = bundle.model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
    )
    assert out.loss.item() > 0


def test_text_only_generator_needs_no_video_file(sample_ds, tiny_model_dir, tmp_path):
    from pvllm.generators.video_llava import PVLLMGenerator

    gen = PVLLMGenerator(
        pretrained=str(tiny_model_dir), greedy=True, sampling={"max_new_tokens": 4}, video=False
    )
    assert gen.generation_config["video"] == "none"
    rows = [s.to_row() for s in build_eval_histories(sample_ds, "val", k=3, seed=0)][:2]
    reqs = [to_request(r, sample_ds) for r in rows]
    for r in reqs:
        r.video_path = str(tmp_path / "absent.mp4")  # never opened
    res = gen.generate(reqs)
    assert [x.error for x in res] == [None, None]
    scores = gen.score_candidates(reqs, [["a", "b c"], ["d", "e"]])
    assert [len(s) for s in scores] == [2, 2] and all(x < 0 for s in scores for x in s)
