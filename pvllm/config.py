"""Validation of a composed config before any heavy work (all errors reported at once)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pvllm.prompt import HISTORY_MODES, HISTORY_SELECTIONS, TASKS, TRAIN_VIDEO_MODES, VIDEO_MODES


class ConfigError(ValueError):
    pass


def check_group_overrides(argv: list[str], conf_dir: str | Path) -> None:
    """Exit with a clear message on ``GROUP=null`` (Hydra cannot select "no option" that way; its own error
    names neither the group nor the fix): ``~GROUP`` drops a group, ``rater=none`` is the no-judge option."""
    groups = {p.name for p in Path(conf_dir).iterdir() if p.is_dir()}
    for arg in argv:
        key, _, value = arg.partition("=")
        if key.lstrip("+~") in groups and value.strip().lower() in ("null", "none", "~") and not (
                Path(conf_dir) / key.lstrip("+~") / f"{value.strip()}.yaml").is_file():
            g = key.lstrip("+~")
            raise SystemExit(f"error: `{arg}`: a config group cannot be set to null on the command line; "
                             f"drop it with `~{g}`" + (" or choose `rater=none`" if g == "rater" else ""))


def _get(cfg: DictConfig, key: str):
    return OmegaConf.select(cfg, key, default=None)


# Where a `_global_` file (conf/experiment/, conf/debug/) may add keys that the base config lacks: the places a
# group is meant to be extended (a new callback or logger, a report node, a LoRA or text-instruction spec, a
# sweep). Anywhere else a key the base config lacks is a typo that Hydra would merge silently.
EXTENSIBLE = (
    "callbacks",                # more Lightning callbacks (each with _target_)
    "logger",                   # more loggers (each with _target_)
    "report",                   # evaluate.py's report node (null in conf/evaluate.yaml)
    "data.text_instructions",   # Table 6's text conversations (null in conf/data/)
    "model.lora",               # LoRA spec (null in conf/model/)
    "generator.sampling",       # generate() kwargs ({} for API generators: the model's defaults)
    "hydra.sweeper.params",     # the sweep of a multirun experiment
)
_GLOBAL_GROUPS = ("experiment", "hparams_search", "debug")  # groups whose files are `# @package _global_`


# The old spellings of `video.mode` (what video a sample is shown): now references to it, never set directly.
VIDEO_REFS = ("data.video", "generator.video")
_ABSENT = object()


def _hydra_node(cfg: DictConfig):
    if "hydra" in cfg:
        return cfg.hydra
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def _global_files(hc, group: str, name: str) -> list[tuple[Path, dict]]:
    """The YAML file of ``group/name`` and the files of its own group it includes (table6 -> the 8xA100 file),
    each with the values it sets (its defaults list removed), includes first."""
    dirs = [Path(s.path) for s in hc.runtime.config_sources if s.schema == "file"]
    path = next((d / group / f"{name}.yaml" for d in dirs if (d / group / f"{name}.yaml").is_file()), None)
    if path is None:
        return []
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
    out = []
    for entry in raw.pop("defaults", None) or []:
        if isinstance(entry, str) and entry != "_self_":  # another file of the same group (relative name)
            out += _global_files(hc, group, entry.removeprefix(f"/{group}/"))
    return out + [(path, raw)]


def _base_config(hc, config_name: str) -> DictConfig:
    """The config with the same group choices but no experiment/debug file: what those files may change."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.types import RunMode

    main = next(s for s in hc.runtime.config_sources if s.provider == "main")
    csp = create_config_search_path(main.path if main.schema == "file" else f"{main.schema}://{main.path}")
    # the sweeper chosen (an hparams_search file picks Optuna's): its settings are the base of what they set
    choices = [f"{g}={c}" for g, c in hc.runtime.choices.items()
               if c is not None and g not in _GLOBAL_GROUPS and (g == "hydra/sweeper" or not g.startswith("hydra/"))]
    if hc.searchpath:  # extra config dirs (hydra.searchpath=[...]) hold group options too
        choices.append(f"hydra.searchpath=[{','.join(hc.searchpath)}]")
    loader = ConfigLoaderImpl(config_search_path=csp)
    return loader.load_configuration(config_name, choices, run_mode=RunMode.RUN)


