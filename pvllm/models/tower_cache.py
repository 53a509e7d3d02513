"""The model side of the feature cache: a frozen vision tower's outputs, recorded once per video and
replayed in place of the tower, for every family (``pvllm.data.feature_cache`` stores them).

What is cached is the output of the tower's LAYERS whose results the rest of the model reads: the layer that
``vision_feature_layer`` selects (Video-LLaVA / LanguageBind-shaped CLIP towers, LLaVA-OneVision,
LLaVA-NeXT-Video, InternVL), the last block (Qwen2.5-VL, SmolVLM) plus the deepstack blocks (Qwen3-VL), or the
whole encoder (PV-LLM's swapped encoders: MobileNetV2, open_clip). Replaying makes each layer of the tower
return its recorded output (the others pass their input through), so everything after the tower — the
family's own feature selection, Qwen's mergers (the projector, trainable) and window order, the projector —
runs exactly as without the cache. The tower's embedding layer still sees the processor's pixel values; they
come from black frames of the recorded shape (the processor expands the video placeholder from the shape
and the clip metadata, both stored in the entry), so no video is opened.

``TowerFeatures`` (built by the entry point and handed to the data module / cache builder) gives the cache
its settings and computes entries; ``replay(model, outputs)`` is the context the LightningModule and the
generators run a forward pass in.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from pvllm.models.families import family_of, processor_inputs, render_prompt, unwrap
from pvllm.utils.hashing import state_dict_sha256

# family -> (vision tower module path, its layer list inside the tower; None: the whole tower is one unit)
TOWERS: dict[str, tuple[str, str | None]] = {
    "video_llava": ("model.video_tower", "encoder.layers"),
    "pvllm_video": ("model.video_tower", None),
    "qwen2_5_vl": ("model.visual", "blocks"),
    "qwen3_vl": ("model.visual", "blocks"),
    "llava_onevision": ("model.vision_tower", "encoder.layers"),
    "llava_next_video": ("model.vision_tower", "encoder.layers"),
    "smolvlm": ("model.vision_model", "encoder.layers"),
    "internvl": ("model.vision_tower", "encoder.layer"),
}
WHOLE = "tower"  # the recorded name of a whole-tower unit


class TowerCacheError(RuntimeError):
    """The model's tower cannot be cached (trainable, unknown family) or a replay does not fit."""


def _get(root: Any, path: str) -> Any:
    for part in path.split("."):
        root = getattr(root, part)
    return root


def _hidden_state_layer(h: int, n_layers: int) -> int:
    """The layer whose output ``hidden_states[h]`` is (hidden_states[0] is the embeddings)."""
    i = h + n_layers + 1 if h < 0 else h
    if not 1 <= i <= n_layers:
        raise TowerCacheError(f"vision_feature_layer {h} selects the embeddings (or none of {n_layers} layers): "
                              "nothing of the tower to cache")
    return i - 1


def recorded_layers(model: Any) -> list[int]:
    """Indices of the tower layers whose outputs the model reads (empty: the whole tower is one unit)."""
    model = unwrap(model)
    name = family_of(model).name
    tower_path, layers_path = TOWERS[name]
    if layers_path is None:
        return []
    n = len(_get(_get(model, tower_path), layers_path))
    cfg = model.config
    if name in ("qwen2_5_vl", "smolvlm"):
        return [n - 1]
    if name == "qwen3_vl":
        return sorted(set(cfg.vision_config.deepstack_visual_indexes) | {n - 1})
    h = cfg.vision_feature_layer
    if name == "internvl" and h == -1:  # InternVL reads last_hidden_state then
        return [n - 1]
    return sorted({_hidden_state_layer(x, n) for x in (h if isinstance(h, list | tuple) else [h])})


class _Stop(Exception):
    """Raised after the last recorded layer: nothing after the tower runs while recording."""


