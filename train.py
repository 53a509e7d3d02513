"""Train PV-LLM (paper §3.2): compose -> validate -> seed -> build -> fit -> save.

    python train.py                                   # tiny model on the bundled sample (CPU)
    python train.py experiment=pvllm_7b_8xa100        # the paper's run (8×A100, DeepSpeed ZeRO-2)
    python train.py -m history.k=1,5 trainer.max_steps=2   # a sweep (add hydra/launcher=submitit_slurm)
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("PVLLM_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
import lightning as L  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from pvllm.config import validate_train_config  # noqa: E402
from pvllm.models.builder import format_parameter_table  # noqa: E402
from pvllm.models.module import PVLLMModule  # noqa: E402
from pvllm.utils.lightning import RankedLogger, loggable_config  # noqa: E402
from pvllm.utils.secrets import install_log_redaction  # noqa: E402

log = RankedLogger(__name__)


def instantiate_loggers(cfg: DictConfig) -> list:
    loggers = []
    for name, lcfg in (cfg.get("logger") or {}).items():
        if lcfg is None:
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
        loggers.append(hydra.utils.instantiate(lcfg, **kwargs))
    return loggers


def train(cfg: DictConfig) -> float | None:
    install_log_redaction()  # no API key in any log line or logged traceback
    validate_train_config(cfg)  # before any weights are loaded
    L.seed_everything(cfg.seed, workers=True)

    bundle = hydra.utils.instantiate(cfg.model)  # pvllm.models.builder.build_pvllm
    log.info("model %s\n%s", bundle.source, format_parameter_table(bundle.parameter_table))
    for note in bundle.notes:
        log.info("note: %s", note)

    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.attach_processor(bundle.processor, bundle.model)  # + the feature cache, if configured
    module = PVLLMModule(bundle.model, optim=cfg.optim, scheduler=cfg.scheduler, loss=cfg.get("loss"))

    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    loggers = instantiate_loggers(cfg)
    strategy = hydra.utils.instantiate(cfg.strategy)
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers, strategy=strategy)
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
        model.save_pretrained(out / "hf_model")
        bundle.processor.save_pretrained(out / "hf_model")
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
    log.info("done: global_step=%d best val/loss=%s metrics=%s skipped_videos=%d excluded_samples=%d",
             trainer.global_step, best, metrics, sum(skipped.values()), sum(datamodule.excluded.values()))
    return best


@hydra.main(version_base=None, config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        return train(cfg)
    finally:  # a crashed job in a multirun must not leave a W&B run open for the next one
        import wandb

        if wandb.run is not None:
            wandb.finish()


if __name__ == "__main__":
    import sys

    from pvllm.config import check_group_overrides

    check_group_overrides(sys.argv[1:], Path(__file__).resolve().parent / "conf")
    main()