def _is_ref(v) -> bool:
    """A plain reference to another config key, e.g. ``${history.train_k_min}`` (not a resolver call)."""
    return isinstance(v, str) and v.startswith("${") and v.endswith("}") and v.count("${") == 1 and ":" not in v


def _check_keys(path: Path, own: dict, base, where: str, errors: list[str], rel: str) -> None:
    for k, v in own.items():
        key = f"{where}.{k}" if where else str(k)
        if any(key == e or key.startswith(e + ".") for e in EXTENSIBLE) or key in VIDEO_REFS:
            continue  # VIDEO_REFS: reported by _check_video, with the new spelling
        if not isinstance(base, DictConfig) or k not in base:
            errors.append(f"{key}: set in {rel}, but the base config has no such key (a typo? keys can be added "
                          f"only under {', '.join(EXTENSIBLE)}: pvllm.config.EXTENSIBLE)")
            continue
        node = base._get_node(k)
        raw = node._value() if not isinstance(node, DictConfig) else None
        if isinstance(node, DictConfig) and not node._is_none() and isinstance(v, dict):
            _check_keys(path, v, node, key, errors, rel)
        elif isinstance(v, dict) and not isinstance(node, DictConfig):
            errors.append(f"{key}: set to a mapping in {rel}, but the base config has a value there ({raw!r})")
        elif _is_ref(raw) and not (isinstance(v, str) and "${" in v):
            ref = raw[2:-1]
            errors.append(f"{key}: {rel} sets it to {v!r}, shadowing `{raw}`: a `{ref}=...` override would be "
                          f"silently ignored; set {ref} instead")


def check_global_files(cfg: DictConfig, errors: list[str]) -> None:
    """Keys set inside an experiment (or debug) file must exist in the base config, or be under EXTENSIBLE, and
    may not replace a reference to another key with a literal. Hydra's struct mode catches a command-line
    typo, but a `_global_` file merges freely: `history.train_k_mx: 7` would train with the typo ignored."""
    hc = _hydra_node(cfg)
    if hc is None or not hc.runtime.get("config_sources"):
        return
    files = [f for g in _GLOBAL_GROUPS if hc.runtime.choices.get(g)
             for f in _global_files(hc, g, hc.runtime.choices[g])]
    if not files:
        return
    base = _base_config(hc, hc.job.config_name)
    root = Path(next(s.path for s in hc.runtime.config_sources if s.provider == "main")).parent
    for path, own in files:
        rel = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
        _check_keys(path, own, base, "", errors, rel)


def _setting_files(cfg: DictConfig, group: str, name: str) -> list[str]:
    """The experiment/debug files (repo-relative) that set ``group.name``."""
    hc = _hydra_node(cfg)
    if hc is None or not hc.runtime.get("config_sources"):
        return []
    root = Path(next(s.path for s in hc.runtime.config_sources if s.provider == "main")).parent
    return [str(p.relative_to(root)) if p.is_relative_to(root) else str(p)
            for g in _GLOBAL_GROUPS if hc.runtime.choices.get(g)
            for p, own in _global_files(hc, g, hc.runtime.choices[g]) if name in (own.get(group) or {})]


def _check_targets(cfg: DictConfig, errors: list[str]) -> None:
    """Every callbacks/logger entry is instantiated: one without `_target_` fails here, not at step 0."""
    for group in ("callbacks", "logger"):
        for name, entry in (_get(cfg, group) or {}).items():
            if entry is None:
                continue
            if not isinstance(entry, DictConfig) or "_target_" not in entry:
                known = ", ".join(k for k, v in cfg[group].items() if isinstance(v, DictConfig) and "_target_" in v)
                where = _setting_files(cfg, group, name)
                errors.append(f"{group}.{name}: no `_target_`{' (set in ' + ', '.join(where) + ')' if where else ''}: "
                              f"every {group} entry is instantiated; a setting of an existing one goes under its "
                              f"name: {known or 'none defined'}")


