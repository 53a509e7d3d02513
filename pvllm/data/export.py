"""Export a PerVidCom split for other trainers: LLaMA-Factory and ms-swift (ShareGPT-style video JSON).

    python -m pvllm.data.export --root data/sample --split train --format llamafactory --out exports/pvc
    python -m pvllm.data.export --root data/sample --split train --format swift --out exports/pvc

Every record is one PV-LLM sample: the Figure-5 prompt (``pvllm.prompt.build_instruction``: the same
text our trainer and every generator use) after a ``<video>`` tag, the target comment as the reply,
and the absolute video path. Train samples are the draws ``draw_training_samples`` makes (history
length k ~ U[k_min, k_max], one draw per epoch: ``--epochs 2`` writes both paper epochs, train one
epoch there); val/test samples are the evaluation histories (``build_eval_histories``, k fixed), so a
model trained elsewhere is evaluated here (``generator=hf_video``) on identical histories.

Formats (one record shape, the one both tools document for video SFT data):
- ``llamafactory``: ``<name>.json`` (a JSON list of ``{"messages": [{"role", "content"}...],
  "videos": [path]}``) and ``dataset_info.json`` declaring it (``formatting: sharegpt``, columns
  messages/videos, role/content tags).
- ``swift``: ``<name>.jsonl``, the same records one per line (ms-swift's custom dataset format).
- ``sharegpt``: ``<name>.json`` in classic ShareGPT (``conversations`` of ``{"from": human|gpt, "value"}``,
  ``videos``) plus its ``dataset_info.json`` entry (LLaMA-Factory's default sharegpt tags).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pvllm.data.dataset import load_pervidcom
from pvllm.data.histories import Sample, build_eval_histories, draw_training_samples
from pvllm.prompt import build_instruction

FORMATS = ("llamafactory", "swift", "sharegpt")
VIDEO_TAG = "<video>"  # LLaMA-Factory's and ms-swift's video placeholder


def record(sample: Sample, video_path: str, title: str | None = None, fmt: str = "llamafactory") -> dict:
    """One exported record (the target user turn is the Figure-5 prompt)."""
    user = VIDEO_TAG + build_instruction([h["text"] for h in sample.history], title)
    if fmt == "sharegpt":
        conv = [{"from": "human", "value": user}, {"from": "gpt", "value": sample.reference}]
        return {"id": sample.sample_id, "conversations": conv, "videos": [video_path]}
    msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": sample.reference}]
    return {"id": sample.sample_id, "messages": msgs, "videos": [video_path]}


def dataset_info(name: str, file_name: str, fmt: str) -> dict:
    if fmt == "sharegpt":
        return {name: {"file_name": file_name, "formatting": "sharegpt",
                       "columns": {"messages": "conversations", "videos": "videos"}}}
    return {name: {"file_name": file_name, "formatting": "sharegpt",
                   "columns": {"messages": "messages", "videos": "videos"},
                   "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                            "assistant_tag": "assistant"}}}


def export(root: str, split: str, out: str, fmt: str = "llamafactory", name: str | None = None, seed: int = 0,
           k: int = 5, k_min: int = 5, k_max: int = 15, epochs: int = 1, include_title: bool = False) -> Path:
    """Write the split; returns the data file. Samples drawn exactly as train.py / evaluate.py draw them."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    ds = load_pervidcom(root)
    if split == "train":
        samples = [s for e in range(epochs) for s in draw_training_samples(ds, split, e, seed, k_min, k_max)]
    else:
        samples = build_eval_histories(ds, split, k=k, seed=seed)
    name = name or f"pervidcom_{split}"
    rows = [record(s, str(ds.video_path(s.video_id).resolve()),
                   ds.videos[s.video_id].title if include_title else None, fmt) for s in samples]
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "swift":
        path = out_dir / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        return path
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n")
    info_path = out_dir / "dataset_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    info.update(dataset_info(name, path.name, fmt))
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", required=True, help="PerVidCom directory (data/sample, or a built dataset)")
    p.add_argument("--split", default="train", help="train | val | test")
    p.add_argument("--format", default="llamafactory", choices=FORMATS)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--name", default=None, help="dataset name (default pervidcom_<split>)")
    p.add_argument("--seed", type=int, default=0, help="the run seed (train draws, eval histories)")
    p.add_argument("--k", type=int, default=5, help="history length of val/test samples (paper: 5)")
    p.add_argument("--k-min", type=int, default=5, help="train history length k ~ U[k_min, k_max]")
    p.add_argument("--k-max", type=int, default=15)
    p.add_argument("--epochs", type=int, default=1, help="train: one fresh draw per epoch (paper: 2)")
    p.add_argument("--include-title", action="store_true", help="put the video title in the prompt")
    a = p.parse_args(argv)
    path = export(a.root, a.split, a.out, a.format, a.name, a.seed, a.k, a.k_min, a.k_max, a.epochs,
                  a.include_title)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
