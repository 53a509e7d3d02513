"""Issue 11: the PV-LLM recipe on every supported HF video-LLM family, with tiny random models of the
real classes written by save_pretrained and loaded back through the one builder."""

import copy

import pytest
import torch

from pvllm.data.collate import IGNORE_INDEX, PVLLMCollator
from pvllm.data.video_io import read_clip
from pvllm.models.builder import build_pvllm
from pvllm.models.families import FAMILIES, get_family, model_parts, render_prompt
from pvllm.models.module import PVLLMModule
from pvllm.models.transform import ModelTransform
from pvllm.prompt import build_instruction
from pvllm.utils.registry import UnknownNameError
from tests.conftest import SAMPLE

NEW = ["qwen2_5_vl", "qwen3_vl", "llava_onevision", "smolvlm", "llava_next_video", "internvl"]
HISTORY = ["best rabbit clip EVER 😂🔥", "OMG the street is SO GOOD 🔥🔥🔥"]
REPLY = "THIS BUNNY THO 😍😍\r\nso cute"

# What each family's chat template writes (hand-written from the hub checkpoints' templates):
# the end of the generation prompt, and the supervised text of the reply "nice."
EXPECTED = {
    "qwen2_5_vl": ("so cute<|im_end|>", "<|im_end|>\n<|im_start|>assistant\n", "nice.<|im_end|>"),
    "qwen3_vl": ("so cute<|im_end|>", "<|im_end|>\n<|im_start|>assistant\n", "nice.<|im_end|>"),
    "llava_onevision": ("so cute<|im_end|>", "<|im_end|><|im_start|>assistant\n", "nice.<|im_end|>"),
    "smolvlm": ("so cute<end_of_utterance>", "<end_of_utterance>\nAssistant:", " nice.<end_of_utterance>"),
    # Vicuna style: the turn ends in a space, so the reply ends with EOS
    "llava_next_video": ("so cute</s>", "own style. ASSISTANT:", " nice.</s>"),
    "internvl": ("so cute<|im_end|>", "<|im_end|>\n<|im_start|>assistant\n", "nice.<|im_end|>"),
}
# visual tokens per sample, 8 frames of the 228×128 clip: Qwen resizes to 32×16 px (16-px factor, ≤ 32² px):
# 4×2 patches of 8 px, merged 2×2 -> 2 tokens per 2 frames -> 8; OneVision: 32-px square, 4×4 patches pooled
# to 2×2 per frame + 1 newline -> 33; SmolVLM: one 32-px tile per frame, 16 patches pixel-shuffled 2×2 -> 32
VISUAL_TOKENS = {"qwen2_5_vl": 4 * 2, "qwen3_vl": 4 * 2, "llava_onevision": 8 * 4 + 1, "smolvlm": 8 * 4,
                 "llava_next_video": 8 * 4,  # NeXT-Video: 4×4 CLIP patches pooled (stride 2) to 2×2 per frame
                 "internvl": 8 * 4}  # InternVL: 4×4 patches pixel-shuffled (ratio 0.5) to 4 per frame
# first training losses of the seeded tiny models on the item below (pinned, ~1e-4)
FIRST_LOSS = {"qwen2_5_vl": 6.220044, "qwen3_vl": 6.213060, "llava_onevision": 6.288537, "smolvlm": 6.264762,
              "llava_next_video": 6.247389, "internvl": 6.272056}


@pytest.fixture(scope="module")
def tiny_dirs(tiny_family_dirs):
    return tiny_family_dirs


@pytest.fixture(scope="module")
def item():
    frames, meta = read_clip(SAMPLE / "videos" / "bunny_02.mp4", 8)
    return {"sample_id": "x", "frames": frames, "video_metadata": meta,
            "instruction": build_instruction(HISTORY), "reply": REPLY}


def _inputs(batch):
    return {k: v for k, v in batch.items() if k not in ("sample_id", "labels")}


def test_unknown_family_lists_the_valid_names():
    with pytest.raises(UnknownNameError, match="Did you mean .qwen2_5_vl.*Valid names: internvl, llava_next_v"):
        get_family("qwen25_vl")
    assert set(NEW) | {"video_llava", "pvllm_video"} == set(FAMILIES.names())


