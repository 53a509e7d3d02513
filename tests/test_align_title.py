"""experiment=align_small: the projector-alignment stage before PV-LLM (video -> a training user's comment on it,
no history; data.task=title: video -> its title)."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

from pvllm.config import ConfigError, validate_train_config
from pvllm.data.dataset import load_pervidcom
from pvllm.data.histories import eligible_users, title_samples
from pvllm.prompt import INSTRUCTION_TITLE
from tests.conftest import SAMPLE
from tests.entrypoints import compose_config, entry_module

TRAIN = ["experiment=align_small", "model=tiny", "trainer.max_steps=3", "trainer.enable_progress_bar=false",
         "+trainer.limit_val_batches=2", "logger=csv"]


def test_title_samples_one_per_video_of_the_split():
    ds = load_pervidcom(SAMPLE)
    users = set(eligible_users(ds, "train"))
    want = {c.video_id for c in ds.comments.values() if c.user_id in users}
    s0, s1 = title_samples(ds, "train", seed=0, epoch=0), title_samples(ds, "train", seed=0, epoch=1)
    assert sorted(s.video_id for s in s0) == sorted(want) and len(s0) == len(want) == 18
    assert all(s.reference == ds.videos[s.video_id].title and s.history == [] for s in s0)
    assert [s.video_id for s in s0] != [s.video_id for s in s1]  # reshuffled per epoch ...
    assert [s.video_id for s in s0] == [s.video_id for s in title_samples(ds, "train", seed=0, epoch=0)]  # seeded
    assert [s.video_id for s in title_samples(ds, "val", seed=0)] == sorted(
        {c.video_id for c in ds.comments.values() if c.user_id in set(eligible_users(ds, "val"))})


def test_title_task_items_ask_for_the_title(tmp_path):
    cfg = compose_config("train", TRAIN + ["data.task=title"], tmp_path)
    dm = entry_module("train").hydra.utils.instantiate(cfg.data)
    dm.setup("validate")
    item = dm.val_set[0]
    assert INSTRUCTION_TITLE in item["prompt"] and "<video>" in item["prompt"]
    assert item["reply"] == dm.ds.videos[dm.val_set.samples[0].video_id].title


def test_align_small_trains_the_projector_only_on_comments_without_history(tmp_path):
    cfg = compose_config("train", TRAIN + [f"paths.cache_dir={tmp_path / 'cache'}"], tmp_path / "run")
    assert cfg.data.task == "comment" and cfg.model.llm.trainable is False
    assert (cfg.history.train_k_min, cfg.history.train_k_max, cfg.data.train_samples_per_user) == (0, 0, 4)
    dm = entry_module("train").hydra.utils.instantiate(cfg.data)
    dm.setup("fit")
    dm.train_set.set_epoch(0)
    samples = dm.train_set.inner.samples
    assert len(samples) == 14 * 4 and all(s.history == [] for s in samples)  # 14 training users, 4 videos each
    item = dm.train_set[0]
    assert INSTRUCTION_TITLE not in item["prompt"] and "<video>" in item["prompt"]
    assert item["reply"] == samples[0].reference and samples[0].reference in {
        c.text for c in dm.ds.comments.values() if c.video_id == samples[0].video_id}
    entry_module("train").train(cfg)
    before = load_file(next((tmp_path / "cache" / "models").iterdir()) / "model.safetensors")
    after = load_file(tmp_path / "run" / "hf_model" / "model.safetensors")
    moved = {k: float((after[k] - before[k]).abs().max()) for k in after}
    assert min(v for k, v in moved.items() if "multi_modal_projector" in k) > 1e-4  # lr 1e-3, 3 Adam steps
    assert max(v for k, v in moved.items() if "multi_modal_projector" not in k) == 0.0


@pytest.mark.parametrize(("overrides", "message", "early"), [
    (["data.task=caption"], "data.task must be one of", "data.task: comment | title, got 'caption'"),
    (["data.task=title", "video.mode=none"], "needs video.mode=own", "needs video.mode=own")])
def test_task_errors(tmp_path, overrides, message, early):
    cfg = compose_config("train", TRAIN + overrides, tmp_path)
    with pytest.raises(ConfigError, match=early):  # before any model is built
        validate_train_config(cfg)
    with pytest.raises(Exception, match=message):  # and the class itself, built another way
        entry_module("train").hydra.utils.instantiate(cfg.data)

