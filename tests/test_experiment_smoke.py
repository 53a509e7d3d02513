"""Every file in conf/experiment/ runs: the command on its header line (the line after `# @package _global_`)
plus `debug=smoke` (conf/debug/smoke.yaml, pvllm/debug.py), in this process, through the entry point's
Hydra main (multirun sweeps through Hydra's real launcher). A new experiment file is picked up by the
listing; no one adds it here.

How the header command is run, and the only things this test adds to it:
- `debug=smoke`; `paths.output_root=<this session>/smoke/<experiment>` (each experiment its own outputs);
  `hydra/job_logging=none hydra/hydra_logging=none` (pytest keeps the log records);
- placeholders: an override whose value starts with `/path/to/` is left out (the preset's bundled sample, or
  the file's own default, e.g. Table 6's synthetic text instructions); a bare `...` and `[optional]` parts
  are left out; `report.sample_ids=[ID1,...]` gets the first sample ids of the first run in `report.runs`;
- API generators talk to the local fakes of tests/fakes/ (`generator.base_url=<fake>`, a fake key in env);
- report-only files (`stage: report`) run last and read the outputs of the smoke runs before them: Table 4
  the `table4_*` runs, qualitative the runs named in its command; run alone (`-k`), the runs they need are
  first made here with the same preset (`experiment=table4_pvllm`, `generator=pvllm|gemini_flash`).
Weights: tiny random ones of each experiment's family, built once per session in the session cache.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
from pathlib import Path

import hydra
import pytest

from tests.conftest import _SESSION_TMP, REPO, require_java
from tests.entrypoints import compose_config, entry_module
from tests.fakes.gemini_server import FakeGeminiServer
from tests.fakes.openai_server import FakeOpenAIServer

CONF = REPO / "conf"


def _is_report(path: Path) -> bool:
    return bool(re.search(r"^stage:\s*report\b", path.read_text(), re.M))


# report-only files after the runs they read; otherwise the listing's order
EXPERIMENTS = sorted((CONF / "experiment").glob("*.yaml"), key=lambda p: (_is_report(p), p.stem))
FINISHED: dict[str, Path] = {}  # experiment -> its output root, once its smoke run passed (this session)
REPORT_INPUTS = {  # report-only experiment -> (experiments whose runs it reads, the command run if none did)
    "table4": ("table4_", ["experiment=table4_pvllm", "split=test"]),
}


def header_command(path: Path) -> tuple[str, list[str]]:
    """("train"|"evaluate", the overrides) of the command on the header line (may end in two spaces + a note)."""
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    assert lines[0].strip() == "# @package _global_", path.name
    m = re.match(r"#\s*python (train|evaluate)\.py (.*?)(\s{2,}.*)?$", lines[1])
    assert m, f"{path.name}: no command on its header line: {lines[1]!r}"
    return m.group(1), m.group(2).split()


def _placeholder(arg: str) -> bool:
    return arg == "..." or (arg.startswith("[") and arg.endswith("]") and "=" in arg and arg.index("=") > 1) or (
        "=" in arg and arg.split("=", 1)[1].startswith("/path/to/"))


@pytest.fixture(scope="module")
def fakes():
    with FakeGeminiServer() as gemini, FakeOpenAIServer() as openai:
        yield {"GeminiGenerator": gemini.url, "OpenAICompatibleGenerator": f"{openai.url}/v1"}


@pytest.fixture(autouse=True)
def _env(monkeypatch, caplog):
    require_java()  # caption metrics
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # the task's exception, not Hydra's sys.exit(1)
    monkeypatch.setenv("GEMINI_API_KEY", "fake-gemini-key-for-the-local-server")
    monkeypatch.setenv("OPENAI_API_KEY", "fake-openai-key-for-the-local-server")
    monkeypatch.delenv("GOOGLE_GEMINI_BASE_URL", raising=False)
    caplog.set_level(logging.INFO)


def run_command(entry: str, args: list[str], root: Path, fakes: dict) -> list[str]:
    """``python {entry}.py ARGS debug=smoke`` in this process; returns the argv it ran."""
    from pvllm.config import check_group_overrides

    argv = [a for a in args if not _placeholder(a)] + ["debug=smoke", f"paths.output_root={root}",
                                                       "hydra/job_logging=none", "hydra/hydra_logging=none"]
    if entry == "evaluate":  # API generators: the local fake server of their API
        cfg = compose_config(entry, [a for a in argv if a != "-m"], root / "compose")
        target = str((cfg.get("generator") or {}).get("_target_", "")).rsplit(".", 1)[-1]
        if target in fakes:
            argv = [a for a in argv if not a.startswith("generator.base_url=")]
            argv.append(f"generator.base_url={fakes[target]}")
    check_group_overrides(argv, CONF)  # what `python train.py` does before Hydra
    main = entry_module(entry).main.__wrapped__  # the function under @hydra.main, try/finally wandb.finish
    old = sys.argv
    sys.argv = [f"{entry}.py", *argv]
    try:
        hydra.main(config_path=str(CONF), config_name=entry, version_base=None)(main)()
    finally:
        sys.argv = old
    return argv


def _summaries(root: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted((root / "eval").glob("*/summary.json"))}


def _copy_run(run: Path, root: Path) -> None:
    """An earlier smoke run into ``root``/eval (copied: the reports walk directories, not symlinks)."""
    shutil.copytree(run, root / "eval" / run.name, ignore=shutil.ignore_patterns("wandb"))


def _link_runs(root: Path, prefix: str) -> int:
    n = 0
    for stem, r in FINISHED.items():
        for d in sorted((r / "eval").glob("*/summary.json")) if stem.startswith(prefix) else []:
            if not (root / "eval" / d.parent.name).exists():
                _copy_run(d.parent, root)
                n += 1
    return n


def _prepare_report(stem: str, args: list[str], root: Path, fakes: dict) -> list[str]:
    """The runs a report-only experiment reads: those of the smoke runs before it, else made here."""
    if stem in REPORT_INPUTS:
        prefix, fallback = REPORT_INPUTS[stem]
        if _link_runs(root, prefix) == 0:
            run_command("evaluate", fallback, root, fakes)
    runs = next((a.split("=", 1)[1].strip("[]").split(",") for a in args if a.startswith("report.runs=")), [])
    for name in runs:  # runs named on the command line: from any earlier smoke run, else made here
        found = [r / "eval" / name for r in FINISHED.values() if (r / "eval" / name / "summary.json").is_file()]
        if found and not (root / "eval" / name).exists():
            _copy_run(found[-1], root)  # the latest (demo_eval's run of that name draws 3 samples per user)
        elif not found:
            gen = re.match(r"sample-val-(\w+?)-k5-s0h0$", name)
            assert gen, f"{stem}: cannot make run {name!r} here"
            run_command("evaluate", [f"generator={gen.group(1)}"], root, fakes)
    out = []
    for a in args:  # report.sample_ids=[ID1,ID2]: ids of the first named run
        if a.startswith("report.sample_ids=") and re.search(r"\bID\d", a):
            n = len(a.split("=", 1)[1].strip("[]").split(","))
            preds = [json.loads(x) for x in (root / "eval" / runs[0] / "predictions.jsonl").open()]
            a = f"report.sample_ids=[{','.join(p['sample_id'] for p in preds[:n])}]"
        out.append(a)
    return out


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_runs_with_debug_smoke(path, fakes, caplog, capsys):
    entry, args = header_command(path)
    root = _SESSION_TMP / "smoke" / path.stem
    if _is_report(path):
        args = _prepare_report(path.stem, args, root, fakes)
        capsys.readouterr()
    argv = run_command(entry, args, root, fakes)
    printed = capsys.readouterr().out
    assert "debug=smoke: " in printed, printed[-2000:]  # the preset printed what it swapped
    multirun = "-m" in argv or "mode: MULTIRUN" in path.read_text()
    if entry == "train":
        done = [r.getMessage() for r in caplog.records if r.getMessage().startswith("done: global_step=")]
        assert len(done) == 1 and done[0].startswith("done: global_step=2 "), done
        cfg = compose_config("train", [f"experiment={path.stem}"], root / "compose")
        if cfg.strategy.get("_target_", "").endswith("DeepSpeedStrategy"):
            assert "debug=smoke: strategy: DeepSpeedStrategy (ZeRO stage" in printed
        if cfg.get("save_hf_model"):
            assert (root / "train" / "latest" / "hf_model" / "config.json").is_file()
    elif _is_report(path):
        reports = [p for p in (root / "reports").rglob("*") if p.is_file()]
        assert reports, f"{path.stem} wrote no report under {root / 'reports'}"
    else:
        cfg = compose_config("evaluate", [a for a in argv if a != "-m"], root / "compose")
        if cfg.stage == "rank":
            ranked = sorted((root / "eval").glob("*/ranking_summary.json"))
            assert ranked and all(json.loads(p.read_text())["n"] == 2 for p in ranked), ranked
        else:
            summaries = _summaries(root)
            assert summaries and all(s["n"] == 2 for s in summaries.values()), summaries.keys()
            if multirun:  # one run per point of the file's sweep
                sweep = cfg.hydra.sweeper.params
                assert len(summaries) == max(len(str(v).split(",")) for v in sweep.values())
    FINISHED[path.stem] = root


def test_every_header_command_is_a_real_command():
    """Each file's header names its entry point and itself (what the parametrized test runs)."""
    for path in EXPERIMENTS:
        entry, args = header_command(path)
        assert f"experiment={path.stem}" in args, path.name
        assert (REPO / f"{entry}.py").is_file()
    assert len(EXPERIMENTS) == len(list((CONF / "experiment").glob("*.yaml"))) and os.path.isdir(CONF / "debug")