@pytest.mark.parametrize("name", NEW)
def test_label_mask_covers_exactly_the_reply(tiny_dirs, item, name):
    bundle = build_pvllm(str(tiny_dirs[name]))
    assert bundle.family.name == name and bundle.notes[0].startswith(f"family {name}")
    proc, tok = bundle.processor, bundle.processor.tokenizer
    end_of_reply, end_of_prompt, short = EXPECTED[name]
    prompt = render_prompt(proc, item["instruction"])
    assert prompt.endswith(end_of_prompt) and "1. best rabbit clip EVER 😂🔥\n" in prompt
    batch = PVLLMCollator(ModelTransform(proc))([item, dict(item, reply="nice.")])
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    for row in range(2):
        n = int(mask[row].sum())
        sup = labels[row] != IGNORE_INDEX
        k = int(sup.sum())
        assert sup[n - k: n].all() and not sup[: n - k].any() and not sup[n:].any()  # the last k real tokens
        assert labels[row, n - k: n].tolist() == ids[row, n - k: n].tolist()
        assert tok.decode(ids[row, : n - k]).endswith(end_of_prompt)  # everything before is the prompt
    assert tok.decode(labels[0][labels[0] != IGNORE_INDEX]).endswith(end_of_reply)
    assert "THIS BUNNY THO 😍😍" in tok.decode(labels[0][labels[0] != IGNORE_INDEX])
    assert tok.decode(labels[1][labels[1] != IGNORE_INDEX]) == short
    n1 = int(mask[1].sum())
    assert (ids[1, n1:] == tok.pad_token_id).all()  # right padding, not attended
    video_ids = {getattr(proc, "video_token_id", None), getattr(proc, "image_token_id", None)} - {None}
    assert sum(int((ids[0] == v).sum()) for v in video_ids) == VISUAL_TOKENS[name]


@pytest.mark.parametrize("name", NEW)
def test_trainable_flags_give_exactly_the_promised_gradients(tiny_dirs, item, name):
    bundle = build_pvllm(str(tiny_dirs[name]))  # defaults: paper §3.2
    model = bundle.model.train()
    parts = model_parts(model)
    before = {id(p): p.detach().clone() for ps in parts.values() for p in ps}
    batch = PVLLMCollator(ModelTransform(bundle.processor))([item])
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    model(**_inputs(batch), labels=batch["labels"]).loss.backward()
    opt.step()
    promised = {"vision_encoder": False, "projector": True, "llm.word_embeddings": False,
                "llm (other layers)": True}
    if get_family(name).unused:  # parts video never reaches: frozen always
        promised["image_encoder (unused for video)"] = False
    assert set(parts) == set(promised)  # the table covers every parameter (else model_parts raises)
    for part, trains in promised.items():
        assert parts[part], part
        for p in parts[part]:
            assert p.requires_grad == trains
            if trains:  # every trainable parameter got a gradient and moved
                assert p.grad is not None and p.grad.abs().sum() > 0, part
                assert not torch.equal(p.detach(), before[id(p)]), part
            else:
                assert p.grad is None and torch.equal(p.detach(), before[id(p)]), part
    rows = {r["part"]: r for r in bundle.parameter_table}
    assert rows["vision_encoder"]["trainable"] == 0 and rows["llm.word_embeddings"]["trainable"] == 0
    assert rows["projector"]["frozen"] == 0 and rows["llm (other layers)"]["frozen"] == 0
    # the flags mean the same in every family: train the vision encoder too, freeze the LLM
    other = build_pvllm(str(tiny_dirs[name]), vision_encoder={"trainable": True}, llm={"trainable": False})
    rows = {r["part"]: r for r in other.parameter_table}
    assert rows["vision_encoder"]["frozen"] == 0 and rows["llm (other layers)"]["trainable"] == 0


@pytest.mark.parametrize("name", NEW)
def test_first_loss_pinned_and_equal_to_the_models_own(tiny_dirs, item, name):
    bundle = build_pvllm(str(tiny_dirs[name]))
    batch = PVLLMCollator(ModelTransform(bundle.processor))([item, dict(item, reply="nice.")])
    module = PVLLMModule(bundle.model, optim={"lr": 1e-3})
    torch.manual_seed(0)
    ours = module(batch)  # logits only from the first reply token on
    theirs = bundle.model(**_inputs(batch), labels=batch["labels"]).loss
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)
    if FIRST_LOSS[name] is None:
        pytest.fail(f"pin {name}: {ours.item():.6f}")
    assert ours.item() == pytest.approx(FIRST_LOSS[name], abs=1e-4)


