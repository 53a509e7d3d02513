"""Evaluate a comment generator (paper §4–5): histories -> generate -> score -> report.

    python evaluate.py generator=pvllm generator.pretrained=outputs/train/<run>/hf_model
    python evaluate.py -m generator=pvllm,video_llava,text_only        # same histories for all
    python evaluate.py experiment=table4_gemini_flash split=test
    python evaluate.py shard=0 num_shards=4 stage=generate  ...  then  stage=score num_shards=4
A rerun of the same evaluation continues in its directory: finished sample ids are not regenerated.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("PVLLM_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from pvllm.clients.credentials import MissingCredentialsError  # noqa: E402
from pvllm.clients.retry import AuthError  # noqa: E402
from pvllm.config import ConfigError, validate_eval_config  # noqa: E402
from pvllm.data.dataset import DatasetFormatError, load_pervidcom  # noqa: E402
from pvllm.debug import apply_debug  # noqa: E402
from pvllm.evaluation import (  # noqa: E402
    apply_video_mode,
    check_video_files,
    fewshot_pool,
    generate_resumable,
    generation_identity,
    history_stats,
    load_or_build_histories,
    merge_shards,
    predictions_path,
    rank_run,
    read_histories_identity,
    scoring_identity,
    shard_rows,
)
from pvllm.identity import (  # noqa: E402
    SCHEMA_VERSION,
    IdentityConflict,
    check_run_generation,
    differing,
    run_identity,
    stored_run_identity,
    write_json,
)
from pvllm.reports.summary_table import format_table  # noqa: E402
from pvllm.utils.atomic import WriteFailed  # noqa: E402
from pvllm.utils.cli import clear_errors  # noqa: E402
from pvllm.utils.jsonl import JsonlError, load_jsonl, write_jsonl  # noqa: E402
from pvllm.utils.lightning import RankedLogger, loggable_config  # noqa: E402
from pvllm.utils.registry import UnknownNameError  # noqa: E402
from pvllm.utils.secrets import (  # noqa: E402
    install_redaction,
    protect_argv,
    redact_obj,
    redact_values,
    register_config_secrets,
)

log = RankedLogger(__name__)
# errors whose message tells the user what to fix: printed alone, without a traceback (HYDRA_FULL_ERROR=1 shows it)
CLEAR_ERRORS = (ConfigError, MissingCredentialsError, AuthError, DatasetFormatError, IdentityConflict, JsonlError,
                UnknownNameError, WriteFailed)


def log_to_wandb(cfg: DictConfig, run_dir: Path, summary: dict, preds: list[dict]) -> None:
    """Summary metrics and a table of generations with their scores (offline unless configured; nothing with
    WANDB_MODE=disabled); every value passes the secrets' redaction."""
    wcfg = (cfg.get("logger") or {}).get("wandb")
    if wcfg is None:
        return
    # the user's WANDB_MODE wins over the config's offline flag (W&B reads it when mode is None)
    env_mode = os.environ.get("WANDB_MODE", "").strip().lower() or None
    if env_mode == "disabled":
        log.info("W&B: not logged (WANDB_MODE=disabled)")
        return
    import wandb

    hc = HydraConfig.get()
    group = wcfg.get("group") or (Path(hc.sweep.dir).name if hc.mode.name == "MULTIRUN" else None)
    run = wandb.init(project=wcfg.project, group=group, name=cfg.run_name, dir=str(run_dir), job_type="evaluate",
                     mode=None if env_mode else ("offline" if wcfg.offline else "online"), config=loggable_config(cfg),
                     reinit="finish_previous")
    run.summary.update(redact_obj({k: v for k, v in summary.items() if isinstance(v, (int, float, str))}))
    per_item: dict[str, dict] = {}
    scores_file = run_dir / "scores.jsonl"
    for s in load_jsonl(scores_file) if scores_file.is_file() else []:
        per_item.setdefault(s["sample_id"], {})[s["metric"]] = s["value"]
    metrics = sorted({m for d in per_item.values() for m in d})
    table = wandb.Table(columns=["sample_id", "user_id", "history", "reference", "generated", "error", *metrics])
    for p in preds:
        sc = per_item.get(p["sample_id"], {})
        row = [p["sample_id"], p["user_id"], "\n".join(p["history"]), p["reference"], p["text"], p["error"]]
        table.add_data(*[redact_values(v) if isinstance(v, str) else v for v in row], *[sc.get(m) for m in metrics])
    run.log({"generations": table})
    run.finish()