# what debug=smoke may change (pvllm/debug.py); everything else of the experiment must compose unchanged
SWAPPABLE = ("smoke", "paths.output_root", "data.root", "data.num_workers", "logger.wandb.offline",
             "trainer.accelerator", "trainer.devices", "trainer.num_nodes", "trainer.max_steps",
             "trainer.limit_val_batches", "trainer.max_epochs", "strategy", "model.dtype", "model.pretrained",
             "model.create", "max_samples", "generator.pretrained", "generator.checkpoint", "generator.llm_path",
             "generator.projector_path", "generator.vision_tower", "generator.model_path", "generator.gguf_file")


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flat(v, key + ".") if isinstance(v, dict) and v else {key: v})
    return out


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_smoke_changes_only_what_a_cpu_cannot_run(path, tmp_path, capsys):
    from omegaconf import OmegaConf

    from pvllm.debug import apply_debug

    entry, args = header_command(path)
    args = [a.split(",")[0] if "," in a and "[" not in a else a for a in args if a != "-m" and not _placeholder(a)]
    plain = compose_config(entry, args, tmp_path)
    smoke = compose_config(entry, [*args, "debug=smoke"], tmp_path)
    printed = apply_debug(smoke, entry)
    assert apply_debug(plain, entry) == []  # without the preset: nothing
    a, b = (_flat(OmegaConf.to_container(c, resolve=False)) for c in (plain, smoke))
    a = {k: v for k, v in a.items() if not k.startswith("hydra.")}
    b = {k: v for k, v in b.items() if not k.startswith("hydra.")}
    changed = {k for k in a.keys() | b.keys() if a.get(k, "<absent>") != b.get(k, "<absent>")}
    outside = {k for k in changed if not any(k == s or k.startswith(s + ".") for s in SWAPPABLE)}
    assert not outside, f"debug=smoke changed {sorted(outside)}"
    for k in changed - {"smoke", "paths.output_root"}:  # each swap is printed, by its key
        head = "strategy:" if k.startswith("strategy.") else "model.pretrained:" if k.startswith(
            "model.create") else f"{k}:"  # the whole strategy node; the tiny dir with the builder writing it
        assert any(line.startswith(head) for line in printed), (k, printed)
    if entry == "train":
        assert b["trainer.max_steps"] == 2 and b["trainer.accelerator"] == "cpu"
        # the recipe itself is the experiment's: accumulation, precision, checkpointing, optimizer, k range
        for key in ("trainer.accumulate_grad_batches", "trainer.precision", "model.gradient_checkpointing",
                    "optim.lr", "history.train_k_min", "history.train_k_max", "data.batch_size"):
            assert a[key] == b[key], key
    else:
        assert smoke.max_samples == 2 or (plain.max_samples or 99) <= 2
