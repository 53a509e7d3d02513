"""Table 6: LLaVA conversation JSON (text-only) mixed into training; loss only on the gpt replies."""

import json
import logging

import lightning as L
import pytest
import torch

from pvllm.data.collate import IGNORE_INDEX, PVLLMCollator
from pvllm.data.datamodule import PVLLMDataModule
from pvllm.data.text_instructions import MixedEpoch, encode_conversation, load_conversations, text_item
from pvllm.data.video_io import read_frames
from pvllm.models.builder import build_pvllm
from pvllm.models.module import PVLLMModule
from pvllm.models.transform import ModelTransform
from pvllm.prompt import build_prompt
from tests.conftest import SAMPLE

SAMPLE_FILE = SAMPLE / "text_instructions" / "sample_text_instructions.json"
TURNS = (("What is a hare?", "A large rabbit-like animal 🐇"), ("And a bunny?", "A young rabbit."))


def _h(v):
    return {"from": "human", "value": v}


def _g(v):
    return {"from": "gpt", "value": v}


def test_loader_keeps_text_only_items_and_counts_the_rest(tmp_path, caplog):
    items = [
        {"id": "ok", "conversations": [_h("hi"), _g("hello"), _h("bye"), _g("see you")]},
        {"id": "img", "image": "coco/1.jpg", "conversations": [_h("<image>\nWhat is it?"), _g("A cat.")]},
        {"id": "placeholder", "conversations": [_h("<video>\nDescribe."), _g("A dog.")]},
        {
            "id": "lead-gpt",
            "conversations": [_g("Hi, how can I help?"), _h("Name a color."), _g("Blue."), _h("?")],
        },
        {"id": "bad-role", "conversations": [{"from": "user", "value": "x"}, _g("y")]},
        {"id": "not-alternating", "conversations": [_h("a"), _h("b")]},
    ]
    path = tmp_path / "mix.json"
    path.write_text(json.dumps(items))
    with caplog.at_level(logging.WARNING, logger="pvllm.data.text_instructions"):
        convs = load_conversations(path)
    assert [(c.id, c.turns) for c in convs] == [
        ("ok", (("hi", "hello"), ("bye", "see you"))),
        ("lead-gpt", (("Name a color.", "Blue."),)),  # opening gpt turn and unanswered question dropped
    ]
    msg = caplog.text
    assert "skipped 4 of 6 items" in msg and "'has image/video (not text-only)': 1" in msg
    assert "'media placeholder in text': 1" in msg and "turns do not alternate" in msg
    jsonl = tmp_path / "mix.jsonl"
    jsonl.write_text("\n".join(json.dumps(i) for i in items[:1]))
    assert load_conversations(jsonl)[0].turns == convs[0].turns
    path.write_text(json.dumps(items[1:3]))
    with pytest.raises(ValueError, match="no usable text-only conversation"):
        load_conversations(path)
    # the bundled sample: synthetic and labelled so in every item
    sample = json.loads(SAMPLE_FILE.read_text())
    assert len(load_conversations(SAMPLE_FILE)) == len(sample) >= 10
    assert all(it["source"].startswith("synthetic") and it["id"].startswith("synthetic-") for it in sample)


@pytest.fixture(scope="module")
def bundle(tiny_model_dir):
    return build_pvllm(str(tiny_model_dir))