def add_copy_and_intervals(cfg: DictConfig, summary: dict, preds: list[dict], ds, run_dir: Path) -> None:
    """Copy rates, diversity and length (pvllm.metrics.diversity) and bootstrap intervals over users of
    every per-item metric in scores.jsonl (pvllm.metrics.bootstrap) into the summary."""
    from pvllm.metrics.bootstrap import per_item_scores, run_intervals
    from pvllm.metrics.diversity import copy_diversity, per_item_copy

    thr = cfg.diversity.copy_threshold
    summary.update(copy_diversity(preds, {v: x.title for v, x in ds.videos.items()}, thr))
    per_item = per_item_scores(load_jsonl(run_dir / "scores.jsonl"))
    per_item["copy_history"] = per_item_copy(preds, thr)
    b = cfg.bootstrap
    summary["ci95"] = run_intervals(per_item, {p["sample_id"]: p["user_id"] for p in preds},
                                    resamples=b.resamples, seed=b.seed, confidence=b.confidence)
    summary["ci_note"] = (f"percentile bootstrap over users ({b.resamples} resamples, seed {b.seed}, "
                          f"confidence {b.confidence}) of the mean of per-item scores")


def run_report(cfg: DictConfig):
    # _partial_: the report's own nodes are built, but `cfg` (generator, rater, ...) is passed untouched
    return hydra.utils.instantiate(cfg.report, _partial_=True)(cfg=cfg)


