"""loss.video_contrast (PVLLMModule.video_contrast_loss): the hinge on the own-vs-other-video gap, against
per-sample cross-entropies computed one item at a time."""

import pytest
import torch

from pvllm.data.collate import PVLLMCollator
from pvllm.data.video_io import read_frames
from pvllm.models.builder import build_pvllm
from pvllm.models.module import PVLLMModule
from pvllm.models.transform import ModelTransform
from pvllm.prompt import build_prompt
from tests.conftest import SAMPLE


@pytest.fixture(scope="module")
def setup(tiny_model_dir):
    bundle = build_pvllm(str(tiny_model_dir))
    collate = PVLLMCollator(ModelTransform(bundle.processor))
    items = [{"sample_id": v, "frames": read_frames(SAMPLE / "videos" / f"{v}.mp4", 8),
              "prompt": build_prompt(["nice.", "cool rabbit"]), "reply": reply}
             for v, reply in (("bunny_02", "cool rabbit"), ("bikes_03", "the cyclist waits at the light, nice"))]
    return bundle.model.eval(), collate, items


def _ce(module, collate, item, frames_of):
    return float(module(collate([dict(item, frames=frames_of["frames"])])))


def test_hinge_matches_single_item_losses(setup):
    model, collate, items = setup
    margin = 50.0  # above any gap of a random model: every item is in the hinge
    module = PVLLMModule(model, optim={}, loss={"video_contrast": 1.0, "video_margin": margin})
    with torch.no_grad():
        loss, gap = module.video_contrast_loss(collate(items))  # batch of 2: the other item's video
        own = [_ce(module, collate, it, it) for it in items]
        other = [_ce(module, collate, items[0], items[1]), _ce(module, collate, items[1], items[0])]
    gaps = [o - w for o, w in zip(other, own)]
    assert float(gap) == pytest.approx(sum(gaps) / 2, abs=1e-4)
    assert float(loss) == pytest.approx(sum(max(0.0, margin - g) for g in gaps) / 2, abs=1e-4)


def test_batch_of_one_uses_the_previous_video(setup):
    model, collate, items = setup
    module = PVLLMModule(model, optim={}, loss={"video_contrast": 1.0, "video_margin": 0.0})
    with torch.no_grad():
        assert module.video_contrast_loss(collate([items[0]])) is None           # nothing to compare yet
        assert module.video_contrast_loss(collate([items[0]])) is None           # the same video: left out
        loss, gap = module.video_contrast_loss(collate([items[1]]))              # bunny_02 as the other
        own = _ce(module, collate, items[1], items[1])
        other = _ce(module, collate, items[1], items[0])
    assert float(gap) == pytest.approx(other - own, abs=1e-4)
    assert float(loss) == pytest.approx(max(0.0, -(other - own)), abs=1e-4)


def test_training_step_adds_the_weighted_hinge_with_one_forward_for_the_own_video(setup):
    """training_step = the mean reply loss + weight x hinge, the loss and the hinge's own side from one forward
    (two passes per step, not three): the value of the three-pass formula, item by item."""
    model, collate, items = setup
    weight, margin = 0.5, 50.0
    module = PVLLMModule(model, optim={}, loss={"video_contrast": weight, "video_margin": margin})
    forwards = []
    hook = model.register_forward_hook(lambda *a: forwards.append(1))
    try:
        with torch.no_grad():
            module._last_video = None
            module.training_step(collate([items[0]]), 0)  # no other video yet: the plain loss, one forward
            assert len(forwards) == 1
            got = float(module.training_step(collate([items[1]]), 1))
            assert len(forwards) == 3  # own (loss and hinge) + the previous item's video
            own = _ce(module, collate, items[1], items[1])
            other = _ce(module, collate, items[1], items[0])
    finally:
        hook.remove()
    assert got == pytest.approx(own + weight * max(0.0, margin - (other - own)), abs=1e-4)


def test_with_the_feature_cache_the_recorded_tower_outputs_are_the_video(setup):
    """data.feature_cache: every item's frames are the same placeholder and its tower's recorded outputs carry
    the video; the hinge pairs those (it once compared the identical placeholders and never ran)."""
    from pvllm.data.feature_cache import placeholder_clip
    from pvllm.models.tower_cache import TowerFeatures

    model, collate, items = setup
    towers = TowerFeatures(model, collate.transform.processor, num_frames=8)
    black = placeholder_clip(8)[0]
    cached = [dict(it, frames=black, tower_outputs={k: torch.from_numpy(v) for k, v in
                                                   towers.compute(it["frames"], {}).items()}) for it in items]
    margin = 50.0
    module = PVLLMModule(model, optim={}, loss={"video_contrast": 1.0, "video_margin": margin})
    with torch.no_grad():
        got = module.video_contrast_loss(collate(cached))
        want = module.video_contrast_loss(collate(items))  # the frames themselves
        assert module.video_contrast_loss(collate([cached[0]])) is None  # after a batch of 2: no pairing yet
        module.video_contrast_loss(collate([cached[0]]))
        assert module.video_contrast_loss(collate([cached[0]])) is None  # the same cached video: left out
        one = module.video_contrast_loss(collate([cached[1]]))
        other = _ce(module, collate, items[1], items[0]) - _ce(module, collate, items[1], items[1])
    assert got is not None and float(got[1]) == pytest.approx(float(want[1]), abs=1e-4)
    assert float(got[0]) == pytest.approx(float(want[0]), abs=1e-4)
    assert float(one[1]) == pytest.approx(other, abs=1e-4)
