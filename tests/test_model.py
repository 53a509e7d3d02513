import pytest
import torch

from pvllm.data.collate import IGNORE_INDEX, PVLLMCollator
from pvllm.data.video_io import read_frames
from pvllm.models.builder import build_pvllm, model_parts
from pvllm.models.transform import ModelTransform
from pvllm.prompt import build_prompt
from tests.conftest import REPO, SAMPLE

ITEM_HISTORY = ["best rabbit clip EVER 😂🔥", "OMG the street is SO GOOD 🔥🔥🔥"]
ITEM_REPLY = "THIS BUNNY THO 😍😍\r\nso cute"


@pytest.fixture(scope="module")
def item():
    return {"sample_id": "x", "frames": read_frames(SAMPLE / "videos" / "bunny_02.mp4", 8),
            "prompt": build_prompt(ITEM_HISTORY), "reply": ITEM_REPLY}


def test_label_mask_covers_exactly_the_reply(tiny_model_dir, item):
    bundle = build_pvllm(str(tiny_model_dir))
    tok = bundle.processor.tokenizer
    collate = PVLLMCollator(ModelTransform(bundle.processor))
    batch = collate([item, dict(item, reply="nice.")])
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    reply_ids = tok(" " + ITEM_REPLY, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    supervised = labels[0][labels[0] != IGNORE_INDEX].tolist()
    assert supervised == reply_ids  # every reply token + EOS, nothing else
    n = int(mask[0].sum())
    assert labels[0, n - len(reply_ids): n].tolist() == reply_ids  # and they are the last tokens
    assert (labels[0, : n - len(reply_ids)] == IGNORE_INDEX).all()
    # the prompt holds 8 frames × (16 patches + CLS) video tokens
    assert int((ids[0] == bundle.processor.video_token_id).sum()) == 8 * 17
    # the shorter row is right-padded and its padding is neither attended nor supervised
    n1 = int(mask[1].sum())
    assert (ids[1, n1:] == tok.pad_token_id).all() and (labels[1, n1:] == IGNORE_INDEX).all()
    assert tok.decode(labels[1][labels[1] != IGNORE_INDEX]) == " nice.</s>"


def test_freezing_gradients_after_one_step(tiny_model_dir, item):
    bundle = build_pvllm(str(tiny_model_dir), vision_encoder={"trainable": False}, projector={"trainable": True},
                         llm={"trainable": True, "word_embeddings_trainable": False})
    model = bundle.model
    batch = PVLLMCollator(ModelTransform(bundle.processor))([item])
    model.train()
    loss = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values_videos", "labels")}).loss
    loss.backward()
    parts = model_parts(model)
    assert all(p.grad is None for p in parts["vision_encoder"])
    assert all(p.grad is None for p in parts["llm.word_embeddings"])
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in parts["projector"])
    layers = model.model.language_model.layers
    for layer in layers:
        assert layer.self_attn.q_proj.weight.grad.abs().sum() > 0
        assert layer.mlp.down_proj.weight.grad.abs().sum() > 0
    assert model.lm_head.weight.grad.abs().sum() > 0
    table = {r["part"]: r for r in bundle.parameter_table}
    assert table["vision_encoder"]["trainable"] == 0 and table["llm.word_embeddings"]["trainable"] == 0
    assert table["projector"]["frozen"] == 0 and table["llm (other layers)"]["frozen"] == 0


def test_lora_trains_only_adapters_and_projector(tiny_model_dir):
    bundle = build_pvllm(str(tiny_model_dir), lora={"r": 4, "alpha": 8})
    trainable = [n for n, p in bundle.model.named_parameters() if p.requires_grad]
    assert trainable and all(("lora_" in n and "language_model" in n) or "multi_modal_projector" in n
                             for n in trainable)
    assert not any("tower" in n for n in trainable)


def test_save_pretrained_loads_back_through_the_7b_builder(tmp_path, tiny_model_dir, item):
    """The tiny model written with save_pretrained loads through conf/model/video_llava_7b.yaml's builder."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from transformers import VideoLlavaForConditionalGeneration, VideoLlavaProcessor

    ref = VideoLlavaForConditionalGeneration.from_pretrained(tiny_model_dir).eval()
    ref.save_pretrained(tmp_path / "saved")
    VideoLlavaProcessor.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "saved")
    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        cfg = compose("train", overrides=["model=video_llava_7b", f"model.pretrained={tmp_path / 'saved'}",
                                          "model.dtype=float32", "model.attn_implementation=null",
                                          "model.gradient_checkpointing=false", "model.num_frames=8"])
    assert cfg.model._target_ == "pvllm.models.builder.build_pvllm" and cfg.model.create is None
    bundle = instantiate(cfg.model)
    batch = PVLLMCollator(ModelTransform(bundle.processor))([item])
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values_videos")}
    with torch.no_grad():
        a = ref(**inputs).logits
        b = bundle.model.eval()(**inputs).logits
    assert torch.equal(a, b)


def test_missing_local_model_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        build_pvllm(str(tmp_path / "not-there"))
