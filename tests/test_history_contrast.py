"""loss.history_contrast (PVLLMModule.history_contrast_loss): each text-only training item also after another
user's history (SampleDataset.negative_history, the collator's ``negatives``), and the hinge on the per-sample
gap, against cross-entropies computed one unpadded sequence at a time through the HF model's own loss."""

import pytest
import torch

from pvllm.data.collate import PVLLMCollator, SampleDataset
from pvllm.data.histories import build_eval_histories
from pvllm.models.builder import build_pvllm
from pvllm.models.module import PVLLMModule
from pvllm.models.transform import ModelTransform
from pvllm.prompt import build_prompt


@pytest.fixture(scope="module")
def setup(sample_ds, tiny_model_dir):
    bundle = build_pvllm(str(tiny_model_dir))
    samples = build_eval_histories(sample_ds, "val", k=3, seed=0)
    data = SampleDataset(sample_ds, samples, 8, include_title=True, video="none", history_negatives=True, seed=7)
    return bundle, samples, data, PVLLMCollator(ModelTransform(bundle.processor))


def test_negative_is_another_users_history_with_the_same_title_and_reply(setup, sample_ds):
    bundle, samples, data, collate = setup
    author = {c.comment_id: c.user_id for c in sample_ds.comments.values()}
    for i, s in enumerate(samples):
        item = data[i]
        neg = data.negative_history(i)
        assert len(neg) == len(s.history) and {author[h["comment_id"]] for h in neg} != {s.user_id}
        assert s.user_id not in {author[h["comment_id"]] for h in neg}
        title = sample_ds.videos[s.video_id].title
        assert item["neg_prompt"] == build_prompt([h["text"] for h in neg], title, video_token=None)
        assert item["prompt"] == build_prompt([h["text"] for h in s.history], title, video_token=None)
        assert data.negative_history(i) == neg  # seeded: the same draw every time
    draws = {str([SampleDataset(sample_ds, samples, 8, include_title=True, video="none", history_negatives=True,
                                seed=seed).negative_history(i) for i in range(len(samples))]) for seed in range(8)}
    assert len(draws) > 1  # the seed (train.py: seed and epoch) changes the draw
    batch = collate([data[0], data[1]])
    for side in (batch, batch["negatives"]):  # the same reply tokens (+ EOS) are learned on both sides
        assert [row[row != -100].tolist() for row in side["labels"]] == [
            row[row != -100].tolist() for row in batch["labels"]]
    assert not torch.equal(batch["negatives"]["input_ids"][0][: len(batch["input_ids"][0])], batch["input_ids"][0])


def _ce(model, tok, prompt: str, reply: str) -> float:
    """Mean cross-entropy of `` reply`` + EOS after ``prompt``: one unpadded sequence, the HF model's loss."""
    p = tok([prompt], return_tensors="pt")["input_ids"][0]
    r = torch.tensor(tok(" " + reply.strip(), add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
    ids = torch.cat([p, r])[None]
    labels = torch.cat([torch.full_like(p, -100), r])[None]
    return float(model(input_ids=ids, labels=labels).loss)


def test_hinge_and_training_step_match_single_sequence_losses(setup):
    bundle, samples, data, collate = setup
    model, tok = bundle.model.eval(), bundle.processor.tokenizer
    weight, margin = 0.5, 50.0  # above any gap of a random model: every item is in the hinge
    module = PVLLMModule(model, optim={}, loss={"history_contrast": weight, "history_margin": margin})
    items = [data[0], data[1], data[2]]
    batch = collate(items)
    with torch.no_grad():
        loss, gap = module.history_contrast_loss(batch)
        own = [_ce(model, tok, it["prompt"], it["reply"]) for it in items]
        other = [_ce(model, tok, it["neg_prompt"], it["reply"]) for it in items]
        module.log = lambda *a, **k: None  # no trainer attached
        module.train_loss.update = lambda *a, **k: None
        step = float(module.training_step(batch, 0))
        mean = float(module(collate(items)))
    gaps = [o - w for o, w in zip(other, own)]
    assert float(gap) == pytest.approx(sum(gaps) / 3, abs=1e-4)
    hinge = sum(max(0.0, margin - g) for g in gaps) / 3
    assert float(loss) == pytest.approx(hinge, abs=1e-4)
    assert step == pytest.approx(mean + weight * hinge, abs=1e-4)


def test_settings_it_does_not_run_with_are_errors(sample_ds, tmp_path):
    from pvllm.data.datamodule import PVLLMDataModule

    samples = build_eval_histories(sample_ds, "val", k=3, seed=0)
    with pytest.raises(ValueError, match="runs text-only for now: set video.mode=none"):
        SampleDataset(sample_ds, samples, 8, include_title=True, video="own", history_negatives=True)
    with pytest.raises(ValueError, match="video.mode=none, data.packing=false"):
        PVLLMDataModule(root=str(tmp_path), video="own", history_negatives=0.5)
    one_user = [s for s in samples if s.user_id == samples[0].user_id]
    with pytest.raises(ValueError, match="at least two users"):
        SampleDataset(sample_ds, one_user, 8, include_title=True, video="none", history_negatives=True)[0]
    with pytest.raises(ValueError, match="no other-user histories"):
        PVLLMModule(torch.nn.Linear(1, 1), optim={}, loss={"history_contrast": 1.0}).history_contrast_loss(
            {"labels": torch.zeros(1, 1)})
