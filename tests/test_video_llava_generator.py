"""The HF Video-LLaVA generators (pvllm, video_llava): left-padded batches, failures per item."""

import pytest

from pvllm.data.dataset import load_pervidcom
from pvllm.data.histories import build_eval_histories
from pvllm.evaluation import to_request
from pvllm.generators.video_llava import PVLLMGenerator, VideoLlavaGenerator
from tests.conftest import SAMPLE


@pytest.fixture(scope="module")
def requests_():
    ds = load_pervidcom(SAMPLE)
    rows = [s.to_row() for s in build_eval_histories(ds, "test", k=5, seed=0)]
    return [to_request(r, ds) for r in rows]


def test_greedy_batch_of_one_equals_batch_of_n(tiny_model_dir, requests_):
    # histories of different lengths: the batch of 6 is left-padded
    one = VideoLlavaGenerator(str(tiny_model_dir), greedy=True, batch_size=1, sampling={"max_new_tokens": 12})
    many = VideoLlavaGenerator(str(tiny_model_dir), greedy=True, batch_size=6, sampling={"max_new_tokens": 12})
    a, b = one.generate(requests_), many.generate(requests_)
    assert [r.sample_id for r in b] == [q.sample_id for q in requests_]
    assert [r.text for r in a] == [r.text for r in b]
    assert all(r.error is None and r.text for r in a)
    assert len({r.text for r in a}) > 1  # different inputs, different outputs (not a constant)
    assert one.generation_config == {"do_sample": False, "max_new_tokens": 12, "num_frames": 8, "seed": 0}
    assert PVLLMGenerator.registry_name == "pvllm" and VideoLlavaGenerator.registry_name == "video_llava"


def test_bad_video_fails_only_its_item(tiny_model_dir, requests_, tmp_path):
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"nope")
    reqs = list(requests_[:2])
    reqs[1] = type(reqs[1])(**{**reqs[1].__dict__, "video_path": str(bad)})
    gen = VideoLlavaGenerator(str(tiny_model_dir), greedy=True, batch_size=2, sampling={"max_new_tokens": 4})
    out = gen.generate(reqs)
    assert out[0].error is None and out[0].text is not None
    assert out[1].text is None and "corrupt.mp4" in out[1].error  # named, never replaced by another sample