@pytest.mark.parametrize("name", NEW)
def test_save_then_load_through_the_builder_gives_equal_logits(tiny_dirs, item, name, tmp_path):
    a = build_pvllm(str(tiny_dirs[name]))
    with torch.no_grad():  # perturb so that a fresh random init could never match by accident
        for p in model_parts(a.model)["projector"]:
            p.add_(0.01)
    a.model.save_pretrained(tmp_path / "saved")
    a.processor.save_pretrained(tmp_path / "saved")
    b = build_pvllm(str(tmp_path / "saved"), family=name)
    batch = PVLLMCollator(ModelTransform(b.processor))([item])
    with torch.no_grad():
        la = a.model.eval()(**_inputs(batch)).logits
        lb = b.model.eval()(**_inputs(batch)).logits
    assert torch.equal(la, lb)
    with pytest.raises(ValueError, match=f"is a {name} model"):
        build_pvllm(str(tmp_path / "saved"), family="video_llava" if name != "video_llava" else "smolvlm")


def test_visual_token_budget_is_a_clear_error(tiny_dirs, item):
    bundle = build_pvllm(str(tiny_dirs["llava_onevision"]))
    with pytest.raises(ValueError, match="sample x: 33 visual tokens > data.max_visual_tokens=32"):
        PVLLMCollator(ModelTransform(bundle.processor), max_visual_tokens=32)([item])
    assert PVLLMCollator(ModelTransform(bundle.processor), max_visual_tokens=33)([item]) is not None


def test_fps_sampling_and_its_frame_budget():
    path = SAMPLE / "videos" / "bunny_02.mp4"
    frames, meta = read_clip(path, 8)
    n, fps = meta["total_num_frames"], meta["fps"]
    dur = n / fps
    frames1, meta1 = read_clip(path, 8, fps=1.0, max_frames=64)
    assert len(frames1) == len(meta1["frames_indices"]) == int(dur) + (dur % 1 > 0)
    assert meta1["frames_indices"][:2] == [0, round(fps)]
    with pytest.raises(ValueError, match="gives 2 frames .> max_frames=1"):
        read_clip(path, 8, fps=1.0, max_frames=1)
    assert copy.deepcopy(meta)["frames_indices"] == [round(i * (n - 1) / 7) for i in range(8)]


def test_train_config_names_a_bad_family_and_budget_before_loading(tmp_path):
    from pvllm.config import ConfigError, validate_train_config
    from tests.entrypoints import compose_config

    cfg = compose_config("train", ["model=tiny_qwen2_5_vl", "model.family=qwen25_vl", "data.max_visual_tokens=0"],
                         tmp_path)
    with pytest.raises(ConfigError) as e:
        validate_train_config(cfg, families=FAMILIES.names())
    assert "model.family: unknown 'qwen25_vl'; valid: internvl, llava_next_video, llava_onevision" in str(e.value)
    assert "data.max_visual_tokens: must be null or > 0, got 0" in str(e.value)
    validate_train_config(compose_config("train", ["model=tiny_smolvlm", "data.fps=1.0"], tmp_path))


def test_reply_logprob_is_the_training_loss_of_that_reply(tiny_dirs, item):
    from pvllm.models.families import reply_logprob

    bundle = build_pvllm(str(tiny_dirs["qwen3_vl"]))
    model = bundle.model.eval()
    clip = (item["frames"], item["video_metadata"])
    batch = PVLLMCollator(ModelTransform(bundle.processor))([dict(item, reply="nice.")])
    with torch.no_grad():
        loss = model(**_inputs(batch), labels=batch["labels"]).loss
    n = int((batch["labels"] != IGNORE_INDEX).sum())
    lp = reply_logprob(model, bundle.processor, item["instruction"], clip, "nice.")
    assert lp == pytest.approx(-loss.item() * n, rel=1e-5)
    assert reply_logprob(model, bundle.processor, item["instruction"], clip, REPLY) < lp  # longer: less likely


def test_ranking_scores_of_a_chat_family_are_mean_training_logprobs(tiny_dirs, item):
    from pvllm.generators.base import GenerationRequest
    from pvllm.generators.hf_video import HFVideoGenerator
    from pvllm.models.families import reply_logprob, reply_token_ids

    gen = HFVideoGenerator(str(tiny_dirs["smolvlm"]))
    req = GenerationRequest("x", str(SAMPLE / "videos" / "bunny_02.mp4"), HISTORY, item["instruction"])
    [scores] = gen.score_candidates([req], [["nice.", REPLY]])
    clip = (item["frames"], item["video_metadata"])
    want = [reply_logprob(gen.model, gen.processor, item["instruction"], clip, c, None)
            / len(reply_token_ids(gen.processor, item["instruction"], c, None)) for c in ("nice.", REPLY)]
    assert scores == pytest.approx(want, rel=1e-6) and gen.supports_ranking
