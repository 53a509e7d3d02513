"""ZeRO checkpoint -> HF directory that ``evaluate.py`` loads (``zero_to_fp32`` -> ``save_pretrained``).

A ZeRO-2/3 checkpoint holds fp32 weights in shards, one per rank. This gathers them on CPU with
DeepSpeed's own ``zero_to_fp32`` reader, loads them into the base HF model (architecture + processor
from ``base_dir``) and writes a normal ``save_pretrained`` directory.

    python -m pvllm.distributed.consolidate CKPT_DIR OUT_DIR --base BASE_HF_DIR [--tag TAG] [--allow-missing]

CKPT_DIR is either DeepSpeed's ``save_checkpoint`` dir (has ``latest``) or a Lightning DeepSpeed
checkpoint (``epoch=..-step=...ckpt/`` with a ``checkpoint/`` subdir): parameter names are matched to
the HF model whatever prefix the wrapper added (``_forward_module.``, ``model.``, ...).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from pathlib import Path

import torch

from pvllm.utils.atomic import atomic_dir

log = logging.getLogger(__name__)

# Files of an HF model directory that are not weights: copied from the base so the result is self-contained.
_PROCESSOR_GLOBS = ("*token*", "*processor*", "*.txt", "*.model", "chat_template*", "special_tokens_map.json")


class MissingTensorsError(KeyError):
    """Model tensors absent from a ZeRO checkpoint (the message names them)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def find_zero_tag(ckpt_dir: str | os.PathLike) -> tuple[Path, str]:
    """(directory holding the tag folders, tag) for a DeepSpeed or Lightning-DeepSpeed checkpoint."""
    ckpt_dir = Path(ckpt_dir)
    for root in (ckpt_dir, ckpt_dir / "checkpoint"):
        latest = root / "latest"
        if latest.is_file():
            return root, latest.read_text().strip()
    # Lightning: <name>.ckpt/checkpoint/mp_rank_00_model_states.pt, tag = "checkpoint"
    if (ckpt_dir / "checkpoint" / "mp_rank_00_model_states.pt").is_file():
        return ckpt_dir, "checkpoint"
    tags = sorted(p.name for p in ckpt_dir.iterdir() if p.is_dir() and any(p.glob("*model_states.pt")))
    if len(tags) == 1:
        return ckpt_dir, tags[0]
    raise FileNotFoundError(
        f"{ckpt_dir}: no ZeRO checkpoint found (no `latest` file, no `checkpoint/` dir, tag folders {tags})"
    )


def _match_prefix(keys: list[str], expected: set[str]) -> str:
    """The prefix whose removal turns every checkpoint key into a model key (longest common wrapper)."""
    candidates = {""}
    for k in keys:
        for e in expected:
            if k.endswith(e) and (len(k) == len(e) or k[-len(e) - 1] == "."):
                candidates.add(k[: len(k) - len(e)])
    for prefix in sorted(candidates, key=len):
        if all(k.startswith(prefix) and k[len(prefix) :] in expected for k in keys):
            return prefix
    unmatched = [k for k in keys if k not in expected][:5]
    raise KeyError(f"checkpoint keys do not match the model under any one prefix, e.g. {unmatched}")


def consolidate_zero_checkpoint(
    ckpt_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    base_dir: str | os.PathLike,
    tag: str | None = None,
    dtype: torch.dtype = torch.bfloat16,
    allow_missing: bool = False,
) -> Path:
    """Gather a ZeRO checkpoint into ``out_dir`` as an HF directory of the base model's family; returns ``out_dir``.

    Written in bf16 by default (what a user loads, half the disk of fp32; the master weights are fp32, so
    ``dtype=torch.float32`` / ``--dtype float32`` keeps them exactly).

    Every tensor of the model must be in the checkpoint (tied/aliased ones once): a missing one raises
    ``MissingTensorsError`` naming them, since the result would silently hold base (untrained) weights.
    ``allow_missing=True`` (``--allow-missing``, e.g. frozen parameters saved with
    ``exclude_frozen_parameters``) keeps the base weights for them, lists them in the log and in
    ``CONSOLIDATED_FROM.txt``.
    """
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from pvllm.models.builder import load_family
    from pvllm.models.families import resolve_class

    root, found_tag = find_zero_tag(ckpt_dir)
    tag = tag or found_tag
    state = get_fp32_state_dict_from_zero_checkpoint(str(root), tag=tag)
    # the base model's class from the family table (Video-LLaVA, its swapped-encoder composite, Qwen2.5-VL, ...)
    model_cls = resolve_class(load_family(str(base_dir)).model_class)
    model = model_cls.from_pretrained(base_dir, dtype=torch.float32)
    expected = model.state_dict()
    prefix = _match_prefix(list(state), set(expected))
    state = {k[len(prefix) :]: v for k, v in state.items()}
    # tied or aliased tensors appear under one name only: missing under one name is not missing
    loaded = {expected[k].data_ptr() for k in state if k in expected and expected[k].numel()}
    missing = sorted(k for k in set(expected) - set(state) if expected[k].data_ptr() not in loaded)
    if missing and not allow_missing:
        raise MissingTensorsError(
            f"{ckpt_dir}: {len(missing)} tensor(s) of the model are not in the checkpoint, the result would "
            f"hold base weights for them: {missing[:8]}{' ...' if len(missing) > 8 else ''} "
            "(pass --allow-missing / allow_missing=True if they are frozen parameters saved with "
            "exclude_frozen_parameters)")
    if missing:
        log.warning("allow_missing: %d tensors not in the checkpoint keep the base weights: %s", len(missing),
                    missing[:8])
    result = model.load_state_dict(state, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys  # excluded by _match_prefix
    model.to(dtype)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, kill_name="hf_export") as tmp:  # complete, or the previous one
        model.save_pretrained(tmp)
        base_dir = Path(base_dir)
        for pattern in _PROCESSOR_GLOBS:
            for f in base_dir.glob(pattern):
                if f.is_file():
                    shutil.copy2(f, tmp / f.name)
        (tmp / "CONSOLIDATED_FROM.txt").write_text(
            f"{Path(ckpt_dir).resolve()} tag={tag}\nbase={base_dir}\n"
            + (f"base weights kept (allow_missing) for {len(missing)} tensors: {missing}\n" if missing else ""))
    log.info("consolidated %s (tag %s, %d tensors) -> %s", ckpt_dir, tag, len(state), out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ckpt_dir", help="DeepSpeed save_checkpoint dir or Lightning DeepSpeed .ckpt dir")
    p.add_argument("out_dir", help="HF directory to write")
    p.add_argument(
        "--base", required=True, help="HF directory of the trained model's architecture + processor"
    )
    p.add_argument("--tag", default=None, help="checkpoint tag (default: `latest`)")
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"],
                   help="weights written (default bf16, what a user loads; float32 keeps the fp32 masters exactly)")
    p.add_argument("--allow-missing", action="store_true",
                   help="keep base weights for model tensors absent from the checkpoint (listed) instead of failing")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    consolidate_zero_checkpoint(a.ckpt_dir, a.out_dir, a.base, a.tag, getattr(torch, a.dtype), a.allow_missing)


if __name__ == "__main__":
    main()
