"""Issue 16 item 13: a user-given generator.checkpoint is read as weights only (safetensors preferred);
a pickle that would run code is refused, and the code does not run."""

from __future__ import annotations

import os

import pytest
import torch


class _RunsCode:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):  # unpickling this calls os.system
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_is_refused_and_safetensors_loads(tiny_model_dir, tmp_path):
    from safetensors.torch import save_file
    from transformers import VideoLlavaForConditionalGeneration

    from pvllm.generators.video_llava import PVLLMGenerator, UnsafeCheckpointError

    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": _RunsCode(str(marker))}, evil)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.ckpt: refused, it is not a weights-only checkpoint"):
        PVLLMGenerator(pretrained=str(tiny_model_dir), checkpoint=str(evil))
    assert not marker.exists()  # the payload never ran
    disguised = tmp_path / "weights.safetensors"  # issue 25 item 9: the message names the file
    disguised.write_bytes(evil.read_bytes())
    with pytest.raises(UnsafeCheckpointError, match=r"weights\.safetensors: refused, not a safetensors file"):
        PVLLMGenerator(pretrained=str(tiny_model_dir), checkpoint=str(disguised))
    assert not marker.exists()

    # the preferred form: a safetensors file of the module's weights (keys model.*)
    base = VideoLlavaForConditionalGeneration.from_pretrained(tiny_model_dir)
    state = {f"model.{k}": v.clone() + 0.5 for k, v in base.state_dict().items()}
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    gen = PVLLMGenerator(pretrained=str(tiny_model_dir), checkpoint=str(tmp_path / "w.safetensors"))
    name = "model.language_model.layers.0.mlp.up_proj.weight"
    assert torch.equal(gen.model.state_dict()[name], state[f"model.{name}"])
