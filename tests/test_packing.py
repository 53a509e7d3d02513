"""Issue 23 item 2: packed training (data.packing=true) on every family's tiny model.

Packed vs one-by-one: logits, per-sample losses and the gradients after one step assert_close; the places
where packing goes silently wrong are tested by name: Qwen's M-RoPE positions (each sample's own, not
continuing the previous sample's), the visual features landing on their own sample's tokens (samples of
different videos, different frame counts for Qwen), and the loss weighting (per token vs per sample).
"""

from __future__ import annotations

import copy

import pytest
import torch

from pvllm.data.collate import PVLLMCollator, SampleDataset
from pvllm.data.histories import draw_training_samples
from pvllm.data.packing import PackSampler, plan_packs, sample_lengths
from pvllm.data.video_io import read_clip
from pvllm.models.builder import build_pvllm
from pvllm.models.families import FAMILIES
from pvllm.models.module import PVLLMModule
from pvllm.models.packing import TextTokens, packed_forward, packed_model_inputs, segment_ids
from pvllm.models.transform import ModelTransform
from pvllm.prompt import build_instruction
from tests.conftest import SAMPLE

ALL = sorted(FAMILIES.names())
MROPE = ("qwen2_5_vl", "qwen3_vl")


# --- the plan and the sampler ---------------------------------------------------------------------

def test_plan_fills_the_budget_in_order_and_names_a_sample_too_long():
    assert plan_packs([5, 4, 3, 6, 2, 9], 10) == [[0, 1], [2, 3], [4], [5]]  # 9, 9, 2 (+9 > 10), 9
    assert plan_packs([10, 10], 10) == [[0], [1]]
    with pytest.raises(ValueError, match="sample s2 has 11 tokens > data.pack_tokens=10"):
        plan_packs([3, 4, 11], 10, ids=["s0", "s1", "s2"])


def test_every_rank_gets_the_same_number_of_packs():
    packs = [[0, 1], [2], [3, 4, 5], [6], [7]]  # 5 packs over 2 ranks: 3 each, pack 0 repeated
    r0, r1 = (list(PackSampler(range(8), packs, num_replicas=2, rank=r)) for r in (0, 1))
    assert r0 == [[0, 1], [3, 4, 5], [7]] and r1 == [[2], [6], [0, 1]]
    assert len(PackSampler(range(8), packs, 2, 0)) == len(PackSampler(range(8), packs, 2, 1)) == 3
    one = PackSampler(range(8), packs)
    assert list(one) == packs and one.repeated == 0
    one.skip = 2  # a mid-epoch resume after 2 packs
    assert list(one) == packs[2:] and len(one) == 3


def test_resumed_loader_skips_the_packs_already_trained():
    from pvllm.data.packing import PackView
    from pvllm.data.sampler import ResumableLoader

    packs = [[0, 1], [2], [3, 4, 5], [6]]
    data = list(range(10, 17))  # item i is 10 + i

    def loader(done: int) -> list:
        return list(ResumableLoader(PackView(data), batch_size=None, sampler=PackSampler(data, packs),
                                    collate_fn=lambda items: items, completed_batches=lambda: done))

    assert loader(0) == [[10, 11], [12], [13, 14, 15], [16]]
    assert loader(2) == [[13, 14, 15], [16]]  # the resumed epoch: the rest, the same packs


# --- every family ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dirs(tiny_family_dirs, tiny_model_dir):
    return dict(tiny_family_dirs, video_llava=tiny_model_dir)


def _items(name: str) -> list[dict]:
    """Three samples of two videos with replies of different lengths; Qwen: 8 and 4 frames (other grids)."""
    n2 = 4 if name in MROPE else 8
    clips = [read_clip(SAMPLE / "videos" / "bunny_02.mp4", 8), read_clip(SAMPLE / "videos" / "bikes_03.mp4", n2),
             read_clip(SAMPLE / "videos" / "bunny_02.mp4", 8)]
    histories = [["best rabbit clip EVER 😂🔥"], ["so many bikes", "traffic again", "lol"], ["cute"]]
    replies = ["THIS BUNNY THO 😍😍 so cute", "nice.", "the rabbit wins every time, I love it"]
    return [{"sample_id": f"s{i}", "frames": f, "video_metadata": m, "instruction": build_instruction(h),
             "prompt": "", "reply": r} for i, ((f, m), h, r) in enumerate(zip(clips, histories, replies))]


