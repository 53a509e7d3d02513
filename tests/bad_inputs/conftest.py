"""Hand-made datasets for the bad-input cases (no value here depends on data/sample's contents: its small
video files are only copied as playable clips)."""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path

import pytest

from tests.conftest import SAMPLE
from tests.entrypoints import run_evaluate

# user -> [(video, text)]: every user comments once per video, so a history has (videos - 1) comments
COMMENTS = {
    "ua": [("v1", "first video was lovely"), ("v2", "bikes again, nice"), ("v3", "that bunny though")],
    "ub": [("v2", "so many bikes"), ("v3", "cute bunny")],
    "uc": [("v3", "bunny!!"), ("v4", "the end was good")],
    "ud": [("v1", "opening shot"), ("v4", "great finale")],
}


def write_dataset(root: Path, comments: dict[str, list[tuple[str, str]]] = COMMENTS,
                  splits: dict[str, str] | None = None, extra_users: list[dict] | None = None) -> Path:
    """A PerVidCom directory with four playable videos (v1..v4) and the given comments."""
    root.mkdir(parents=True, exist_ok=True)
    clips = sorted((SAMPLE / "videos").glob("*.mp4"), key=lambda p: p.stat().st_size)[:4]
    videos = []
    for i, clip in enumerate(clips, start=1):
        shutil.copy(clip, root / f"v{i}.mp4")
        videos.append({"video_id": f"v{i}", "title": f"clip {i}", "likes": 10, "psi": None, "file": f"v{i}.mp4"})
    users = [{"user_id": u, "split": (splits or {}).get(u, "val")} for u in comments] + (extra_users or [])
    rows = [{"comment_id": f"c-{u}-{v}", "video_id": v, "user_id": u, "text": t, "likes": None,
             "published_at": None} for u, cs in comments.items() for v, t in cs]
    for name, recs in (("videos", videos), ("users", users), ("comments", rows)):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs))
    return root


def long_text(n: int, seed: int = 0) -> str:
    """``n`` characters of random lower-case words (no tokenizer compresses them much)."""
    rng = random.Random(seed)
    words = []
    while sum(len(w) + 1 for w in words) < n:
        words.append("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))))
    return " ".join(words)[:n]


@pytest.fixture()
def mini_ds(tmp_path) -> Path:
    return write_dataset(tmp_path / "ds")


class Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def evaluate(overrides: list[str], run_dir: Path, log: Capture | None = None):
    """evaluate.py in-process (tests/entrypoints.py), pvllm's log lines captured into ``log``."""
    logger = logging.getLogger("pvllm")
    old = logger.level
    logger.setLevel(logging.INFO)
    if log is not None:
        logger.addHandler(log)
    try:
        return run_evaluate(overrides, output_dir=run_dir)
    finally:
        if log is not None:
            logger.removeHandler(log)
        logger.setLevel(old)


def tiny_args(tmp_path: Path, tiny_model_dir: Path, ds: Path, **kw) -> list[str]:
    """PV-LLM (the tiny random model) on ``ds``; caption metrics only unless a rater is added."""
    args = [f"data.root={ds}", "generator=pvllm", f"generator.pretrained={tiny_model_dir}", "generator.greedy=true",
            "generator.sampling.max_new_tokens=4", "~rater", "~logger", f"paths.output_root={tmp_path / 'out'}",
            f"paths.cache_dir={tmp_path / 'cache'}"]
    return args + [f"{k}={v}" for k, v in kw.items()]
