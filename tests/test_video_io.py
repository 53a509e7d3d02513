import numpy as np
import pytest

from pvllm.data.video_io import VideoReadError, frame_indices, read_frames
from tests.conftest import SAMPLE, SHARED_DATA, requires_shared_data


def test_frame_indices_are_linspace_rounded():
    assert frame_indices(33, 8).tolist() == [0, 5, 9, 14, 18, 23, 27, 32]
    assert frame_indices(132, 8).tolist() == [0, 19, 37, 56, 75, 94, 112, 131]
    assert frame_indices(3, 8).tolist() == [0, 0, 1, 1, 1, 1, 2, 2]  # short clip: frames repeat


def test_read_frames_on_sample_clip():
    frames = read_frames(SAMPLE / "videos" / "bunny_01.mp4", 8)  # 33 frames, 160x90
    assert frames.shape == (8, 90, 160, 3) and frames.dtype == np.uint8
    # frames are distinct decoded images, not 8 copies of one frame
    assert len({frames[i].tobytes() for i in range(8)}) == 8
    assert read_frames(SAMPLE / "videos" / "bunny_01.mp4", 4).shape == (4, 90, 160, 3)


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
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(SAMPLE, root)
    (root / "videos" / "bunny_01.mp4").write_bytes(b"corrupt")
    return root


def test_loader_raise_or_skip_and_count(tmp_path, tiny_model_dir):
    from transformers import VideoLlavaProcessor

    from pvllm.data.datamodule import PVLLMDataModule

    root = _dataset_with_bad_video(tmp_path)
    proc = VideoLlavaProcessor.from_pretrained(tiny_model_dir)
    dm = PVLLMDataModule(root=str(root), on_bad_video="raise")
    dm.attach_processor(proc)
    dm.setup()
    bad = [i for i, s in enumerate(dm.val_set.samples) if s.video_id == "bunny_01"]
    good = [i for i, s in enumerate(dm.val_set.samples) if s.video_id != "bunny_01"]
    assert good
    if bad:
        with pytest.raises(VideoReadError, match="bunny_01.mp4"):
            dm.val_set[bad[0]]
    dm_skip = PVLLMDataModule(root=str(root), on_bad_video="skip")
    dm_skip.attach_processor(proc)
    dm_skip.setup()
    dm_skip.train_set.set_epoch(0)
    items = [dm_skip.train_set[i] for i in range(len(dm_skip.train_set))]
    n_bad = sum(s.video_id == "bunny_01" for s in dm_skip.train_set.inner.samples)
    assert sum(it is None for it in items) == n_bad  # skipped, never replaced by another sample
    assert sum(dm_skip.skipped.values()) == n_bad
    if n_bad:
        assert any("bunny_01.mp4" in k for k in dm_skip.skipped)
