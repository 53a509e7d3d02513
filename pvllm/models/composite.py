"""Video-LLaVA with a swappable vision encoder: one HF ``PreTrainedModel`` that saves and loads whole.

``PVLLMVideoForConditionalGeneration`` is ``VideoLlavaForConditionalGeneration`` (same module tree:
``model.{video_tower, image_tower, multi_modal_projector, language_model}``, ``lm_head``; same forward,
loss and ``generate``) whose video tower is an encoder of ``pvllm.models.vision_encoders`` named in
``config.vision_encoder``. The frozen encoder's weights travel in the checkpoint, so
``from_pretrained`` restores exactly the trained model. Registered with transformers' Auto classes
(``model_type = "pvllm_video"``).

``pixel_values_videos`` are frames ``(B, T, 3, S, S)``; with the feature cache the encoder replays its
recorded outputs instead of running (``pvllm.models.tower_cache``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import AutoConfig, AutoModelForImageTextToText, VideoLlavaConfig
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.video_llava.modeling_video_llava import (
    VideoLlavaForConditionalGeneration,
    VideoLlavaModel,
    VideoLlavaPreTrainedModel,
)

from pvllm.models.vision_encoders import build_encoder, plain_spec

MODEL_TYPE = "pvllm_video"


@strict
class PVLLMVideoConfig(VideoLlavaConfig):
    model_type = MODEL_TYPE
    # {"name": "torchvision_mobilenet_v2" | "open_clip", ...encoder arguments}; see vision_encoders.py
    vision_encoder: dict | None = None
    # "layernorm": a LayerNorm on the encoder features before the MLP (InternVL's mlp1, Qwen2.5-VL's merger);
    # None: Video-LLaVA's plain MLP (directories written before the option existed)
    projector_norm: str | None = None


PROJECTOR_NORMS = (None, "layernorm")


class VideoProjector(nn.Module):
    """Video-LLaVA's projector (linear, GELU, linear); its input width is the encoder's.

    With ``norm="layernorm"`` the encoder features are normalized first. Encoders trained for classification
    (MobileNetV2: non-negative pooled feature maps, norms 30-60) otherwise give a fresh projector outputs ~40x
    the word embeddings' norm, nearly parallel for every video (cosine 0.98 between a cartoon and a street
    scene), and the language model learns to ignore them.
    """

    def __init__(self, in_dim: int, out_dim: int, act: str, bias: bool = True, norm: str | None = None):
        super().__init__()
        if norm not in PROJECTOR_NORMS:
            raise ValueError(f"projector_norm must be one of {PROJECTOR_NORMS}, got {norm!r}")
        self.norm = nn.LayerNorm(in_dim) if norm == "layernorm" else nn.Identity()
        self.linear_1 = nn.Linear(in_dim, out_dim, bias=bias)
        self.act = ACT2FN[act]
        self.linear_2 = nn.Linear(out_dim, out_dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(self.norm(x))))


class PVLLMVideoModel(VideoLlavaModel):
    config_class = PVLLMVideoConfig

    def __init__(self, config: PVLLMVideoConfig):
        VideoLlavaPreTrainedModel.__init__(self, config)  # not VideoLlavaModel's: no CLIP towers
        from transformers import AutoModel

        if not config.vision_encoder or "name" not in config.vision_encoder:
            raise ValueError("PVLLMVideoConfig.vision_encoder must name an encoder")
        self.video_tower = build_encoder(config.vision_encoder)
        self.image_tower = nn.Module()  # images are not used for video comments: no tower
        self.multi_modal_projector = VideoProjector(
            self.video_tower.out_dim, config.text_config.hidden_size, config.projector_hidden_act,
            config.multimodal_projector_bias, norm=config.projector_norm)
        self.vocab_size = config.text_config.vocab_size
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def _init_weights(self, module):
        if any(module is m for m in self.video_tower.modules()):
            return  # encoder weights come from their own checkpoint (or stay torch's init when random)
        super()._init_weights(module)

    def encode_video(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        """Encoder tokens ``(B*T, tokens_per_frame, width)`` from frames ``(B, T, 3, S, S)``."""
        enc = self.video_tower
        frames = pixel_values_videos.flatten(0, 1)
        with torch.set_grad_enabled(torch.is_grad_enabled() and any(p.requires_grad for p in enc.parameters())):
            return enc(frames)

    def get_video_features(self, pixel_values_videos: torch.Tensor, vision_feature_layer=None, **kwargs):
        feats = self.encode_video(pixel_values_videos)
        return BaseModelOutputWithPooling(last_hidden_state=feats, pooler_output=self.multi_modal_projector(feats))

    def get_image_features(self, *args, **kwargs):
        raise NotImplementedError("PV-LLM with a swapped vision encoder takes videos only")


class PVLLMVideoForConditionalGeneration(VideoLlavaForConditionalGeneration):
    config_class = PVLLMVideoConfig

    def __init__(self, config: PVLLMVideoConfig):
        VideoLlavaPreTrainedModel.__init__(self, config)
        self.model = PVLLMVideoModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()


AutoConfig.register(MODEL_TYPE, PVLLMVideoConfig, exist_ok=True)
AutoModelForImageTextToText.register(PVLLMVideoConfig, PVLLMVideoForConditionalGeneration, exist_ok=True)


def make_processor(tokenizer, encoder, chat_template: str | None = None):
    """A VideoLlavaProcessor whose resize/crop/normalization and token count follow ``encoder``."""
    from transformers import VideoLlavaImageProcessor, VideoLlavaProcessor
    from transformers.models.video_llava.video_processing_video_llava import VideoLlavaVideoProcessor

    s = encoder.image_size
    common = {"size": {"shortest_edge": s}, "crop_size": {"height": s, "width": s},
              "image_mean": encoder.image_mean, "image_std": encoder.image_std}
    return VideoLlavaProcessor(
        image_processor=VideoLlavaImageProcessor(**common), video_processor=VideoLlavaVideoProcessor(**common),
        tokenizer=tokenizer, vision_feature_select_strategy="full", chat_template=chat_template,
        **encoder.processor_kwargs(),
    )


def make_composite(text_config, tokenizer, vision_encoder: dict, num_frames: int, seed: int,
                   chat_template: str | None = None, projector_norm: str | None = "layernorm"):
    """A new model (encoder with its pretrained weights loaded, fresh projector, random LLM) + processor.

    Returns (model, processor, encoder description). The caller loads LLM weights if it has them.
    """
    spec = plain_spec(vision_encoder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = build_encoder(spec)  # tiny vision config below: VideoLlavaConfig needs one, unused
        config = PVLLMVideoConfig(
            vision_config={"model_type": "clip_vision_model", "hidden_size": encoder.out_dim,
                           "intermediate_size": 4, "num_hidden_layers": 1, "num_attention_heads": 1,
                           "image_size": encoder.image_size, "patch_size": encoder.image_size},
            text_config=text_config, vision_encoder=spec,
            image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
            video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
            vision_feature_select_strategy="full", image_seq_length=encoder.tokens_per_frame,
            video_seq_length=num_frames * encoder.tokens_per_frame, tie_word_embeddings=False,
            pad_token_id=tokenizer.pad_token_id, projector_norm=projector_norm,
        )
        model = PVLLMVideoForConditionalGeneration(config)
    described = model.model.video_tower.load_pretrained()
    processor = make_processor(tokenizer, model.model.video_tower, chat_template)
    return model, processor, described


def check_encoder_matches(source: str, vision_encoder: dict | None) -> None:
    """Raise when a local model directory was built with another encoder than the config names."""
    cfg = Path(source) / "config.json"
    if not vision_encoder or "name" not in vision_encoder or not cfg.is_file():
        return
    want = plain_spec(vision_encoder)
    have = json.loads(cfg.read_text()).get("vision_encoder") or {"name": "clip"}
    if want.get("name") == "clip" and have.get("name") == "clip":
        return  # the family's own tower: sized by the model config itself
    if have != want:
        raise ValueError(f"{source} was built with vision encoder {have}, but the config asks for {want}; "
                         "set model.pretrained to another directory (or delete this one to rebuild it)")