def _raw(cfg: DictConfig, key: str):
    """The value of ``key`` as written (an interpolation unresolved); _ABSENT when there is no such key."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=None)
    if not isinstance(node, DictConfig) or leaf not in node:
        return _ABSENT
    return node._get_node(leaf)._value()


def _check_video(cfg: DictConfig, errors: list[str], modes: tuple[str, ...]) -> None:
    """``video.mode`` is the one key for what video a sample is shown; ``data.video`` (a bool before) and
    ``generator.video`` only refer to it. Setting one of them is the old spelling: named with the new one."""
    mode = _get(cfg, "video.mode")
    if mode not in modes:
        why = " (mismatched is an evaluation ablation)" if mode == "mismatched" else ""
        errors.append(f"video.mode: {' | '.join(modes)}, got {mode!r}{why}")
    for key in VIDEO_REFS:
        raw = _raw(cfg, key)
        if raw is _ABSENT or raw == "${video.mode}":
            continue
        group, _, name = key.partition(".")
        where = _setting_files(cfg, group, name)
        new = ("none" if raw in (False, "false", "none", None) else "own" if raw in (True, "true") else raw)
        errors.append(f"{key}={str(raw).lower() if isinstance(raw, bool) else raw}"
                      f"{' (set in ' + ', '.join(where) + ')' if where else ''}: the old spelling of what video a "
                      f"sample is shown; set video.mode={new} instead (one key for train.py and evaluate.py: "
                      f"{' | '.join(VIDEO_MODES)})")


def _common(cfg: DictConfig, errors: list[str]) -> None:
    check_global_files(cfg, errors)
    _check_targets(cfg, errors)
    root = _get(cfg, "data.root")
    if root is None or not Path(str(root)).is_dir():
        errors.append(f"data.root: no such directory {root!r} (build one with `python -m pvllm.data.build`)")
    else:
        for f in ("videos.jsonl", "comments.jsonl", "users.jsonl"):
            if not (Path(str(root)) / f).is_file():
                errors.append(f"data.root: {root} has no {f}")
    mode, k = _get(cfg, "history.mode"), _get(cfg, "history.k")
    if mode not in HISTORY_MODES:
        errors.append(f"history.mode: {mode!r} is not one of {', '.join(HISTORY_MODES)}")
    sel = _get(cfg, "history.selection")
    if sel is not None and sel not in HISTORY_SELECTIONS:
        errors.append(f"history.selection: {sel!r} is not one of {', '.join(HISTORY_SELECTIONS)}")
    if not isinstance(k, int) or not 0 <= k <= 15:
        errors.append(f"history.k: must be an integer in [0, 15] (paper), got {k!r}")
    fc = _get(cfg, "data.feature_cache")
    if fc and not (Path(str(fc)) / "store.json").is_file():
        errors.append(f"data.feature_cache: {fc} is not a cache store (build it with "
                      "`python -m pvllm.cache_features --model MODEL --data DATA --out DIR`)")
    nf = _get(cfg, "data.num_frames")
    if not isinstance(nf, int) or nf < 1:
        errors.append(f"data.num_frames: must be a positive integer, got {nf!r}")


def validate_train_config(cfg: DictConfig, families: Sequence[str] | None = None) -> None:
    """``families``: the model families known (``pvllm.models.families.FAMILIES.names()``, handed in by
    train.py: this module sits below the models and imports none); None leaves ``model.family`` to the builder."""
    errors: list[str] = []
    _common(cfg, errors)
    kmin, kmax = _get(cfg, "history.train_k_min"), _get(cfg, "history.train_k_max")
    if not (isinstance(kmin, int) and isinstance(kmax, int) and 0 <= kmin <= kmax <= 15):
        errors.append(f"history.train_k_min/max: need 0 <= min <= max <= 15, got {kmin}, {kmax}")
    if not _get(cfg, "model.pretrained"):
        errors.append("model.pretrained: an HF directory or hub id is required")
    family = _get(cfg, "model.family")
    if family is not None and families is not None and family not in families:
        errors.append(f"model.family: unknown {family!r}; valid: {', '.join(families)}")
    for key in ("data.fps", "data.max_frames", "data.max_visual_tokens"):
        v = _get(cfg, key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0):
            errors.append(f"{key}: must be null or > 0, got {v!r}")
    lr = _get(cfg, "optim.lr")
    if not isinstance(lr, (int, float)) or lr <= 0:
        errors.append(f"optim.lr: must be > 0, got {lr!r}")
    task = _get(cfg, "data.task")
    if task is not None and task not in TASKS:
        errors.append(f"data.task: {' | '.join(TASKS)}, got {task!r}")
    _check_video(cfg, errors, TRAIN_VIDEO_MODES)
    if task == "title" and _get(cfg, "video.mode") == "none":
        errors.append("data.task=title aligns the projector to the video: it needs video.mode=own")
    plr = _get(cfg, "optim.projector_lr")
    if plr is not None and (isinstance(plr, bool) or not isinstance(plr, (int, float)) or plr <= 0):
        errors.append(f"optim.projector_lr: must be null or > 0, got {plr!r}")
    if plr is not None and _get(cfg, "model.projector.trainable") is False:
        errors.append("optim.projector_lr: set, but model.projector.trainable is false")
    if _get(cfg, "scheduler.name") not in ("cosine", "constant"):
        errors.append(f"scheduler.name: cosine | constant, got {_get(cfg, 'scheduler.name')!r}")
    ckpt = _get(cfg, "ckpt_path")
    if ckpt and not Path(str(ckpt)).exists():  # a file, or a directory (DeepSpeed checkpoints)
        errors.append(f"ckpt_path: no such checkpoint {ckpt!r}")
    if errors:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(errors))


def validate_eval_config(cfg: DictConfig) -> None:
    errors: list[str] = []
    _common(cfg, errors)
    if _get(cfg, "split") not in ("train", "val", "test"):
        errors.append(f"split: train | val | test, got {_get(cfg, 'split')!r}")
    shard, n = _get(cfg, "shard"), _get(cfg, "num_shards")
    if not (isinstance(n, int) and n >= 1 and isinstance(shard, int) and 0 <= shard < n):
        errors.append(f"shard/num_shards: need 0 <= shard < num_shards, got {shard}/{n}")
    stage = _get(cfg, "stage")
    if stage not in ("all", "generate", "score", "rank", "report"):
        errors.append(f"stage: all | generate | score | rank | report, got {stage!r}")
    ranking_on = stage == "rank" or (stage == "all" and _get(cfg, "ranking.enabled"))
    if ranking_on and _get(cfg, "num_shards") != 1:
        errors.append("ranking: runs unsharded (num_shards=1); rank with stage=rank after the shards")
    nc = _get(cfg, "ranking.n_candidates")
    if ranking_on and (not isinstance(nc, int) or nc < 2):
        errors.append(f"ranking.n_candidates: must be an integer >= 2, got {nc!r}")
    score = _get(cfg, "ranking.score")
    if ranking_on and score not in ("mean", "sum", "pmi"):
        errors.append(f"ranking.score: mean | sum | pmi, got {score!r}")
    thr = _get(cfg, "diversity.copy_threshold")
    if thr is not None and not (isinstance(thr, (int, float)) and 0 < thr <= 1):
        errors.append(f"diversity.copy_threshold: must be in (0, 1], got {thr!r}")
    if stage == "report" and _get(cfg, "report") is None:
        errors.append("stage=report needs a `report` node (e.g. experiment=table4)")
    spu = _get(cfg, "samples_per_user")
    if spu != "all" and (not isinstance(spu, int) or spu < 1):
        errors.append(f"samples_per_user: must be >= 1 or all (every comment a target), got {spu!r}")
    _check_video(cfg, errors, VIDEO_MODES)
    vmode = _get(cfg, "video.mode")
    target = _get(cfg, "generator._target_")
    if vmode == "none" and target and stage in ("all", "generate"):
        from hydra.utils import get_class

        if not getattr(get_class(target), "accepts_no_video", False):
            errors.append(f"video.mode=none: generator {target} needs a video (text-only runs: pvllm, "
                          "video_llava, text_only)")
    if _get(cfg, "generator") is None and stage in ("all", "generate", "rank"):
        errors.append("generator: required unless stage=score or stage=report")
    if errors:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(errors))