class TowerFeatures:
    """The tower transform of ``pvllm.data.feature_cache`` for ``model`` (+ its processor), frames sampled as
    ``num_frames`` uniform indices, resized to ``frame_size`` (None: as decoded)."""

    def __init__(self, model: Any, processor: Any, num_frames: int, frame_size: int | None = None):
        self.model, self.processor = model, processor
        self.family = family_of(unwrap(model))
        if self.family.name not in TOWERS:
            raise TowerCacheError(f"family {self.family.name} has no tower entry in pvllm.models.tower_cache.TOWERS "
                                  f"(known: {', '.join(sorted(TOWERS))})")
        self.tower_path, self.layers_path = TOWERS[self.family.name]
        self.num_frames, self.frame_size = int(num_frames), frame_size
        self.layers = recorded_layers(model)

    def _tower(self):
        return _get(unwrap(self.model), self.tower_path)

    def _frozen_state(self) -> dict[str, torch.Tensor]:
        """The tower's parameters and buffers that the recorded outputs depend on: all but projector parts
        nested in it (Qwen's mergers, trainable)."""
        rel = [p[len(self.tower_path) + 1:] + "." for p in self.family.projector if p.startswith(self.tower_path + ".")]
        return {k: v for k, v in self._tower().state_dict().items() if not any(k.startswith(r) for r in rel)}

    def check_frozen(self) -> None:
        rel = [p[len(self.tower_path) + 1:] + "." for p in self.family.projector if p.startswith(self.tower_path + ".")]
        trainable = [n for n, p in self._tower().named_parameters()
                     if p.requires_grad and not any(n.startswith(r) for r in rel)]
        if trainable:
            raise TowerCacheError(f"the vision tower ({self.tower_path}) is trainable ({trainable[0]}, ...): its "
                                  "outputs change during training; the feature cache is for frozen towers only")

    def settings(self) -> dict[str, Any]:
        """Everything a recorded output depends on (the cache key besides the video's content)."""
        self.check_frozen()
        vp = getattr(self.processor, "video_processor", None) or self.processor.image_processor
        prep = json.loads(json.dumps(vp.to_dict(), sort_keys=True, default=str))
        return {"kind": "tower", "family": self.family.name, "tower": self.tower_path,
                "layers": self.layers or WHOLE, "weights_sha256": state_dict_sha256(self._frozen_state()),
                "vision_feature_layer": getattr(unwrap(self.model).config, "vision_feature_layer", None),
                "num_frames": self.num_frames, "frame_size": self.frame_size, "sampling": "linspace",
                "preprocessing": prep, "processor_kwargs": self.family.processor_kwargs, "dtype": "float32"}

    def _units(self) -> list[tuple[str, torch.nn.Module]]:
        tower = self._tower()
        if self.layers_path is None:
            return [(WHOLE, tower)]
        layers = _get(tower, self.layers_path)
        return [(f"layer_{i}", layers[i]) for i in self.layers]

    @torch.inference_mode()
    def compute(self, frames: np.ndarray, metadata: dict) -> dict[str, np.ndarray]:
        """The recorded outputs for one clip: the model's own forward on the processor's inputs, stopped
        right after the last recorded layer (the language model never runs)."""
        model = self.model
        clip = (frames, metadata) if self.family.needs_video_metadata else frames
        enc = processor_inputs(self.processor, [render_prompt(self.processor, "")], [clip])
        device = next(model.parameters()).device
        enc = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in enc.items()}
        got: dict[str, torch.Tensor] = {}
        units = self._units()
        handles = []
        last_name = units[-1][0]
        for name, mod in units:
            def hook(_m, _inp, out, name=name):
                out = out[0] if isinstance(out, tuple) else getattr(out, "last_hidden_state", out)
                got[name] = out.detach().float().cpu()
                if name == last_name:
                    raise _Stop
            handles.append(mod.register_forward_hook(hook))
        was = model.training
        model.eval()
        try:
            model(**enc)
        except _Stop:
            pass
        finally:
            for h in handles:
                h.remove()
            model.train(was)
        missing = [n for n, _ in units if n not in got]
        if missing:
            raise TowerCacheError(f"family {self.family.name}: the forward pass never reached {missing}")
        return {k: v.numpy() for k, v in got.items()}


@contextlib.contextmanager
def replay(model: Any, outputs: list[dict[str, torch.Tensor]] | None) -> Iterator[None]:
    """Run a forward pass (or ``generate``) of ``model`` with its tower replaying ``outputs``: one dict per
    video, in the order the videos enter the model. Each call of a recorded layer takes the next videos'
    outputs (as many as its input's leading size covers); the tower's other layers pass their input through.
    Every output must be used (else the batch and the outputs do not match: an error)."""
    if not outputs:
        yield
        return
    model = unwrap(model)
    name = family_of(model).name
    tower_path, layers_path = TOWERS[name]
    tower = _get(model, tower_path)
    keys = sorted(outputs[0])
    queues = {k: [o[k] for o in outputs] for k in keys}
    patched: list[torch.nn.Module] = []

    def replayer(key: str, dtype: torch.dtype | None):
        def forward(x, *args, **kwargs):
            q, parts, n = queues[key], [], 0
            while n < x.shape[0]:
                if not q:
                    raise TowerCacheError(f"replay of {tower_path} {key}: the batch has more visual input "
                                          f"({x.shape[0]} rows) than the cached outputs cover ({n})")
                parts.append(q.pop(0))
                n += parts[-1].shape[0]
            if n != x.shape[0]:
                raise TowerCacheError(f"replay of {tower_path} {key}: cached outputs of {n} rows for an input "
                                      f"of {x.shape[0]} (another frame sampling or resolution?)")
            return torch.cat(parts).to(device=x.device, dtype=dtype or x.dtype)
        return forward

    def passthrough(x, *args, **kwargs):
        return x

    try:
        if layers_path is None:
            tower.forward = replayer(WHOLE, next(tower.parameters()).dtype)
            patched.append(tower)
        else:
            for i, layer in enumerate(_get(tower, layers_path)):
                layer.forward = replayer(f"layer_{i}", None) if f"layer_{i}" in queues else passthrough
                patched.append(layer)
        yield
        left = {k: len(q) for k, q in queues.items() if q}
        if left:
            raise TowerCacheError(f"replay of {tower_path}: cached outputs of {left} video(s) were not used: the "
                                  "batch and its cached outputs do not match")
    finally:
        for m in patched:
            del m.forward