def test_mixed_batch_trains_with_loss_on_replies_only(bundle):
    tok, model = bundle.processor.tokenizer, bundle.model
    video = {
        "sample_id": "v",
        "frames": read_frames(SAMPLE / "videos" / "bunny_02.mp4", 8),
        "prompt": build_prompt(["best rabbit clip EVER"]),
        "reply": "so cute",
    }
    text = {"sample_id": "text:t", "frames": None, "conversations": TURNS}
    collate = PVLLMCollator(ModelTransform(bundle.processor))
    batch = collate([text, video])
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert batch["pixel_values_videos"].shape[0] == 1  # the video item's clip only
    assert int((ids[0] == bundle.processor.video_token_id).sum()) == 0
    assert int((ids[1] == bundle.processor.video_token_id).sum()) == 8 * 17

    # labels of the text row: exactly each gpt reply + EOS, at the positions of those tokens
    n = int(mask[0].sum())
    replies = [tok(" " + g, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for _, g in TURNS]
    sup = (labels[0] != IGNORE_INDEX).nonzero().flatten().tolist()
    assert labels[0][sup].tolist() == replies[0] + replies[1]
    assert ids[0][sup].tolist() == labels[0][sup].tolist()  # labels are the input tokens themselves
    assert tok.decode(ids[0][:n][labels[0][:n] == IGNORE_INDEX]).count("USER:") == 2
    assert tok.decode(labels[0][sup]) == " A large rabbit-like animal 🐇</s> A young rabbit.</s>"
    # the first reply ends right before the second "USER:"; nothing after the last EOS is supervised
    assert sup[-1] == n - 1 and (labels[0, n:] == IGNORE_INDEX).all()

    # mixing changes no row: each row's logits equal those of the item alone
    model.eval()
    with torch.no_grad():
        both = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values_videos")}).logits
        alone_t = collate([text])
        assert alone_t["pixel_values_videos"] is None
        lt = model(input_ids=alone_t["input_ids"], attention_mask=alone_t["attention_mask"]).logits
        alone_v = collate([video])
        lv = model(**{k: alone_v[k] for k in ("input_ids", "attention_mask", "pixel_values_videos")}).logits
    torch.testing.assert_close(both[0, :n], lt[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(both[1, : lv.shape[1]], lv[0], atol=1e-4, rtol=1e-4)

    # one optimizer step on the mixed batch: finite loss, the LLM and the projector learn
    module = PVLLMModule(model, optim={"lr": 1e-3})
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss = module(batch)  # reply positions only through the LM head (logits_to_keep) ...
    full = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values_videos", "labels")}).loss
    torch.testing.assert_close(loss, full, atol=1e-5, rtol=1e-5)  # ... equals HF's loss over every position
    assert torch.isfinite(loss)
    loss.backward()
    assert model.model.multi_modal_projector.linear_1.weight.grad.abs().sum() > 0
    assert model.lm_head.weight.grad.abs().sum() > 0
    opt.step()
    assert module(batch) < loss


def test_truncation_keeps_the_first_reply(bundle):
    tok = bundle.processor.tokenizer
    long = "word " * 400
    turns = [(long, long), ("next?", "yes")]
    first = encode_conversation(tok, turns[:1], max_turn_tokens=100)
    sup = first["labels"][first["labels"] != IGNORE_INDEX]
    assert len(sup) == 101 and sup[-1] == tok.eos_token_id  # reply cut to 100 tokens + EOS
    n1 = len(first["input_ids"])
    cut = encode_conversation(tok, turns, max_tokens=n1 + 3, max_turn_tokens=100)
    assert torch.equal(cut["input_ids"], first["input_ids"])  # the 2nd turn would pass max_tokens: dropped
    full = encode_conversation(tok, turns, max_tokens=1024, max_turn_tokens=100)
    yes = tok(" yes", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert full["labels"][full["labels"] != IGNORE_INDEX].tolist() == sup.tolist() + yes
    # even a first turn longer than max_tokens is kept whole (each message is capped by max_turn_tokens)
    assert torch.equal(
        encode_conversation(tok, turns, max_tokens=10, max_turn_tokens=100)["labels"], first["labels"]
    )


def test_datamodule_mixes_text_each_epoch(tiny_model_dir, bundle):
    dm = PVLLMDataModule(
        root=str(SAMPLE),
        batch_size=2,
        seed=0,
        text_instructions={"path": str(SAMPLE_FILE), "ratio": 0.5, "max_tokens": 256},
    )
    dm.attach_transform(ModelTransform(bundle.processor))
    dm.setup("fit")
    dm.train_set.set_epoch(0)
    epoch0 = dm.train_set.inner
    assert isinstance(epoch0, MixedEpoch)
    kinds = [k for k, _ in epoch0.order]
    n_video = kinds.count("video")
    assert n_video > 0 and kinds.count("text") == round(0.5 * n_video)
    again = MixedEpoch(epoch0.video, epoch0.pool, 0.5, 0, 0)
    assert again.order == epoch0.order  # (seed, epoch) decide everything: same on every rank and resume
    assert MixedEpoch(epoch0.video, epoch0.pool, 0.5, 0, 1).order != epoch0.order
    first_text = kinds.index("text")
    assert epoch0[first_text] == text_item(epoch0.pool[epoch0.order[first_text][1]])

    # Lightning fit over the mixed loader: every batch trains, text-only rows included
    seen = []

    class Probe(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append((batch["sample_id"], float(outputs["loss"])))

    module = PVLLMModule(bundle.model, optim={"lr": 1e-4})
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=4,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Probe()],
    )
    trainer.fit(module, datamodule=dm)
    assert len(seen) == 4 and all(torch.isfinite(torch.tensor(loss)) for _, loss in seen)
    ids = [i for b, _ in seen for i in b]
    assert ids == [epoch0[j]["sample_id"] for j in range(8)]
    assert any(i.startswith("text:") for i in ids)


def test_mistyped_setting_is_an_error(bundle):
    dm = PVLLMDataModule(
        root=str(SAMPLE), text_instructions={"path": str(SAMPLE_FILE), "ratio": 1, "max_token": 9}
    )
    with pytest.raises(TypeError, match="max_token"):
        dm.setup("fit")
