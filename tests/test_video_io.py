import numpy as np
import pytest

from pvllm.data.video_io import VideoReadError, frame_indices, read_frames
from tests.conftest import SAMPLE, SHARED_DATA, requires_shared_data


def test_frame_indices_are_linspace_rounded():
    assert frame_indices(33, 8).tolist() == [0, 5, 9, 14, 18, 23, 27, 32]
    assert frame_indices(132, 8).tolist() == [0, 19, 37, 56, 75, 94, 112, 131]
    assert frame_indices(3, 8).tolist() == [0, 0, 1, 1, 1, 1, 2, 2]  # short clip: frames repeat


def test_read_frames_on_sample_clip():
    frames = read_frames(SAMPLE / "videos" / "bunny_01.mp4", 8)  # 30 frames, 228x128
    assert frames.shape == (8, 128, 228, 3) and frames.dtype == np.uint8
    # frames are distinct decoded images, not 8 copies of one frame
    assert len({frames[i].tobytes() for i in range(8)}) == 8
    assert read_frames(SAMPLE / "videos" / "bunny_01.mp4", 4).shape == (4, 128, 228, 3)


@requires_shared_data("videos", "bigbuckbunny.mp4")
def test_read_frames_on_real_hd_clip_matches_direct_decord():
    import decord

    path = SHARED_DATA / "videos" / "bigbuckbunny.mp4"
    frames = read_frames(path, 8)
    assert frames.shape == (8, 720, 1280, 3)
    direct = decord.VideoReader(str(path)).get_batch([0, 19, 37, 56, 75, 94, 112, 131]).asnumpy()
    assert np.array_equal(frames, direct)


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 50])
def test_corrupt_video_names_the_file(tmp_path, content):
    bad = tmp_path / "broken_clip.mp4"
    bad.write_bytes(content)
    with pytest.raises(VideoReadError, match="broken_clip.mp4"):
        read_frames(bad)


def test_missing_video_names_the_file(tmp_path):
    with pytest.raises(VideoReadError, match="nope.mp4"):
        read_frames(tmp_path / "nope.mp4")


def _dataset_with_bad_video(tmp_path):
    """A copy of the sample whose video of training draw 0's first sample and of the first validation
    sample are corrupt (chosen from the draws, not pinned): (root, bad video ids)."""
    import shutil

    from pvllm.data.dataset import load_pervidcom
    from pvllm.data.histories import build_eval_histories, draw_training_samples

    root = tmp_path / "ds"
    shutil.copytree(SAMPLE, root)
    ds = load_pervidcom(root)
    bad_val = build_eval_histories(ds, "val", k=5, seed=0)[0].video_id
    bad = {draw_training_samples(ds, "train", epoch=0, seed=0)[0].video_id, bad_val}
    for v in bad:
        ds.video_path(v).write_bytes(b"corrupt")
    return root, bad, bad_val


def test_loader_raise_or_skip_and_count(tmp_path, tiny_model_dir):
    from transformers import VideoLlavaProcessor

    from pvllm.data.collate import IGNORE_INDEX, PVLLMCollator
    from pvllm.data.datamodule import PVLLMDataModule
    from pvllm.models.transform import ModelTransform

    root, bad, bad_val = _dataset_with_bad_video(tmp_path)
    proc = VideoLlavaProcessor.from_pretrained(tiny_model_dir)
    dm = PVLLMDataModule(root=str(root), on_bad_video="raise")
    dm.attach_transform(ModelTransform(proc))
    # item 9: with on_bad_video=raise the validation videos are decoded before any training step
    with pytest.raises(VideoReadError, match=rf"(?s)1 of \d+ validation video\(s\).*{bad_val}\.mp4"):
        dm.setup("fit")
    dm.setup()  # no check outside fit/validate
    first_bad = next(i for i, s in enumerate(dm.val_set.samples) if s.video_id in bad)
    with pytest.raises(VideoReadError, match=dm.val_set.samples[first_bad].video_id):
        dm.val_set[first_bad]
    dm_skip = PVLLMDataModule(root=str(root), on_bad_video="skip")
    dm_skip.attach_transform(ModelTransform(proc))
    dm_skip.setup("fit")
    dm_skip.train_set.set_epoch(0)
    samples = dm_skip.train_set.inner.samples
    items = [dm_skip.train_set[i] for i in range(len(dm_skip.train_set))]
    n_bad = sum(s.video_id in bad for s in samples)
    assert n_bad >= 1
    # never replaced by another sample: each item is its own sample; the bad ones are marked placeholders
    assert [it["sample_id"] for it in items] == [s.sample_id for s in samples]
    assert sum("bad_video" in it for it in items) == n_bad
    batch = PVLLMCollator(ModelTransform(proc))(items[:2])
    assert batch["skipped_videos"] == [items[0]["bad_video"]]
    assert (batch["labels"][0] == IGNORE_INDEX).all() and (batch["labels"][1] != IGNORE_INDEX).any()
    # counted in the main process from the batch (dataloader workers' counters are copies)
    dm_skip.on_before_batch_transfer(batch, 0)
    assert dict(dm_skip.skipped) == {items[0]["bad_video"]: 1} and "skipped_videos" not in batch
