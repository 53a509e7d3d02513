"""Hand-made summary.json files with a recorded identity (pvllm.identity), for report tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pvllm.identity import histories_identity, run_identity


def identity(*, split="val", generator="pvllm", history_mode="k", k=5, seed=0, history_seed=0,
             rater="embedding/all-MiniLM-L6-v2", dataset="records-A", model="weights-A", history_selection="random",
             video_mode="own") -> dict[str, Any]:
    hist = histories_identity(dataset, split, history_mode, k, seed, history_seed, 1, history_selection)
    gen = {"generator": {"name": generator, "class": generator, "model": model, "weights": None,
                         "generation": {"do_sample": False}}, "include_title": False, "videos": "videos-A",
           **({} if video_mode == "own" else {"video_mode": video_mode})}
    return run_identity(hist, gen, {"rater": rater})


def write_run(root: Path, name: str, *, dataset="records-A", model="weights-A", **summary) -> Path:
    """A run directory (empty predictions.jsonl) whose summary.json carries the identity of its fields."""
    d = root / name
    d.mkdir(parents=True)
    (d / "predictions.jsonl").write_text("")
    (d / "scores.jsonl").write_text("")
    s = {"split": "val", "generator": "pvllm", "history_mode": "k", "k": 5, "seed": 0, "history_seed": 0,
         "rater": "embedding/all-MiniLM-L6-v2", "n": 10, "n_requested": 10, "n_scored": 10,
         "n_generation_failed": 0, "ficl_n_failed": 0, **summary}
    ident = identity(split=s["split"], generator=s["generator"], history_mode=s["history_mode"], k=s["k"],
                     seed=s["seed"], history_seed=s["history_seed"], rater=s["rater"], dataset=dataset,
                     model=model, history_selection=s.get("history_selection", "random"),
                     video_mode=s.get("video_mode", "own"))
    s.update(identity=ident, run_id=ident["run_id"])
    (d / "summary.json").write_text(json.dumps(s))
    return d
