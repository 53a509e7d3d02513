"""Bad input on the training side (issue 16 items 7, 9, 11), through the real entry points: train.py's
``train`` (in-process, the same config files), ``python -m pvllm.data.check_videos``, ``train.py`` and
``evaluate.py`` as a user runs them. Each case asserts the message (naming the bad item) or the count.

Fixtures are hand-made from the bundled sample: which video is broken is chosen from the draws here,
not pinned to the sample's contents.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pvllm.data.video_io import VideoReadError
from pvllm.utils.jsonl import JsonlError, load_jsonl
from tests.conftest import REPO, SAMPLE
from tests.entrypoints import compose_config, entry_module

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(SAMPLE, root)
    return root


def _train(tmp_path: Path, root: Path, *overrides: str):
    out = tmp_path / "run"
    cfg = compose_config("train", [
        "experiment=demo", "logger=csv", "trainer.enable_progress_bar=false", f"data.root={root}",
        f"paths.output_root={tmp_path / 'outputs'}", *overrides], output_dir=out)  # fmt: skip
    return entry_module("train").train(cfg), out


def _draw(root: Path):
    from pvllm.data.dataset import load_pervidcom
    from pvllm.data.histories import build_eval_histories, draw_training_samples

    ds = load_pervidcom(root)
    return ds, draw_training_samples(ds, "train", epoch=0, seed=0), build_eval_histories(ds, "val", k=5, seed=0)


def _done_line(caplog) -> str:
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("done: global_step=")]
    return line


def test_check_videos_exit_status_tells_found_from_failed(tmp_path):
    """Issue 25 item 9: the flow of docs/cluster.md (its shell lines, the dataset path replaced) goes on to
    training after exit 3 (unreadable files listed) and stops on a failed check."""
    import re

    block = re.search(r"```bash\n(python -m pvllm\.data\.check_videos.*?)```",
                      (REPO / "docs" / "cluster.md").read_text(), re.S).group(1)
    script = block.replace("python train.py", "echo TRAIN")  # training itself: the test below
    root = _copy(tmp_path)
    next(iter(sorted((root / "videos").glob("*.mp4")))).write_bytes(b"")
    env = dict(os.environ, PYTHONPATH=str(REPO), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")

    def run(data_root: Path) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", script.replace("/data/pervidcom", str(data_root)).replace(
            "--workers 32", "--workers 1")], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

    found = run(root)
    assert found.returncode == 0 and "TRAIN" in found.stdout, found.stderr[-2000:]
    assert len(load_jsonl(root / "unreadable_videos.jsonl")) == 1
    failed = run(tmp_path / "no_such_dataset")
    assert failed.returncode == 1 and "TRAIN" not in failed.stdout
    assert "check_videos failed (exit 1)" in failed.stderr


def test_check_videos_lists_corrupt_zero_byte_and_missing_then_training_leaves_them_out(tmp_path, caplog):
    from pvllm.data.check_videos import main as check_videos

    root = _copy(tmp_path)
    ds, train, val = _draw(root)
    corrupt, empty = train[0].video_id, val[0].video_id
    missing = next(s.video_id for s in train if s.video_id not in (corrupt, empty))
    ds.video_path(corrupt).write_bytes(b"\x00not a video" * 64)
    ds.video_path(empty).write_bytes(b"")
    ds.video_path(missing).unlink()
    caplog.set_level(logging.INFO)
    assert check_videos([str(root), "--workers", "2"]) == 3  # found unreadable files: a distinct exit status
    listed = {r["video_id"]: r["error"] for r in load_jsonl(root / "unreadable_videos.jsonl")}
    assert sorted(listed) == sorted({corrupt, empty, missing})
    assert "video file not found" in listed[missing] and f"{missing}.mp4" in listed[missing]
    assert f"checked {len(ds.videos)} videos: 3 unreadable" in caplog.text

    caplog.clear()
    bad = {corrupt, empty, missing}
    _train(tmp_path, root, "trainer.max_steps=1", f"data.exclude_videos={root / 'unreadable_videos.jsonl'}")
    n_train, n_val = sum(s.video_id in bad for s in train), sum(s.video_id in bad for s in val)
    assert f"train epoch 0: left out {n_train} of {len(train)} samples" in caplog.text
    assert f"val: left out {n_val} of {len(val)} samples" in caplog.text
    assert _done_line(caplog).endswith(f"skipped_videos=0 excluded_samples={n_train + n_val}")


@pytest.mark.parametrize("fault", ["zero_byte", "missing"])
def test_unreadable_video_at_train_with_skip_is_counted_never_replaced(tmp_path, caplog, fault):
    root = _copy(tmp_path)
    ds, train, _ = _draw(root)
    bad = train[0].video_id
    if fault == "missing":
        ds.video_path(bad).unlink()
    else:
        ds.video_path(bad).write_bytes(b"")
    caplog.set_level(logging.INFO)
    _train(tmp_path, root, "trainer.max_steps=3", "data.on_bad_video=skip", "data.num_workers=0")
    n = sum(s.video_id == bad for s in train[:3])  # the first 3 samples are the 3 steps' batches
    assert f"skipped_videos={n}" in _done_line(caplog)
    assert f"{bad}.mp4" in caplog.text and "zero loss weight" in caplog.text


def test_corrupt_val_video_with_raise_fails_before_training(tmp_path):
    root = _copy(tmp_path)
    ds, _, val = _draw(root)
    ds.video_path(val[0].video_id).write_bytes(b"corrupt")
    with pytest.raises(VideoReadError, match=rf"(?s)validation video\(s\) of split 'val' are unreadable.*"
                                             rf"{val[0].video_id}\.mp4"):
        _train(tmp_path, root, "trainer.max_steps=2", "data.on_bad_video=raise")
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "hf_model").exists()


def test_empty_training_draw_fails_and_does_not_repoint_latest(tmp_path):
    root = _copy(tmp_path)
    # every training user keeps comments on one video only: no (target, history) pair can be drawn
    rows = load_jsonl(root / "comments.jsonl")
    split = {u["user_id"]: u["split"] for u in load_jsonl(root / "users.jsonl")}
    first: dict[str, str] = {}
    kept = [c for c in rows if split[c["user_id"]] != "train" or first.setdefault(c["user_id"], c["video_id"])
            == c["video_id"]]
    (root / "comments.jsonl").write_text("".join(json.dumps(c) + "\n" for c in kept))
    latest = tmp_path / "outputs" / "train" / "latest"
    latest.parent.mkdir(parents=True)
    (tmp_path / "earlier_run").mkdir()
    latest.symlink_to(tmp_path / "earlier_run")
    with pytest.raises(ValueError, match=r"no training samples in epoch 0: split 'train' of .* has no user with "
                                         r"comments on >= 2 videos"):
        _train(tmp_path, root, "trainer.max_steps=2")
    assert not (tmp_path / "run" / "hf_model").exists()
    assert latest.resolve() == (tmp_path / "earlier_run").resolve()  # still the earlier run


def test_non_utf8_byte_names_file_line_and_offset(tmp_path):
    root = _copy(tmp_path)
    raw = (root / "comments.jsonl").read_bytes().split(b"\n")
    line3 = raw[2]
    col = line3.index(b'"text"') + 9
    raw[2] = line3[:col] + b"\xff" + line3[col:]  # Latin-1 style byte inside the third record's text
    (root / "comments.jsonl").write_bytes(b"\n".join(raw))
    offset = len(raw[0]) + len(raw[1]) + 2 + col
    with pytest.raises(JsonlError, match=rf"comments\.jsonl:3: not UTF-8 at byte offset {offset} of the file "
                                         rf"\(byte 0xff, column {col + 1} of the line\)"):
        _train(tmp_path, root, "trainer.max_steps=1")


def test_broken_middle_line_names_file_and_line(tmp_path):
    root = _copy(tmp_path)
    lines = (root / "users.jsonl").read_text().splitlines(keepends=True)
    lines[1] = lines[1][: len(lines[1]) // 2] + "\n"  # a torn line that is not the last: never tolerated
    (root / "users.jsonl").write_text("".join(lines))
    with pytest.raises(JsonlError, match=r"users\.jsonl:2: not valid JSON"):
        _train(tmp_path, root, "trainer.max_steps=1")


def test_torn_and_middle_broken_predictions(tmp_path, caplog):
    from pvllm.utils.jsonl import read_jsonl_tolerant

    rec = json.dumps({"sample_id": "a", "text": "é"}, ensure_ascii=False).encode()
    path = tmp_path / "predictions.jsonl"
    path.write_bytes(rec + b"\n" + rec.replace(b'"a"', b'"b"')[:-3])  # killed mid-write, inside "é"
    torn: list[str] = []
    caplog.set_level(logging.WARNING)
    assert [r["sample_id"] for r in read_jsonl_tolerant(path, torn)] == ["a"]
    assert torn == [f"{path}:2"] and f"{path}:2: dropped a torn last line" in caplog.text
    path.write_bytes(rec + b"\n" + rec[:-3] + b"\n" + rec + b"\n")  # the broken line is not the last
    with pytest.raises(JsonlError, match=r"predictions\.jsonl:2: not UTF-8|predictions\.jsonl:2: not valid JSON"):
        read_jsonl_tolerant(path)


def _cli(script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})})


def test_unknown_config_name_lists_the_valid_names_and_group_null_says_what_to_write(tmp_path):
    proc = _cli("train.py", "model=tiniest", f"hydra.run.dir={tmp_path / 'r'}")
    assert proc.returncode != 0
    assert "Could not find 'model/tiniest'" in proc.stderr
    for name in sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml")):
        assert f"\t{name}" in proc.stderr or f" {name}" in proc.stderr
    proc = _cli("evaluate.py", "generator=text_only", "rater=null")
    assert proc.returncode != 0 and "`rater=null`: a config group cannot be set to null" in proc.stderr
    assert "`~rater` or choose `rater=none`" in proc.stderr


def test_missing_api_key_names_the_variable_before_any_work(tmp_path, monkeypatch):
    from hydra.errors import InstantiationException

    from pvllm.clients.credentials import MissingCredentialsError

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cfg = compose_config("evaluate", ["generator=openai_compatible", "generator.model=m",
                                      "generator.base_url=http://127.0.0.1:9/v1", "rater=lexical"], tmp_path / "e")
    with pytest.raises((MissingCredentialsError, InstantiationException),
                       match="environment variable OPENAI_API_KEY is not set"):
        entry_module("evaluate").evaluate(cfg)
    assert not (tmp_path / "e" / "predictions.jsonl").exists()


def test_all_validation_videos_bad_is_an_error_not_a_nan_val_loss(tmp_path):
    """Issue 25 item 6: with every validation video unreadable (on_bad_video=skip), val/loss would be 0/0;
    the run stops naming the cause, before any best checkpoint is chosen. Once the files are back, the
    rerun validates each sample once with a finite val/loss."""
    import csv

    root = _copy(tmp_path)
    ds, _, val = _draw(root)
    saved = {s.video_id: ds.video_path(s.video_id).read_bytes() for s in val}
    for vid in saved:
        ds.video_path(vid).write_bytes(b"")
    args = ["trainer.max_steps=2", "+trainer.val_check_interval=2", "data.on_bad_video=skip",
            "+callbacks.probe._target_=pvllm.distributed.probe.TrainProbe",
            "+callbacks.probe.out_dir=${paths.output_dir}/probe"]
    with pytest.raises(ValueError, match=rf"validation at step 2: all {len(val)} validation sample\(s\) were "
                                         r"skipped .* val/loss is undefined \(NaN\)"):
        _train(tmp_path, root, *args)
    assert not list((tmp_path / "run" / "checkpoints").glob("best-*"))
    for vid, data in saved.items():
        ds.video_path(vid).write_bytes(data)
    shutil.rmtree(tmp_path / "run")
    _train(tmp_path, root, *args)
    recs = [json.loads(x) for x in (tmp_path / "run" / "probe" / "rank0.jsonl").read_text().splitlines()]
    ids = [i for r in recs if r["event"] == "val" for i in r["sample_ids"]]
    assert sorted(ids) == sorted(s.sample_id for s in val)
    (metrics,) = (tmp_path / "run" / "csv").glob("version_*/metrics.csv")
    (loss,) = [float(r["val/loss"]) for r in csv.DictReader(metrics.open()) if r.get("val/loss")]
    assert loss == pytest.approx(sum(r["loss"] for r in recs if r["event"] == "val") / len(val), rel=1e-5)
    assert list((tmp_path / "run" / "checkpoints").glob("best-*"))