@pytest.fixture(scope="module", params=ALL)
def family(request, dirs):
    torch.manual_seed(0)
    bundle = build_pvllm(str(dirs[request.param]))
    model = bundle.model.train()
    items = _items(request.param)
    packed = PVLLMCollator(ModelTransform(bundle.processor), packing=True)(items)
    singles = [PVLLMCollator(ModelTransform(bundle.processor))([it]) for it in items]
    return request.param, bundle, model, items, packed, singles


def _inputs(batch):
    return {k: v for k, v in batch.items() if k not in ("sample_id", "labels", "skipped_videos", "loss_weights")}


@pytest.mark.parametrize("attention", ["segments", "mask"])  # SDPA per sample (CPU default) / block mask
def test_packed_logits_equal_one_by_one(family, attention):
    name, _, model, _, packed, singles = family
    with torch.no_grad():
        logits = packed_forward(model, packed, attention=attention).logits[0]
        starts = torch.cumsum(packed["seq_lens"], 0) - packed["seq_lens"]
        for s, ln, single in zip(starts.tolist(), packed["seq_lens"].tolist(), singles):
            alone = model(**_inputs(single)).logits[0]
            assert alone.shape[0] == ln
            torch.testing.assert_close(logits[s: s + ln], alone, atol=2e-5, rtol=1e-4)
        # the test can fail: one causal row over all samples (attention and positions crossing samples)
        plain = model(**_inputs({k: v for k, v in packed.items() if k != "seq_lens"})).logits[0]
    last = slice(int(starts[-1]), None)
    assert (plain[last] - logits[last]).abs().max() > 1e-3


def test_packed_sample_losses_and_both_reductions(family):
    name, bundle, model, items, packed, singles = family
    module = PVLLMModule(model, optim={"lr": 1e-3})
    with torch.no_grad():
        ours = module.sample_losses(packed)
        alone = torch.cat([module.sample_losses(b) for b in singles])
        torch.testing.assert_close(ours, alone, atol=1e-5, rtol=1e-5)
        # per token (the default): sum of every reply token's loss / number of reply tokens, as a padded batch
        n_tok = torch.tensor([float((b["labels"] != -100).sum() - 0) for b in singles])
        want_token = float((alone * n_tok).sum() / n_tok.sum())
        assert module(packed).item() == pytest.approx(want_token, abs=1e-5)
        padded = PVLLMCollator(ModelTransform(bundle.processor))(items)
        assert module(padded).item() == pytest.approx(want_token, abs=1e-5)
        # per sample: the mean of the samples' means, packed or padded
        want_sample = float(alone.mean())
        assert abs(want_sample - want_token) > 1e-4  # replies of different lengths: the reductions differ
        for batch in (PVLLMCollator(ModelTransform(bundle.processor), packing=True, loss_reduction="sample")(items),
                      PVLLMCollator(ModelTransform(bundle.processor), loss_reduction="sample")(items)):
            assert module(batch).item() == pytest.approx(want_sample, abs=1e-5)


@pytest.mark.parametrize("reduction", ["token", "sample"])
def test_gradients_and_one_step_equal_one_by_one(family, reduction):
    name, bundle, model, items, _, singles = family
    packed = PVLLMCollator(ModelTransform(bundle.processor), packing=True, loss_reduction=reduction)(items)
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    ma, mb = PVLLMModule(a, optim={}), PVLLMModule(b, optim={})
    ma(packed).backward()
    # one by one: each sample's summed token loss, combined with the reduction's weights
    n_tok = [int((s["labels"] != -100).sum()) for s in singles]
    for s, n in zip(singles, n_tok):
        w = n / sum(n_tok) if reduction == "token" else 1 / len(singles)
        (mb(s) * w).backward()
    pa = [p for p in a.parameters() if p.requires_grad]
    pb = [p for p in b.parameters() if p.requires_grad]
    assert pa and all(p.grad is not None for p in pa)
    for x, y in zip(pa, pb):
        torch.testing.assert_close(x.grad, y.grad, atol=1e-5, rtol=1e-4)
    for params in (pa, pb):  # one optimizer step each (SGD: Adam's first step is sign(grad), noise included)
        torch.optim.SGD(params, lr=0.1).step()
    for x, y in zip(pa, pb):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-5)


