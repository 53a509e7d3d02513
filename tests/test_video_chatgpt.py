"""Video-ChatGPT: tiny random weights written in the released layout (LLaVA LLM dir + projector .bin + CLIP)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pvllm.data.video_io import VideoReadError
from pvllm.generators import GENERATORS
from pvllm.generators.base import GenerationRequest
from pvllm.generators.video_chatgpt import (
    SYSTEM,
    VID_END,
    VID_PATCH,
    VID_START,
    VideoChatGPTGenerator,
    VideoChatGPTLoadError,
    build_prompt,
    read_video_frames,
    seq_frame_indices,
    spatio_temporal_tokens,
)
from pvllm.prompt import build_instruction

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT / "data" / "sample" / "videos"
SHARED_VIDEO = ROOT.parent / "shared" / "data" / "videos" / "sample_demo_3.mp4"
HIDDEN, VISION_WIDTH = 32, 24


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(
        [SYSTEM, build_instruction(["so good", "wow what a ride"]), "USER: ASSISTANT:"], trainer
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", 1)]
    )  # LLaMA's BOS
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="session")
def layout(tmp_path_factory):
    """LLaVA-Lightning-style LLM dir, CLIP dir and a video_chatgpt projector .bin, all tiny and seeded."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModel,
        LlamaConfig,
        LlamaForCausalLM,
    )

    root = tmp_path_factory.mktemp("video_chatgpt")
    llm_dir, clip_dir, proj = (
        root / "LLaVA-Lightning-tiny",
        root / "clip-tiny",
        root / "video_chatgpt-tiny.bin",
    )
    torch.manual_seed(0)
    tok = _tokenizer()
    tok.save_pretrained(llm_dir)
    vocab = len(tok)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=1,
        eos_token_id=2,
    )
    LlamaForCausalLM(cfg).save_pretrained(llm_dir)
    raw = json.loads((llm_dir / "config.json").read_text())
    # What LLaVA-Lightning-7B-v1-1's config.json carries beyond LLaMA's.
    raw.update(
        model_type="llava",
        architectures=["LlavaLlamaForCausalLM"],
        mm_vision_tower=str(clip_dir),
        mm_hidden_size=VISION_WIDTH,
        use_mm_proj=True,
        mm_use_im_start_end=True,
    )
    (llm_dir / "config.json").write_text(json.dumps(raw))
    vcfg = CLIPVisionConfig(
        image_size=32,
        patch_size=8,
        hidden_size=VISION_WIDTH,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=2,
    )
    CLIPVisionModel(vcfg).save_pretrained(clip_dir)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        clip_dir
    )
    state = {
        "model.mm_projector.weight": torch.randn(HIDDEN, VISION_WIDTH) * 0.1,
        "model.mm_projector.bias": torch.randn(HIDDEN) * 0.1,
        "model.embed_tokens.weight": torch.randn(vocab + 3, HIDDEN)
        * 0.02,  # + <vid_patch>, <vid_start>, <vid_end>
    }
    torch.save(state, proj)
    return {"llm": llm_dir, "clip": clip_dir, "projector": proj, "state": state, "vocab": vocab}


@pytest.fixture(scope="session")
def gen(layout):
    return VideoChatGPTGenerator(
        llm_path=str(layout["llm"]),
        projector_path=str(layout["projector"]),
        greedy=True,
        sampling={"max_new_tokens": 6},
        batch_size=2,
    )


def req(sample_id, video, history=("so good", "wow what a ride")):
    return GenerationRequest(sample_id, str(video), list(history), build_instruction(list(history)))


def test_registered():
    assert GENERATORS.get("video_chatgpt") is VideoChatGPTGenerator


def test_frame_indices_hand_computed():
    # seg = 9/4 = 2.25: segments [0,2], [2,4] (4.5 rounds to even), [4,7], [7,9] -> middles
    assert seq_frame_indices(10, 4) == [1, 3, 5, 8]
    assert seq_frame_indices(3, 3) == [0, 1, 1]


