"""``debug=smoke`` (conf/debug/smoke.yaml): run any experiment's command on a CPU in seconds.

Appended to the command in an experiment file's header, the preset keeps the experiment's settings and code
path and swaps only what a CPU cannot run, printing each swap (``debug=smoke: key: old -> new (why)``):
- weights: tiny RANDOM weights of the same family, built on the fly and cached under ``paths.cache_dir``
  (``FAMILIES[...].tiny``; Video-ChatGPT's layout and the text-only LM from ``pvllm.models.tiny``)
  in place of hub ids, 7B paths or trained runs;
- hardware: ``trainer.accelerator=cpu``, one device, one node; Lightning's ``DeepSpeedStrategy`` needs CUDA,
  so it becomes ``auto`` and the weights stay fp32 (DeepSpeed's bf16 keeps fp32 master weights; here
  ``trainer.precision`` still autocasts);
- length: 2 optimizer steps (``trainer.max_steps``; validation capped at 2 batches), or 2 samples
  (``max_samples``) for an evaluation;
- data: the bundled sample (``data/sample``), no loader worker processes; W&B offline; outputs under
  ``<outputs>/smoke`` (the YAML sets ``paths.output_root``).
API generators and raters are kept (point their ``base_url`` at a server: the tests use tests/fakes/).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

STEPS = 2  # optimizer steps of a smoke training run
SAMPLES = 2  # samples of a smoke evaluation
_DEEPSPEED = "lightning.pytorch.strategies.DeepSpeedStrategy"
_VIDEO_LLAVA_MAKER = "pvllm.models.tiny.make_tiny_video_llava"
# model builders whose weights are real (not tiny) but whose family is known without loading anything
_FAMILY_OF_CREATE = {"pvllm.models.smollm2.make_pvllm_small": "video_llava"}  # Video-LLaVA classes


class SmokeError(ValueError):
    pass


def apply_debug(cfg: DictConfig, entry: str) -> list[str]:
    """Apply ``debug=smoke`` to a composed train/evaluate config in place (no-op unless ``cfg.smoke``);
    returns and prints the swaps."""
    if not cfg.get("smoke"):
        return []
    changes: list[str] = []
    with open_dict(cfg):
        _set(cfg, "data.root", str(Path(cfg.paths.root_dir) / "data" / "sample"), "the bundled sample", changes)
        _set(cfg, "data.num_workers", 0, "one process", changes)
        if OmegaConf.select(cfg, "logger.wandb") is not None:
            _set(cfg, "logger.wandb.offline", True, "W&B offline", changes)
        if entry == "train":
            _train(cfg, changes)
        else:
            _evaluate(cfg, changes)
    for line in changes:
        print(f"debug=smoke: {line}", flush=True)
    return changes


def _set(cfg: DictConfig, key: str, value: Any, why: str, changes: list[str]) -> None:
    old = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
    if isinstance(old, DictConfig):
        old = OmegaConf.to_container(old, resolve=False)
    if old == value:
        return
    OmegaConf.update(cfg, key, value, merge=False, force_add=True)
    changes.append(f"{key}: {old!r} -> {value!r} ({why})")


def _train(cfg: DictConfig, changes: list[str]) -> None:
    t = cfg.trainer
    _set(cfg, "trainer.accelerator", "cpu", "CPU run", changes)
    _set(cfg, "trainer.devices", 1, "one CPU process", changes)
    _set(cfg, "trainer.num_nodes", 1, "one node", changes)
    _set(cfg, "trainer.max_steps", STEPS, f"{STEPS} optimizer steps", changes)
    _set(cfg, "trainer.limit_val_batches", STEPS, f"{STEPS} validation batches", changes)
    if t.get("max_epochs") is not None and 0 <= t.max_epochs < 1:
        _set(cfg, "trainer.max_epochs", 1, "at least one epoch", changes)
    strategy = cfg.get("strategy")
    if strategy is not None and _is_deepspeed(strategy.get("_target_")):
        zero = OmegaConf.select(strategy, "config.zero_optimization", default={}) or {}
        offload = [k for k in ("offload_optimizer", "offload_param") if zero.get(k)]
        what = f"DeepSpeedStrategy (ZeRO stage {zero.get('stage')}{', ' + ' + '.join(offload) if offload else ''})"
        cfg.strategy = OmegaConf.create({"_target_": "builtins.str", "_args_": ["auto"]})
        changes.append(f"strategy: {what} -> auto (Lightning's DeepSpeedStrategy needs CUDA)")
        if cfg.model.get("dtype") in ("bfloat16", "float16"):
            _set(cfg, "model.dtype", "float32", "fp32 weights: DeepSpeed's bf16 keeps fp32 master weights; "
                 f"trainer.precision={t.get('precision')} still autocasts", changes)
    _model(cfg, changes)


def _is_deepspeed(target: str | None) -> bool:
    """Lightning's DeepSpeedStrategy or a subclass of it (pvllm's AtomicDeepSpeedStrategy)."""
    if not target or "." not in str(target):
        return False
    if target == _DEEPSPEED:
        return True
    from hydra.utils import get_class
    from lightning.pytorch.strategies import DeepSpeedStrategy

    try:
        return issubclass(get_class(str(target)), DeepSpeedStrategy)
    except (ImportError, ValueError, TypeError):  # not a class: left for instantiate to report
        return False


def _family_of(name: str | None, hint: str, where: str) -> str:
    from pvllm.models.families import FAMILIES

    if name:
        return name
    for fam in FAMILIES.names():
        if hint in FAMILIES.get(fam).checkpoints:
            return fam
    cfg_file = Path(str(hint)).expanduser() / "config.json"
    if cfg_file.is_file():
        import json

        from pvllm.models.families import family_for_model_type

        return family_for_model_type(json.loads(cfg_file.read_text())["model_type"]).name
    raise SmokeError(f"debug=smoke: cannot tell the model family of {where}={hint!r} (not a known hub id or a "
                     f"local HF directory): set {where.rsplit('.', 1)[0]}.family")


def _tiny_dir(cfg: DictConfig, family: str, vision_encoder: dict | None = None) -> tuple[str, dict]:
    """The cached tiny directory of ``family`` and the ``create`` node that writes it."""
    from pvllm.models.families import FAMILIES

    maker = FAMILIES.get(family).tiny
    create: dict[str, Any] = {"_target_": maker, "_partial_": True, "seed": 0}
    name = f"smoke-{family}"
    if maker == _VIDEO_LLAVA_MAKER:  # the encoder (e.g. PV-LLM-small's MobileNetV2) and frame count are kept
        ve = dict(vision_encoder or {"name": "clip"})
        create.update(vision_encoder=ve, num_frames=int(cfg.data.num_frames))
        name += f"-{ve.get('name', 'clip')}-f{int(cfg.data.num_frames)}"
    return str(Path(cfg.paths.cache_dir) / "models" / name), create


def _model(cfg: DictConfig, changes: list[str]) -> None:
    from pvllm.models.families import FAMILIES

    m = cfg.model
    create = (m.get("create") or {}).get("_target_")
    if create in {FAMILIES.get(n).tiny for n in FAMILIES.names()}:
        return  # already tiny random weights, built on the fly
    family = m.get("family") or _FAMILY_OF_CREATE.get(create) or _family_of(None, str(m.pretrained), "model.pretrained")
    ve = OmegaConf.to_container(m.vision_encoder, resolve=True) if m.get("vision_encoder") else None
    path, create_node = _tiny_dir(cfg, family, ve if family == "video_llava" else None)
    changes.append(f"model.pretrained: {m.pretrained!r} -> {path!r} (tiny random {family}, built once by "
                   f"{create_node['_target_']})")
    m.pretrained = path
    m.create = OmegaConf.create(create_node)


def _evaluate(cfg: DictConfig, changes: list[str]) -> None:
    ms = cfg.get("max_samples")
    if ms is None or ms > SAMPLES:
        _set(cfg, "max_samples", SAMPLES, f"{SAMPLES} samples", changes)
    g = cfg.get("generator")
    if g is None or cfg.get("stage") == "report":
        return
    cls = str(g.get("_target_", "")).rsplit(".", 1)[-1]
    if cls in ("PVLLMGenerator", "VideoLlavaGenerator", "HFVideoGenerator"):
        family = "video_llava" if cls != "HFVideoGenerator" else _family_of(
            g.get("family"), str(g.pretrained), "generator.pretrained")
        path, create = _tiny_dir(cfg, family)
        _build(path, create)
        _set(cfg, "generator.pretrained", path, f"tiny random {family}", changes)
        _set(cfg, "generator.checkpoint", None, "weights of the tiny model only", changes)
    elif cls == "VideoChatGPTGenerator":
        from pvllm.models.tiny import make_tiny_video_chatgpt

        paths = make_tiny_video_chatgpt(Path(cfg.paths.cache_dir) / "models" / "smoke-video_chatgpt")
        for key, p in paths.items():
            _set(cfg, f"generator.{key}", str(p), "tiny random Video-ChatGPT layout", changes)
    elif cls == "TextOnlyGenerator":
        path = str(Path(cfg.paths.cache_dir) / "models" / "smoke-causal_lm")
        _build(path, {"_target_": "pvllm.models.tiny.make_tiny_causal_lm", "_partial_": True, "seed": 0})
        _set(cfg, "generator.model_path", path, "tiny random LLaMA chat LM", changes)
        _set(cfg, "generator.gguf_file", None, "a plain HF directory", changes)
    else:  # API generators: the request path is the code path; the server is the caller's (fakes in tests)
        changes.append(f"generator: {g._target_} kept (a remote API; base_url={g.get('base_url')!r})")


def _build(path: str, create: dict) -> str:
    """Write the tiny directory ``path`` once (atomically, as pvllm.models.builder does for model.create)."""
    import hydra

    from pvllm.models.builder import resolve_pretrained

    return resolve_pretrained(path, hydra.utils.instantiate(create))
