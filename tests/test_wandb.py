"""W&B offline runs of train.py (a 2-job sweep) and evaluate.py, read back from the run directories.

wandb 0.31 writes an offline run as ``run-<id>.wandb``, a LevelDB-style log of protobuf ``Record``s
(no public reader, and no files/config.yaml in offline mode), so ``_records`` parses it: config,
run (project / group / name), history rows and summary updates. Fake API keys are set in the
environment and must appear nowhere under the output directory.
"""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAKE_KEYS = {
    "WANDB_API_KEY": "fakewandbkey0123456789abcdef0123456789abcd",
    "GEMINI_API_KEY": "fake-gemini-SECRET-4242",
    "OPENAI_API_KEY": "sk-fake-openai-SECRET-4242",
    "YOUTUBE_API_KEY": "fake-youtube-SECRET-4242",
}


def _records(path: Path):
    """Yield the protobuf Records of a .wandb file (7-byte header, 32 KiB blocks, 7-byte chunk headers)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B datastore"
    block, pos, buf = 32768, 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        chunk, pos = data[pos : pos + n], pos + n
        if kind == 0 and n == 0:
            break
        if kind == 2:  # FIRST
            buf = chunk
            continue
        if kind == 3:  # MIDDLE
            buf += chunk
            continue
        payload = chunk if kind == 1 else buf + chunk  # FULL or LAST
        rec = pb.Record()
        rec.ParseFromString(payload)
        yield rec


def _item_key(item) -> str:
    return item.key or "/".join(item.nested_key)


def read_offline_run(run_dir: Path) -> dict:
    """{'run': {...}, 'config': {...}, 'history': [rows], 'summary': {...}} of one offline run dir."""
    (wandb_file,) = run_dir.glob("run-*.wandb")
    out: dict = {"run": {}, "config": {}, "history": [], "summary": {}}
    for rec in _records(wandb_file):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["run"] = {
                "project": rec.run.project,
                "group": rec.run.run_group,
                "name": rec.run.display_name,
            }
            for it in rec.run.config.update:  # config passed to wandb.init
                out["config"][_item_key(it)] = json.loads(it.value_json)
        elif kind == "config":
            for it in rec.config.update:
                out["config"][_item_key(it)] = json.loads(it.value_json)
        elif kind == "history":
            out["history"].append({_item_key(it): json.loads(it.value_json) for it in rec.history.item})
        elif kind == "summary":
            for it in rec.summary.update:
                out["summary"][_item_key(it)] = json.loads(it.value_json)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wandb")
    env = dict(os.environ, PVLLM_OUTPUTS=str(tmp), WANDB_MODE="offline", OMP_NUM_THREADS="1", **FAKE_KEYS)
    env.pop("PVLLM_WANDB_OFFLINE", None)  # default: offline
    train = subprocess.run(
        [sys.executable, "train.py", "-m", "experiment=demo", "history.k=1,5", "trainer.max_steps=2",
         "trainer.enable_progress_bar=false"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-3000:]
    (sweep,) = (tmp / "train" / "multirun").iterdir()
    evaluate = subprocess.run(
        [sys.executable, "evaluate.py", "generator=pvllm", f"generator.pretrained={sweep / '0' / 'hf_model'}",
         "generator.greedy=true", "generator.sampling.max_new_tokens=4", "~rater"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    (eval_dir,) = [p for p in (tmp / "eval").iterdir() if p.is_dir()]
    return {"tmp": tmp, "sweep": sweep, "eval_dir": eval_dir}


def _one_run(job_dir: Path) -> tuple[Path, dict]:
    (run_dir,) = (job_dir / "wandb").glob("offline-run-*")
    return run_dir, read_offline_run(run_dir)


def test_train_runs_config_group_and_metrics(runs):
    sweep = runs["sweep"]
    seen = {}
    for job in ("0", "1"):
        _, r = _one_run(sweep / job)
        # a multirun is one group (the sweep directory); each run named after its job
        assert r["run"] == {"project": "pvllm", "group": sweep.name, "name": f"{sweep.name}/{job}"}
        cfg = r["config"]
        assert {"optim", "scheduler", "model", "trainer", "data", "history", "parameter_table"} <= set(cfg)
        assert cfg["optim"]["lr"] == 1e-3  # experiment=demo's rate, resolved
        assert cfg["trainer"]["max_steps"] == 2
        seen[job] = cfg["history"]["k"]
        table = {row["part"]: row for row in cfg["parameter_table"]}
        assert table["vision_encoder"]["trainable"] == 0 and table["projector"]["trainable"] > 0
        rows = r["history"]
        losses = [row["train/loss"] for row in rows if "train/loss" in row]
        lrs = [row["train/lr"] for row in rows if "train/lr" in row]
        tps = [row["train/tokens_per_s"] for row in rows if "train/tokens_per_s" in row]
        assert len(losses) == 2 and all(math.isfinite(x) and x > 0 for x in losses)
        assert len(lrs) == 2 and lrs[0] > lrs[1] >= 0  # cosine decay over 2 steps
        assert len(tps) >= 1 and all(x > 0 for x in tps)  # throughput from the second step on
        assert r["summary"]["train/loss"] == losses[-1]
    assert seen == {"0": 1, "1": 5}


def test_eval_run_has_generation_table_with_scores(runs):
    eval_dir = runs["eval_dir"]
    run_dir, r = _one_run(eval_dir)
    assert r["run"]["project"] == "pvllm" and r["run"]["name"] == eval_dir.name
    s = r["summary"]
    assert s["n"] == 4 and s["n_generation_failed"] == 0 and s["generator"] == "pvllm"
    assert s["generations/_type"] == "table-file" and s["generations/nrows"] == 4
    table = json.loads((run_dir / "files" / s["generations/path"]).read_text())
    cols = table["columns"]
    assert {"sample_id", "user_id", "history", "reference", "generated", "error"} <= set(cols)
    assert {"BLEU-4", "METEOR", "ROUGE-L", "CIDEr"} <= set(cols)
    preds = {
        json.loads(x)["sample_id"]: json.loads(x)
        for x in (eval_dir / "predictions.jsonl").read_text().splitlines()
    }
    assert len(table["data"]) == 4
    for row in table["data"]:
        row = dict(zip(cols, row))
        assert row["generated"] == preds[row["sample_id"]]["text"] and row["error"] is None
        assert isinstance(row["BLEU-4"], float)


def test_no_api_key_anywhere_in_outputs(runs):
    """Config logged without secrets: no fake key appears in any file (W&B records, Hydra configs, logs)."""
    leaks = []
    files = [p for p in runs["tmp"].rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files) and any(p.name == "config.yaml" for p in files)
    for p in files:
        data = p.read_bytes()
        leaks += [f"{p}: {name}" for name, value in FAKE_KEYS.items() if value.encode() in data]
    assert leaks == []


def test_reader_would_see_a_leak(tmp_path):
    """The leak check can fail: a key put in a run's config is found by the same scan. The run is made in a
    fresh process, as train.py's are (an earlier in-process run of the suite leaves wandb's state behind)."""
    code = ("import sys, wandb; run = wandb.init(project='pvllm', dir=sys.argv[1], mode='offline', "
            "config={'api_key': sys.argv[2]}); run.finish()")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    subprocess.run([sys.executable, "-c", code, str(tmp_path), FAKE_KEYS["GEMINI_API_KEY"]], env=env,
                   check=True, capture_output=True, timeout=300)
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    assert read_offline_run(run_dir)["config"]["api_key"] == FAKE_KEYS["GEMINI_API_KEY"]
    assert any(
        FAKE_KEYS["GEMINI_API_KEY"].encode() in p.read_bytes() for p in run_dir.rglob("*") if p.is_file()
    )