def test_pooling_hand_computed():
    feats = torch.arange(6, dtype=torch.float32).reshape(2, 3, 1)  # 2 frames x 3 patches x 1 channel
    out = spatio_temporal_tokens(feats, num_frames=4)
    # per-frame means 1, 4 (+2 zero pads), then per-patch means over time 1.5, 2.5, 3.5
    assert out.squeeze(-1).tolist() == [1.0, 4.0, 0.0, 0.0, 1.5, 2.5, 3.5]


def test_prompt_template():
    p = build_prompt("Q?", 3)
    assert p == f"{SYSTEM} USER: Q?\n{VID_START}{VID_PATCH * 3}{VID_END} ASSISTANT:"
    assert "natural language.Follow the instructions" in SYSTEM  # verbatim from conv_video_chatgpt_v1


def test_loader_reads_the_released_layout(gen, layout):
    v = layout["vocab"]
    assert gen.ids == {VID_PATCH: v, VID_START: v + 1, VID_END: v + 2}
    st = layout["state"]
    assert torch.equal(gen.projector.weight, st["model.mm_projector.weight"])
    assert torch.equal(gen.projector.bias, st["model.mm_projector.bias"])
    assert torch.equal(gen.llm.get_input_embeddings().weight, st["model.embed_tokens.weight"])
    assert gen.num_video_tokens == 100 + (32 // 8) ** 2  # 356 = 100 + (224/14)^2 for the real ViT-L/14
    assert gen.vision_tower_name == str(layout["clip"])  # from config.json's mm_vision_tower


def test_video_embeddings_sit_in_the_vid_patch_slots(gen, layout):
    from transformers import CLIPImageProcessor, CLIPVisionModel

    video = VIDEOS / "bikes_01.mp4"
    frames = read_video_frames(video, 100)
    t = frames.shape[0]
    assert t < 100  # a short clip: the temporal tokens get zero padding
    # Independent recomputation: CLIP penultimate layer without CLS, means by hand, the file's projector.
    clip = CLIPVisionModel.from_pretrained(layout["clip"]).eval()
    x = torch.nn.functional.interpolate(torch.from_numpy(frames).permute(0, 3, 1, 2).float(), size=(32, 32))
    pix = CLIPImageProcessor.from_pretrained(layout["clip"])(
        images=list(x.to(torch.uint8).permute(0, 2, 3, 1).numpy()), return_tensors="pt"
    )["pixel_values"]
    with torch.no_grad():
        h = clip(pix, output_hidden_states=True).hidden_states[-2][:, 1:]
    pooled = torch.cat([h.mean(1), torch.zeros(100 - t, VISION_WIDTH), h.mean(0)])
    w, b = layout["state"]["model.mm_projector.weight"], layout["state"]["model.mm_projector.bias"]
    want = pooled @ w.T + b
    got_video = gen.video_tokens(frames)
    torch.testing.assert_close(got_video, want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_video[t:100], b.expand(100 - t, -1))  # padding projects to the bias

    short = build_prompt("hi", gen.num_video_tokens)
    long = build_prompt(build_instruction(["a much longer history comment here"] * 3), gen.num_video_tokens)
    embeds, mask = gen.build_inputs([short, long], [got_video, got_video])
    ids = gen.tokenizer([short, long], return_tensors="pt", padding=True)["input_ids"]
    assert mask[0, 0] == 0 and mask[1].all()  # left padding
    for row in range(2):
        slots = ids[row] == gen.ids[VID_PATCH]
        assert slots.sum() == gen.num_video_tokens
        torch.testing.assert_close(embeds[row, slots], got_video)
        torch.testing.assert_close(embeds[row, ~slots], gen.llm.get_input_embeddings()(ids[row, ~slots]))


def test_greedy_batch_equals_single_and_errors_per_item(gen):
    reqs = [
        req("a", VIDEOS / "bikes_01.mp4"),
        req("b", VIDEOS / "bunny_01.mp4", history=()),
        req("c", VIDEOS / "missing.mp4"),
    ]
    gen.batch_size = 3
    batched = gen.generate(reqs)
    gen.batch_size = 1
    single = gen.generate(reqs)
    assert [(r.sample_id, r.text, r.error) for r in batched] == [
        (r.sample_id, r.text, r.error) for r in single
    ]
    assert batched[0].error is None and isinstance(batched[0].text, str) and batched[0].text
    assert "Video-ChatGPT" not in batched[0].text  # only new tokens come back, not the prompt
    assert batched[2].text is None and "missing.mp4" in batched[2].error and "sample c" in batched[2].error
    assert gen.generation_config == {
        "do_sample": False,
        "max_new_tokens": 6,
        "num_frames": 100,
        "video_tokens": 116,
        "template": "video-chatgpt_v1",
    }


@pytest.mark.skipif(not SHARED_VIDEO.is_file(), reason="shared test data (../shared/data) absent")
def test_real_clip_longer_than_100_frames():
    frames = read_video_frames(SHARED_VIDEO, 100)
    assert frames.shape == (100, 360, 640, 3)  # 146 frames -> 100, segment middles
    with pytest.raises(VideoReadError, match="nope.mp4"):
        read_video_frames(SHARED_VIDEO.parent / "nope.mp4")


def test_default_decoding_is_theirs(layout):
    g = VideoChatGPTGenerator(llm_path=str(layout["llm"]), projector_path=str(layout["projector"]))
    assert g.params == {"do_sample": True, "temperature": 0.2, "max_new_tokens": 1024}
    g.params["max_new_tokens"] = 4  # keep the test fast
    r = [req("s", VIDEOS / "bunny_01.mp4")]
    assert g.generate(r)[0].text == g.generate(r)[0].text  # sampling seeded by sample id


def test_bad_projector_files_are_named(layout, tmp_path):
    st = layout["state"]
    bad = tmp_path / "wrong.bin"
    torch.save({"mm_projector.weight": st["model.mm_projector.weight"], "other.weight": torch.zeros(1)}, bad)
    with pytest.raises(VideoChatGPTLoadError, match="wrong.bin"):
        VideoChatGPTGenerator(llm_path=str(layout["llm"]), projector_path=str(bad))
    narrow = tmp_path / "narrow.bin"
    torch.save(
        {
            "model.mm_projector.weight": torch.zeros(8, VISION_WIDTH),
            "model.mm_projector.bias": torch.zeros(8),
        },
        narrow,
    )
    with pytest.raises(VideoChatGPTLoadError, match="hidden size 32"):
        VideoChatGPTGenerator(llm_path=str(layout["llm"]), projector_path=str(narrow))


def test_hydra_config_builds_the_generator(layout):
    import hydra
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base=None, config_dir=str(ROOT / "conf")):
        cfg = compose(
            "evaluate",
            overrides=[
                "generator=video_chatgpt",
                f"generator.llm_path={layout['llm']}",
                f"generator.projector_path={layout['projector']}",
                "generator.sampling.max_new_tokens=3",
            ],
        )
    g = hydra.utils.instantiate(cfg.generator)
    assert g.params == {"do_sample": True, "temperature": 0.2, "max_new_tokens": 3}
    assert g.generation_config["seed"] == cfg.seed and g.num_video_tokens == 116
    assert g.generate([req("cfg", VIDEOS / "bunny_02.mp4")])[0].error is None


def test_over_long_history_is_cut_to_the_context(gen, caplog):
    from tests.bad_inputs.conftest import long_text

    long = [long_text(6_000, seed=1), "short one"]
    (res,) = gen.generate([req("long", VIDEOS / "bikes_01.mp4", history=long)])
    assert res.error is None and "history_truncated" in res.notes  # 1024-token context, 116 video tokens
    assert "long: history cut to fit the context of 1024 tokens" in caplog.text
    prompt, notes = gen.fitted_prompt(req("long", VIDEOS / "bikes_01.mp4", history=long))
    assert notes == ["history_truncated"] and len(gen.tokenizer(prompt)["input_ids"]) <= 1024 - 6
    assert "short one" in prompt  # the longest comment is shortened first
    assert gen.fitted_prompt(req("ok", VIDEOS / "bikes_01.mp4"))[1] == []