def evaluate(cfg: DictConfig) -> dict | None:
    install_redaction()  # no secret value in any log line, stream or traceback (also in a submitit job)
    apply_debug(cfg, "evaluate")  # debug=smoke: swaps what a CPU cannot run (prints each swap)
    register_config_secrets(cfg)  # the keys the config names (api_key_env, URL credentials), by value
    validate_eval_config(cfg)  # before any model is loaded or any request sent
    if cfg.stage == "report":  # tables from earlier runs only (Table 3, Table 4)
        return run_report(cfg)
    run_dir = Path(cfg.paths.output_dir)
    # video files are checked only where a step reads them (generators that see the video), so text-only
    # baselines, scoring and ranking with text models run on comments-only datasets
    ds = load_pervidcom(cfg.data.root, check_files=False)
    h = cfg.history
    all_rows = load_or_build_histories(Path(cfg.histories_file), ds, cfg.split, h.k, h.mode, h.seed,
                                       h.history_seed, cfg.samples_per_user, h.get("selection", "random"),
                                       h.get("retrieval_model"))
    rows = all_rows[: cfg.max_samples] if cfg.max_samples else all_rows
    hist_ident = read_histories_identity(Path(cfg.histories_file))
    video = cfg.get("video") or {"mode": "own", "seed": cfg.seed}
    rows = apply_video_mode(rows, video["mode"], video["seed"])  # video ablation (own | mismatched | none)
    rater = hydra.utils.instantiate(cfg.rater) if cfg.get("rater") else None
    if rater is not None:
        rater.check_ready()  # e.g. a missing API key fails here, before generation
    fewshot, pool_info = fewshot_pool(cfg, rater)  # before generation: a wrong pool fails early

    ranking, gen_counts = None, {}
    if cfg.stage in ("all", "generate", "rank"):
        generator = hydra.utils.instantiate(cfg.generator)
        generator.name = HydraConfig.get().runtime.choices.get("generator") or generator.registry_name
        try:
            if generator.reads_video and cfg.data.get("require_video_files", True):
                check_video_files(rows, ds)  # data.require_video_files=false: the caches serve every video
            # of every sample of the histories file: max_samples/shards do not change a run's identity;
            # stage=rank too: ranking.json never joins another model's or dataset's predictions
            ident = run_identity(hist_ident,
                                 generation_identity(generator, all_rows, ds, cfg.data.include_title, video))
            check_run_generation(run_dir, ident)  # a run directory never mixes two models/datasets
            if stored_run_identity(run_dir) is None:
                write_json(run_dir / "identity.json", ident)
            if cfg.stage != "rank":
                mine = shard_rows(rows, cfg.shard, cfg.num_shards)
                out = predictions_path(run_dir, cfg.shard, cfg.num_shards)
                counts = generate_resumable(generator, mine, ds, out, batch_size=max(1, generator.batch_size),
                                            include_title=cfg.data.include_title,
                                            retry_failed=cfg.retry_failed, window=cfg.generation.window,
                                            by_video=cfg.generation.group_by_video)
                log.info("generation %s: %s", out.name, counts)
                gen_counts = counts
            if cfg.stage == "rank" or (cfg.stage == "all" and cfg.ranking.enabled):
                r = cfg.ranking
                ranking = rank_run(generator, rows, ds, run_dir, candidates_file=Path(r.candidates_file),
                                   n=r.n_candidates, seed=r.seed, batch_size=r.batch_size,
                                   include_title=cfg.data.include_title, score=r.score,
                                   protocol=r.get("protocol", "same_video"), livebot=r.get("livebot"))
        finally:
            generator.close()
        if cfg.stage == "rank":
            from pvllm.metrics.ranking import format_ranking

            name = HydraConfig.get().runtime.choices.get("generator", "?")
            title = (f"\nranking, {cfg.split} split, history {h.mode} k={h.k}, "
                     f"score {cfg.ranking.score} ({cfg.run_name})")
            print(format_ranking([(name, ranking if ranking["status"] == "ok" else None)], title=title))
            if cfg.get("report"):
                run_report(cfg)
            return ranking
        if cfg.stage == "generate" or cfg.num_shards > 1:
            log.info("shard %d/%d written; score with: python evaluate.py ... stage=score num_shards=%d",
                     cfg.shard, cfg.num_shards, cfg.num_shards)
            return None

    stored = stored_run_identity(run_dir)
    if stored is None:
        raise IdentityConflict(f"{run_dir} has no identity.json: its predictions were not written by this "
                               "version of evaluate.py (stage=generate writes it); regenerate them")
    if stored["histories"]["id"] != hist_ident["id"]:
        raise IdentityConflict(
            f"{run_dir} holds predictions for histories {stored['histories']['id']}, but this evaluation "
            f"draws histories {hist_ident['id']} ({'; '.join(differing(stored['histories'], hist_ident))}): "
            "score it with the settings it was generated with, or point hydra.run.dir elsewhere")
    preds = merge_shards(run_dir, rows, cfg.num_shards)
    from pvllm.metrics.scoring import score_predictions

    summary = score_predictions(
        preds, {r["sample_id"]: r["reference"] for r in rows}, rater=rater,
        fewshot=fewshot, k_shots=cfg.ficl.k_shots,
        scores_path=run_dir / "scores.jsonl", cache_path=Path(cfg.paths.cache_dir) / "rater_cache.sqlite",
        seed=cfg.seed, tokenize=(cfg.get("metrics") or {}).get("tokenize", "coco"),
    )
    add_copy_and_intervals(cfg, summary, preds, ds, run_dir)
    if ranking is not None:
        summary["ranking"] = ranking
    # what ran, from the predictions themselves (stage=score never records the config's default generator)
    gen = stored["generation"]["generator"]
    names = sorted({p.get("generator") for p in preds})
    if names != [gen["name"]]:
        raise IdentityConflict(f"{run_dir}: predictions were made by generator(s) {names}, but its identity.json "
                               f"records {gen['name']!r}")
    ident = run_identity(hist_ident, stored["generation"], scoring_identity(summary, rater, cfg, pool_info))
    summary.update(history_stats(rows, h.k))
    if gen_counts:  # a killed run's torn last predictions line: dropped, generated again, counted here
        summary["n_torn_last_line"] = gen_counts["torn_last_line"]
    summary.update(generator=gen["name"], model=gen["model"], split=cfg.split, history_mode=h.mode,
                   history_selection=h.get("selection", "random"), k=h.k, seed=h.seed, video_mode=video["mode"],
                   history_seed=h.history_seed, samples_per_user=cfg.samples_per_user,
                   histories_file=str(cfg.histories_file), ficl_pool=pool_info.get("label") if rater else None,
                   schema_version=SCHEMA_VERSION, run_id=ident["run_id"], identity=ident)
    (run_dir / "summary.json").write_text(redact_values(json.dumps(summary, indent=2, ensure_ascii=False)) + "\n")
    write_jsonl(run_dir / "config.resolved.jsonl", [loggable_config(cfg)])
    print(format_table([(gen["name"], summary)],
                       title=f"\n{cfg.split} split, history {h.mode} k={h.k} ({cfg.run_name})"))
    log_to_wandb(cfg, run_dir, summary, preds)
    if cfg.get("report"):
        run_report(cfg)
    return summary


@hydra.main(version_base=None, config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    try:
        with clear_errors(*CLEAR_ERRORS):
            evaluate(cfg)
    finally:
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
