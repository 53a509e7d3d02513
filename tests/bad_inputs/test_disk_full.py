"""Issue 25 item 5: the disk fills up (ENOSPC) while predictions, scores, a cache or a checkpoint is being
written. The error names the file; nothing partial is left under its name; the rerun after space is freed
completes with every sample id once.

The full disk is a patched ``open``: files whose name matches take writes until their budget, then write
what still fits and raise ``OSError(ENOSPC)``, as a full file system does. Everything else is real.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from pvllm.utils.atomic import WriteFailed, partial_path
from pvllm.utils.jsonl import load_jsonl
from tests.bad_inputs.conftest import evaluate, tiny_args


class _FullFile:
    def __init__(self, f, disk: FullDisk):
        self._f, self._disk = f, disk

    def write(self, data):
        room = self._disk.room
        if len(data) > room:
            if room > 0:
                self._f.write(data[:room])
                self._f.flush()
            self._disk.room = 0
            self._disk.hits += 1
            raise OSError(errno.ENOSPC, "No space left on device")
        self._disk.room -= len(data)
        return self._f.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self._f, name)


class FullDisk:
    """While active, each file opened for writing whose path satisfies ``match`` gets the next of ``rooms``
    bytes of free space (0 once they run out)."""

    def __init__(self, monkeypatch, match: Callable[[str], bool], rooms: list[int]):
        self.match, self.rooms, self.room, self.hits = match, list(rooms), 0, 0
        real = builtins.open

        def fake_open(file, mode="r", *args, **kwargs):
            f = real(file, mode, *args, **kwargs)
            if any(c in mode for c in "wax+") and isinstance(file, (str, Path)) and self.match(str(file)):
                self.room = self.rooms.pop(0) if self.rooms else 0
                return _FullFile(f, self)
            return f

        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(io, "open", fake_open)


def test_disk_full_while_writing_predictions_then_scores_then_rerun(tmp_path, tiny_model_dir, mini_ds,
                                                                     monkeypatch):
    run = tmp_path / "run"
    args = tiny_args(tmp_path, tiny_model_dir, mini_ds, **{"generator.batch_size": 1, "generation.window": 1})
    # 1. predictions, appended one row at a time: the first row fits, the second is cut after 40 bytes
    with monkeypatch.context() as m:
        disk = FullDisk(m, lambda p: p.endswith("predictions.jsonl"), rooms=[10**6, 40])
        with pytest.raises(WriteFailed, match=rf"could not write {run / 'predictions.jsonl'}: no space left on device"):
            evaluate(args, run)
    assert disk.hits == 1
    raw = (run / "predictions.jsonl").read_bytes()
    assert raw.endswith(b"\n") and len(load_jsonl(run / "predictions.jsonl")) == 1  # no torn line left

    # 2. scores: generation finishes, scores.jsonl cannot be written; no partial file under any name
    with monkeypatch.context() as m:
        FullDisk(m, lambda p: p.endswith("scores.jsonl.tmp"), rooms=[100])
        with pytest.raises(WriteFailed, match=rf"could not write {run / 'scores.jsonl'}: no space left on device"):
            evaluate(args, run)
    assert not (run / "scores.jsonl").exists() and not (run / "scores.jsonl.tmp").exists()
    assert not (run / "summary.json").exists()

    # 3. space freed: the rerun completes, every id once, nothing generated twice
    s = evaluate(args, run)
    preds = load_jsonl(run / "predictions.jsonl")
    (hist,) = (tmp_path / "out" / "histories").glob("*.jsonl")
    want = sorted(r["sample_id"] for r in load_jsonl(hist))
    assert sorted(p["sample_id"] for p in preds) == want and len(want) == 4
    assert s["n_scored"] == 4 and s["n_torn_last_line"] == 0
    bleu = [r["sample_id"] for r in load_jsonl(run / "scores.jsonl") if r["metric"] == "BLEU-4"]
    assert sorted(bleu) == want


def test_disk_full_while_caching_frames_then_rerun(tmp_path, mini_ds, monkeypatch):
    from pvllm.data.frame_cache import main as frame_cache

    cache = tmp_path / "fc"
    argv = ["build", "--root", str(mini_ds), "--cache", str(cache), "--num-frames", "2", "--size", "16"]
    with monkeypatch.context() as m:
        # store.json, the settings, then one object per video: the third video's frames find 100 bytes
        FullDisk(m, lambda p: "/.partial-" in p, rooms=[10**6] * 4 + [100])
        with pytest.raises(WriteFailed, match=r"^could not write .*/objects/.*\.npy: no space left on device"):
            frame_cache(argv)
    assert not list(cache.rglob(".partial-*"))  # no partial file under any name
    assert len(list(cache.rglob("*.npy"))) == 2
    frame_cache(argv)  # space freed: completes; each video cached once, readable
    lines = [json.loads(x) for x in (cache / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["video_id"] for r in lines) == ["v1", "v2", "v3", "v4"] and len(list(cache.rglob("*.npy"))) == 4
    assert all(r["arrays"]["frames"]["shape"][0] == 2 for r in lines)


def test_disk_full_while_saving_a_checkpoint_then_rerun(tmp_path, monkeypatch):
    from tests.entrypoints import compose_config, entry_module

    def train():
        cfg = compose_config("train", ["experiment=demo", "logger=csv", "trainer.enable_progress_bar=false",
                                       "trainer.max_steps=2", "callbacks.last_checkpoint.every_n_train_steps=2",
                                       "save_hf_model=false", f"paths.output_root={tmp_path / 'outputs'}"],
                             output_dir=tmp_path / "run")
        return entry_module("train").train(cfg)

    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    with monkeypatch.context() as m:
        FullDisk(m, lambda p: Path(p).name == partial_path(ckpt).name, rooms=[50_000])
        with pytest.raises(WriteFailed, match=rf"could not write {ckpt}: no space left on device"):
            train()
    assert not ckpt.exists() and not list(ckpt.parent.glob(".partial-*"))
    train()
    import torch

    assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] == 2
