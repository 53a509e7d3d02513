"""JSONL files: the contracts between the parts (see docs/data_format.md)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pvllm.utils.atomic import write_failed
from pvllm.utils.secrets import values_redactor

log = logging.getLogger(__name__)


class JsonlError(ValueError):
    """A JSONL file cannot be read; the message names file, line (and byte offset for bad UTF-8)."""


def _lines(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """(line number, byte offset of the line, raw line) of a file read in binary."""
    offset = 0
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            yield lineno, offset, raw
            offset += len(raw)


def _decode(path: Path, lineno: int, offset: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise JsonlError(
            f"{path}:{lineno}: not UTF-8 at byte offset {offset + e.start} of the file (byte "
            f"0x{raw[e.start]:02x}, column {e.start + 1} of the line): re-encode the file as UTF-8") from None


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line_number, record) for each non-empty line; a bad line raises naming file and line."""
    path = Path(path)
    for lineno, offset, raw in _lines(path):
        line = _decode(path, lineno, offset, raw)
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise JsonlError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(rec, dict):
            raise JsonlError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
        yield lineno, rec


def load_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    return [rec for _, rec in read_jsonl(path)]


def read_jsonl_tolerant(path: str | os.PathLike, torn: list[str] | None = None) -> list[dict[str, Any]]:
    """Read an append-only file that a killed process may have left with a torn last line.

    Only a truncated *last* line (no newline after it) is dropped, with a warning naming it, and
    appended to ``torn`` when given (for the run's counts); a bad line elsewhere raises.
    """
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for lineno, offset, raw in _lines(path):
        last = not raw.endswith(b"\n")  # only the file's final line can lack its newline
        try:
            line = _decode(path, lineno, offset, raw)
            if not line.strip():
                continue
            rec = json.loads(line)
        except (JsonlError, json.JSONDecodeError) as e:
            if last:  # a torn write (also one cut inside a multi-byte character)
                log.warning("%s:%d: dropped a torn last line (%d bytes at byte offset %d, a killed writer): %s",
                            path, lineno, len(raw), offset, raw[:80])
                if torn is not None:
                    torn.append(f"{path}:{lineno}")
                break
            if isinstance(e, JsonlError):
                raise
            raise JsonlError(f"{path}:{lineno}: not valid JSON ({e.msg}); only a torn last line is tolerated") from None
        if not isinstance(rec, dict):
            raise JsonlError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
        out.append(rec)
    return out


def append_jsonl(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> None:
    """Append records and flush+fsync, so a kill right after loses nothing that was written.

    A failed write (disk full) cuts the file back to its size before this call, so no partial line is
    left, and raises ``WriteFailed`` naming the file; the rerun appends these records again.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    redact = values_redactor()  # no secret value in any row (an error message may echo an API key)
    data = "".join(redact(json.dumps(rec, ensure_ascii=False)) + "\n" for rec in records).encode("utf-8")
    size = path.stat().st_size if path.exists() else 0
    try:
        with path.open("ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        with contextlib.suppress(OSError):
            os.truncate(path, size)
        raise write_failed(path, e) from e


def write_jsonl(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> None:
    """Write a whole file atomically (temp file + rename); a failed write leaves the old file, names the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    redact = values_redactor()
    try:
        with tmp.open("w", encoding="utf-8") as f:
            for rec in records:
                f.write(redact(json.dumps(rec, ensure_ascii=False)) + "\n")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise write_failed(path, e) from e
