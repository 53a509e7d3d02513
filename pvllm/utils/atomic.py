"""Writes that a kill or a full disk cannot leave half done.

A directory (an HF export, a sharded checkpoint) is written under a hidden temporary name beside its final
name (``partial_path``: ``.partial-<digest of the name>``) and renamed into place only when complete; the
previous complete one is kept until then. A file is
written to a temporary file and renamed. A write that fails (``ENOSPC``: disk full) removes its temporary
and raises ``WriteFailed`` naming the final path, so the rerun after space is freed starts clean.

Test hook (documented in docs/bad_inputs.md, used by tests/bad_inputs/test_kill_during_save.py): with
``PVLLM_TEST_KILL_AT=<point>`` (or ``<point>:<n>``, the n-th time it is reached) in the environment, the
process SIGKILLs itself at ``kill_point(<point>)`` after cutting the partly written files to half their size
(a write cut short). Points: ``lightning_checkpoint``, ``deepspeed_checkpoint``, ``hf_export``. Never set
it otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

KILL_ENV = "PVLLM_TEST_KILL_AT"
_reached: dict[str, int] = {}


class WriteFailed(OSError):
    """Writing ``path`` failed (e.g. disk full); nothing partial is left under its name."""

    def __str__(self) -> str:  # the message alone (OSError would wrap it in "[Errno 28] ...: 'path'")
        return str(self.args[1]) if len(self.args) > 1 else super().__str__()


def write_failed(path: str | os.PathLike, exc: BaseException) -> WriteFailed:
    """The error to raise for a failed write of ``path``: names the path and what to do."""
    code = getattr(exc, "errno", None)
    what = "no space left on device" if code == errno.ENOSPC else f"{type(exc).__name__}: {exc}"
    err = WriteFailed(code or errno.EIO, f"could not write {path}: {what}; nothing partial was kept under that "
                                         "name: free space (or fix the cause) and rerun, finished work is reused")
    err.filename = str(path)
    return err


def kill_point(point: str, partial: str | os.PathLike | None = None) -> None:
    """Test-only: SIGKILL this process here when ``PVLLM_TEST_KILL_AT`` names ``point`` (see module doc)."""
    want = os.environ.get(KILL_ENV, "")
    name, _, nth = want.partition(":")
    if name != point:
        return
    _reached[point] = _reached.get(point, 0) + 1
    if _reached[point] != int(nth or 1):
        return
    if partial is not None:
        for f in ([Path(partial)] if Path(partial).is_file() else sorted(Path(partial).rglob("*"))):
            if f.is_file():
                with open(f, "r+b") as fh:  # a write cut short: the first half of the bytes reached the disk
                    fh.truncate(f.stat().st_size // 2)
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.name.encode()).hexdigest()[:16]


# Hidden names without the target's name in them: Lightning finds checkpoints by substrings of file names
# ("last" for ckpt_path="last", "hpc_ckpt_" + digits for SLURM resume), and must never pick a partial one.
def partial_path(path: str | os.PathLike) -> Path:
    """Where ``path`` is written before it is renamed into place (a file or a directory)."""
    path = Path(path)
    return path.with_name(f".partial-{_digest(path)}")


def _tmp(path: Path) -> Path:
    return partial_path(path)


def _old(path: Path) -> Path:
    return path.with_name(f".previous-{_digest(path)}")


def _remove(p: Path) -> None:
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.exists():
        shutil.rmtree(p)


def recover_dir(path: str | os.PathLike) -> Path | None:
    """Finish or undo a swap of ``path`` that a kill interrupted; returns ``path`` if a complete one exists.

    The previous one (``.previous-*``) exists only between the two renames of a swap, after the partial one
    (``partial_path``) was complete: then the new one is promoted (or the old one restored if the new is
    gone). A lone partial one is a write cut short and is removed.
    """
    path = Path(path)
    tmp, old = _tmp(path), _old(path)
    if not path.exists() and old.exists():
        os.replace(tmp if tmp.exists() else old, path)
    for leftover in (tmp, old):
        if leftover.exists() or leftover.is_symlink():
            _remove(leftover)
    return path if path.exists() else None


def swap_in(tmp: Path, path: Path) -> None:
    """Put the complete ``tmp`` at ``path`` (the previous complete one is removed only afterwards)."""
    old = _old(path)
    if path.exists():
        if old.exists():
            _remove(old)
        os.replace(path, old)
    os.replace(tmp, path)
    if old.exists():
        _remove(old)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, kill_name: str | None = None) -> Iterator[Path]:
    """Yield a temporary directory to fill; on success it replaces ``path`` in one rename.

    On an error the temporary is removed, ``path`` keeps its previous complete content and an ``OSError``
    is re-raised as ``WriteFailed`` naming ``path``. ``kill_name`` is the test hook's point (module doc).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(path)
    tmp = _tmp(path)
    tmp.mkdir()
    try:
        yield tmp
        if kill_name:
            kill_point(kill_name, partial=tmp)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and not isinstance(e, WriteFailed):
            raise write_failed(path, e) from e
        raise
    swap_in(tmp, path)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write a whole file through a temporary file + fsync + rename; a failure names ``path``."""
    path = Path(path)
    tmp = partial_path(path).with_suffix(f".{os.getpid()}")  # concurrent writers of one cache entry
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise write_failed(path, e) from e
