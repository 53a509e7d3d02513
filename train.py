"""Train PV-LLM (paper §3.2): compose -> validate -> seed -> build -> fit -> save.

    python train.py                                   # tiny model on the bundled sample (CPU)
    python train.py experiment=pvllm_7b_8xa100        # the paper's run (8×A100, DeepSpeed ZeRO-2)
    python train.py -m history.k=1,5 trainer.max_steps=2   # a sweep (add hydra/launcher=submitit_slurm)
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

os.environ.setdefault("PVLLM_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
import lightning as L  # noqa: E402
import torch  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from lightning.pytorch.strategies import DeepSpeedStrategy  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from pvllm.clients.credentials import MissingCredentialsError  # noqa: E402
from pvllm.config import ConfigError, validate_train_config  # noqa: E402
from pvllm.data.dataset import DatasetFormatError  # noqa: E402
from pvllm.debug import apply_debug  # noqa: E402
from pvllm.distributed.checkpoint_io import AtomicCheckpointIO  # noqa: E402
from pvllm.identity import IdentityConflict  # noqa: E402
from pvllm.models.builder import PVLLM, build_under_zero3, format_parameter_table  # noqa: E402
from pvllm.models.families import FAMILIES  # noqa: E402
from pvllm.models.module import PVLLMModule  # noqa: E402
from pvllm.models.tower_cache import TowerFeatures  # noqa: E402
from pvllm.models.transform import ModelTransform  # noqa: E402
from pvllm.utils.atomic import WriteFailed, atomic_dir  # noqa: E402
from pvllm.utils.cli import clear_errors  # noqa: E402
from pvllm.utils.jsonl import JsonlError  # noqa: E402
from pvllm.utils.lightning import RankedLogger, loggable_config  # noqa: E402
from pvllm.utils.registry import UnknownNameError  # noqa: E402
from pvllm.utils.secrets import install_redaction, protect_argv, register_config_secrets  # noqa: E402
from pvllm.utils.slurm import slurm_run_id  # noqa: E402

log = RankedLogger(__name__)
# errors whose message tells the user what to fix: printed alone, without a traceback (HYDRA_FULL_ERROR=1 shows it)
CLEAR_ERRORS = (ConfigError, MissingCredentialsError, DatasetFormatError, IdentityConflict, JsonlError,
                UnknownNameError, WriteFailed)


def instantiate_loggers(cfg: DictConfig) -> list:
    loggers = []
    for name, lcfg in (cfg.get("logger") or {}).items():
        if lcfg is None:
            continue
        if name == "wandb" and os.environ.get("WANDB_MODE", "").strip().lower() == "disabled":
            log.info("W&B: not logged (WANDB_MODE=disabled)")  # Lightning's offline flag would override it
            continue
        kwargs = {}
        if name == "wandb":
            hc = HydraConfig.get()
            # one W&B group per multirun sweep; the run named after its directory
            if lcfg.get("group") is None and hc.mode == RunMode.MULTIRUN:
                kwargs["group"] = Path(hc.sweep.dir).name
            if lcfg.get("name") is None:
                kwargs["name"] = Path(hc.runtime.output_dir).name if hc.mode == RunMode.RUN else (
                    f"{Path(hc.sweep.dir).name}/{hc.job.num}")
            run_id = slurm_run_id()
            if lcfg.get("id") is None and run_id:  # a requeued SLURM job continues the same W&B run
                kwargs.update(id=run_id, resume="allow")
        loggers.append(hydra.utils.instantiate(lcfg, **kwargs))
    return loggers


def train(cfg: DictConfig) -> float | None:
    install_redaction()  # no secret value in any log line, stream or traceback (also in a submitit job)
    apply_debug(cfg, "train")  # debug=smoke: swaps what a CPU cannot run (prints each swap)
    register_config_secrets(cfg)  # the keys the config names (api_key_env, URL credentials), by value
    validate_train_config(cfg, families=FAMILIES.names())  # before any weights are loaded
    L.seed_everything(cfg.seed, workers=True)

    strategy = hydra.utils.instantiate(cfg.strategy)
    datamodule = hydra.utils.instantiate(cfg.data)
    if getattr(strategy, "zero_stage_3", False):  # built in configure_model: ZeRO-3 shards it as it loads
        processor, source = hydra.utils.instantiate(cfg.model, _target_="pvllm.models.builder.load_processor")
        build = partial(build_under_zero3, partial(hydra.utils.instantiate, cfg.model), strategy.config)
        bundle = PVLLM(model=None, processor=processor, source=source, notes=["built in configure_model (ZeRO-3)"])
        if cfg.data.get("feature_cache"):
            raise ValueError("data.feature_cache is keyed by the tower's weights, which ZeRO-3 builds sharded "
                             "in configure_model: unset data.feature_cache or use strategy=deepspeed_zero2")
        datamodule.attach_transform(ModelTransform(processor, cfg.data.get("max_reply_tokens", 64)))
        module = PVLLMModule(None, optim=cfg.optim, scheduler=cfg.scheduler, build=build, loss=cfg.get("loss"))
    else:
        bundle = hydra.utils.instantiate(cfg.model)  # pvllm.models.builder.build_pvllm
        log.info("model %s\n%s", bundle.source, format_parameter_table(bundle.parameter_table))
        # the family's processor and chat format (+ packing's text-token counter), handed to the data layer;
        # + the tower transform the feature cache is opened with, if configured
        tower = (TowerFeatures(bundle.model, bundle.processor, cfg.data.num_frames, cfg.data.get("frame_size"))
                 if cfg.data.get("feature_cache") else None)
        datamodule.attach_transform(ModelTransform(bundle.processor, cfg.data.get("max_reply_tokens", 64)),
                                    tower=tower)
        module = PVLLMModule(bundle.model, optim=cfg.optim, scheduler=cfg.scheduler, loss=cfg.get("loss"))
    for note in bundle.notes:
        log.info("note: %s", note)

    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    loggers = instantiate_loggers(cfg)
    # a killed or disk-full save never leaves a torn last.ckpt (DeepSpeed: AtomicDeepSpeedStrategy's directory)
    plugins = [] if isinstance(strategy, DeepSpeedStrategy) else [AtomicCheckpointIO()]
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers, strategy=strategy,
                                      plugins=plugins)
    for lg in loggers:
        lg.log_hyperparams(loggable_config(cfg) | {"parameter_table": bundle.parameter_table,
                                                   "model_notes": bundle.notes})

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    skipped = datamodule.gather_skipped()  # every rank: summed over ranks (the workers' are in the batches)

    out = Path(cfg.paths.output_dir)
    zero3 = getattr(trainer.strategy, "zero_stage_3", False)
    if cfg.get("save_hf_model") and zero3:  # rank 0 holds only a shard of each weight under ZeRO-3
        log.info("ZeRO-3: write the HF directory with `python -m pvllm.distributed.consolidate "
                 "%s/checkpoints/last.ckpt %s/hf_model --base %s`", out, out, bundle.source)
    elif cfg.get("save_hf_model") and trainer.is_global_zero:
        model = module.model.merge_and_unload() if hasattr(module.model, "merge_and_unload") else module.model
        if cfg.model.get("dtype", "float32") != "float32":  # fp32 masters of a bf16-loaded model: save as loaded
            model = model.to(getattr(torch, cfg.model.dtype))
        with atomic_dir(out / "hf_model", kill_name="hf_export") as tmp:  # complete, or the previous one
            model.save_pretrained(tmp)
            bundle.processor.save_pretrained(tmp)
        log.info("saved HF model to %s", out / "hf_model")
        link = Path(cfg.paths.output_root) / cfg.task_name / "latest"  # what conf/generator/pvllm.yaml reads
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".latest.{os.getpid()}")
        tmp.symlink_to(out.resolve(), target_is_directory=True)
        os.replace(tmp, link)
    if skipped:
        log.warning("skipped %d sample(s) of unreadable videos (zero loss weight, all ranks): %s",
                    sum(skipped.values()), dict(skipped))
    if datamodule.excluded:
        log.warning("left out %s sample(s) whose video is listed in data.exclude_videos=%s",
                    dict(datamodule.excluded), cfg.data.get("exclude_videos"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    ckpt_cb = getattr(trainer, "checkpoint_callback", None)
    best = float(ckpt_cb.best_model_score) if ckpt_cb is not None and ckpt_cb.best_model_score is not None else None
    if best is None and "val/loss" in metrics:  # no best-checkpoint callback: the last validation
        best = metrics["val/loss"]
    if best is None and HydraConfig.get().runtime.choices.get("hparams_search"):
        # a search trial returns val/loss: fit stopped (max_steps) before any validation, so validate once
        best = float(trainer.validate(module, datamodule=datamodule, verbose=False)[0]["val/loss"])
        log.info("hparams_search: no validation during fit; val/loss after it: %s", best)
    log.info("done: global_step=%d best val/loss=%s metrics=%s skipped_videos=%d excluded_samples=%d",
             trainer.global_step, best, metrics, sum(skipped.values()), sum(datamodule.excluded.values()))
    return best


@hydra.main(version_base=None, config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        with clear_errors(*CLEAR_ERRORS):
            return train(cfg)
    finally:  # a crashed job in a multirun must not leave a W&B run open for the next one
        import wandb

        if wandb.run is not None:
            wandb.finish()


if __name__ == "__main__":
    import sys

    from pvllm.config import check_group_overrides

    install_redaction()  # before Hydra binds its log handlers to sys.stdout/sys.stderr
    sys.argv[1:] = protect_argv(sys.argv[1:])  # a key inside a URL never reaches Hydra's saved configs
    check_group_overrides(sys.argv[1:], Path(__file__).resolve().parent / "conf")
    main()