def test_qwen_mrope_positions_are_each_samples_own(family):
    name, _, model, _, packed, singles = family
    if name not in MROPE:
        pos = packed_model_inputs(model, packed)["position_ids"][0]
        assert pos.tolist() == [i for n in packed["seq_lens"].tolist() for i in range(n)]
        return
    pos = packed_model_inputs(model, packed)["position_ids"]  # (4, 1, T): text row, then t/h/w
    assert pos.shape == (4, 1, int(packed["seq_lens"].sum()))
    seg = segment_ids(packed["seq_lens"])
    inner = model.model
    for i, single in enumerate(singles):
        own, _ = inner.get_rope_index(single["input_ids"], mm_token_type_ids=single["mm_token_type_ids"],
                                      **{k: single[k] for k in ("video_grid_thw", "second_per_grid_ts")
                                         if single.get(k) is not None})
        assert torch.equal(pos[1:, 0, seg == i], own[:, 0])
        assert pos[0, 0, seg == i].tolist() == list(range(int((seg == i).sum())))
        assert int(pos[1:, 0, seg == i].min()) == 0  # restarts: the second sample does not continue the first
    grids = packed["video_grid_thw"]
    assert grids[0, 0] != grids[1, 0]  # 8 vs 4 frames: samples of different visual sizes in one row


def test_planned_lengths_equal_the_encoded_ones(dirs, sample_ds):
    drawn = draw_training_samples(sample_ds, "train", 0, 0, 1, 6)
    videos = sorted({s.video_id for s in drawn}, key=lambda v: -sum(s.video_id == v for s in drawn))[:2]
    samples = [s for s in drawn if s.video_id in videos][:6]  # several samples per video, different histories
    for name in ("video_llava", *MROPE, "smolvlm"):  # both prompt formats; timestamps in the prompt
        bundle = build_pvllm(str(dirs[name]))
        ds = SampleDataset(sample_ds, samples, 8, include_title=False)
        collator = PVLLMCollator(ModelTransform(bundle.processor))
        lengths = sample_lengths(ds, collator.encode, TextTokens(bundle.processor))
        assert lengths == [len(collator.encode(ds[i])["input_ids"]) for i in range(len(ds))], name
        assert len({s.video_id for s in samples}) < len(samples)  # the memo was used


def test_train_py_packed_ddp_two_processes_same_steps(tmp_path):
    """train.py data.packing=true on 2 CPU processes: 14 samples in 7 packs of <= 1500 tokens; the odd pack
    count is evened out by repeating the first pack, so both ranks run 4 steps and stay identical."""
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    env = dict(os.environ, PVLLM_OUTPUTS=str(tmp_path), OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    proc = subprocess.run(
        [sys.executable, "train.py", "experiment=demo", "data.packing=true", "data.pack_tokens=1500",
         "trainer.max_steps=-1", "trainer.max_epochs=1", "trainer.devices=2", "strategy=ddp", "logger=csv",
         "trainer.enable_progress_bar=false", "+callbacks.probe._target_=pvllm.distributed.probe.TrainProbe",
         "+callbacks.probe.out_dir=${paths.output_dir}/probe"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "14 samples (8100 tokens) in 7 packs of <= 1500 tokens" in proc.stdout + proc.stderr
    (run_dir,) = [p for p in (tmp_path / "train").iterdir() if not p.is_symlink()]
    recs = [[json.loads(x) for x in (run_dir / "probe" / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    steps = [[r for r in rr if r["event"] == "step"] for rr in recs]
    assert [len(s) for s in steps] == [4, 4]  # ceil(7 / 2) each
    ids = [[tuple(r["sample_ids"]) for r in s] for s in steps]
    assert ids[1][-1] == ids[0][0]  # the repeated pack: rank 1's last is pack 0
    trained = [i for s in ids for pack in s for i in pack]
    assert len(set(trained)) == 14 and len(trained) == 14 + len(ids[0][0])
    assert recs[0][-1]["param_checksum"] == recs[1][-1]["param_checksum"]


def test_gradient_checkpointing_keeps_the_samples_apart(dirs):
    """Recomputed layers (after the forward returned) still attend within each sample."""
    grads = []
    for ckpt in (False, True):
        bundle = build_pvllm(str(dirs["qwen2_5_vl"]), gradient_checkpointing=ckpt)
        model = bundle.model.train()
        batch = PVLLMCollator(ModelTransform(bundle.processor), packing=True)(_items("qwen2_5_vl"))
        PVLLMModule(model, optim={})(batch).backward()
        grads.append([p.grad for p in model.parameters() if p.requires_grad])
    for x, y in zip(*grads):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)
