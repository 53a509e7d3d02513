"""What produced a result: content identities of histories files and evaluation runs (docs/data_format.md).

Names (``data.name``, the generator's config name) only label results; every check and every report join
uses these identities instead:

- a **histories identity**: the dataset's records (sha256 of videos/comments/users.jsonl), the split and the
  draw settings (history mode, k, seed, history_seed, samples_per_user). Stored beside the histories file
  (``<file>.identity.json``) and checked before the file is reused.
- a **run identity**: the histories identity, the target video files the generator read (size + head/tail
  digest), the generator (config name, class, model id, weights digest, decoding parameters), the rater
  (label + parameters) and the FICL few-shot pool. Stored in the run directory (``identity.json``) and in
  ``summary.json``; checked when a run directory is resumed or rescored.

Two identities that differ are a :class:`IdentityConflict` naming both (file or run) and the fields.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pvllm.utils.hashing import file_digest, json_sha256
from pvllm.utils.secrets import redact_values

SCHEMA_VERSION = 2  # summary.json / predictions.jsonl; 2 = identity recorded, `generator` = config name


class IdentityConflict(ValueError):
    """Two results that would be reused, joined or averaged were produced differently."""


def canonical_hash(obj: Any, n: int = 16) -> str:
    """Short sha256 of ``obj`` in canonical JSON (sorted keys)."""
    return json_sha256(obj, n)


def dataset_records_digest(root: str | os.PathLike) -> str:
    """sha256 of the dataset's three record files (what every draw of histories depends on)."""
    root = Path(root)
    h = hashlib.sha256()
    for name in ("videos.jsonl", "comments.jsonl", "users.jsonl"):
        h.update(name.encode() + b"\0" + file_digest(root / name, whole=True).encode())
    return h.hexdigest()[:16]


def files_digest(paths: Iterable[str | os.PathLike], root: str | os.PathLike | None = None) -> str:
    """One digest of several files (a missing one is recorded as missing, not skipped)."""
    h = hashlib.sha256()
    for p in sorted({str(p) for p in paths}):
        rel = os.path.relpath(p, root) if root else p
        d = file_digest(p) if Path(p).is_file() else "missing"
        h.update(f"{rel}\0{d}\n".encode())
    return h.hexdigest()[:16]


def weights_digest(model_id: str) -> str | None:
    """Digest of a local weights file or directory (every file in it); None for a hub or API model name."""
    p = Path(model_id)
    if p.is_file():
        return file_digest(p)
    if p.is_dir():
        files = [f for f in sorted(p.rglob("*")) if f.is_file() and ".cache" not in f.parts]
        return files_digest(files, root=p)
    return None


def histories_identity(records_digest: str, split: str, mode: str, k: int, seed: int, history_seed: int,
                       samples_per_user: int, selection: str = "random", retrieval_model: str | None = None
                       ) -> dict[str, Any]:
    ident = {"dataset_records": records_digest, "split": split, "history_mode": mode, "k": k, "seed": seed,
             "history_seed": history_seed, "samples_per_user": samples_per_user}
    if selection != "random":  # the paper's random draw keeps the identities of earlier files
        ident.update(selection=selection, retrieval_model=retrieval_model)
    return {**ident, "id": canonical_hash(ident)}


def sidecar(histories_file: str | os.PathLike) -> Path:
    p = Path(histories_file)
    return p.with_name(p.name + ".identity.json")


def differing(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the fields where two (nested) identities differ; ``id`` fields are derived."""
    out = []
    for key in sorted(set(a) | set(b)):
        if key in ("id", "run_id"):
            continue
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += differing(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} vs {vb!r}")
    return out


def check_histories_identity(histories_file: str | os.PathLike, current: dict[str, Any]) -> None:
    """The histories file's recorded identity must be ``current``; else IdentityConflict naming both."""
    side = sidecar(histories_file)
    if not side.is_file():
        raise IdentityConflict(
            f"{histories_file} has no identity record ({side.name}; written before identities were recorded), "
            f"so it cannot be checked against dataset {current['dataset_records']}: delete it to redraw")
    stored = json.loads(side.read_text())
    if stored.get("id") != current["id"]:
        raise IdentityConflict(
            f"{histories_file} was drawn as histories {stored.get('id')} but this evaluation is histories "
            f"{current['id']} ({'; '.join(differing(stored, current))}): delete the file or set histories_file")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically (temp file + rename; shards of one run may write the same file at once)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(redact_values(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True)) + "\n")
    os.replace(tmp, path)


def run_identity(histories: dict[str, Any], generation: dict[str, Any], scoring: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    """The full identity of an evaluation run; ``run_id`` hashes everything, ``generation_id`` only what
    produced predictions.jsonl (histories + videos + generator)."""
    gen_part = {"histories": histories, "generation": generation}
    ident = {"schema_version": SCHEMA_VERSION, **gen_part, "scoring": scoring or {}}
    return {**ident, "generation_id": canonical_hash(gen_part), "run_id": canonical_hash(ident)}


def check_run_generation(run_dir: str | os.PathLike, current: dict[str, Any]) -> None:
    """A run directory that already holds predictions must have been made by the same generation identity."""
    path = Path(run_dir) / "identity.json"
    if not path.is_file():
        done = [p.name for pat in ("predictions*.jsonl", "ranking.jsonl") for p in Path(run_dir).glob(pat)]
        if done:
            raise IdentityConflict(
                f"{run_dir} holds {', '.join(sorted(done))} but no identity.json, so nothing says what made them: "
                "use another run directory (hydra.run.dir=...) or delete the old one")
        return
    stored = json.loads(path.read_text())
    if stored.get("generation_id") != current["generation_id"]:
        fields = differing({"histories": stored.get("histories", {}), "generation": stored.get("generation", {})},
                           {"histories": current["histories"], "generation": current["generation"]})
        raise IdentityConflict(
            f"{run_dir} holds run {stored.get('generation_id')} but this evaluation is run "
            f"{current['generation_id']} ({'; '.join(fields)}): use another run directory (hydra.run.dir=...) "
            "or delete the old one")


def stored_run_identity(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(run_dir) / "identity.json"
    return json.loads(path.read_text()) if path.is_file() else None


# ---------------------------------------------------------------------------------------------------
# Reports: select and join runs by identity, never by names alone.


def summary_identity(s: dict[str, Any]) -> dict[str, Any]:
    """The identity recorded in a summary.json (with its ``run_dir``); error for a run without one."""
    ident = s.get("identity")
    if not isinstance(ident, dict) or "run_id" not in ident:
        raise IdentityConflict(
            f"run {s.get('run_dir')} has no recorded identity (summary.json written before schema "
            f"{SCHEMA_VERSION}): rescore it with `python evaluate.py ... stage=score` or move it out of runs_dir")
    return ident


def comparable(ident: dict[str, Any], ignore: Iterable[str] = ()) -> dict[str, Any]:
    """The identity without derived ids and without the dotted fields in ``ignore`` (e.g. the varied one)."""
    out = json.loads(json.dumps(ident, default=str))
    for key in ("run_id", "generation_id"):
        out.pop(key, None)
    out.get("histories", {}).pop("id", None)
    for dotted in ignore:
        node = out
        *parents, last = dotted.split(".")
        for p in parents:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(last, None)
    return out


def check_joinable(runs: list[dict[str, Any]], ignore: Iterable[str], what: str) -> None:
    """All runs must share every identity field except ``ignore`` (the fields a table varies on purpose)."""
    ignore = tuple(ignore)
    first = None
    for s in runs:
        c = comparable(summary_identity(s), ignore)
        if first is None:
            first = (s, c)
            continue
        diff = differing(first[1], c)
        if diff:
            raise IdentityConflict(
                f"{what}: runs {first[0].get('run_dir')} (run {first[0]['identity']['run_id']}) and "
                f"{s.get('run_dir')} (run {s['identity']['run_id']}) were produced differently "
                f"({'; '.join(diff[:6])}); they cannot be averaged or put in one table: select one with "
                "report.runs_dir or move the other away")


def baseline_generation(name: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The generation part of a run identity for a method without a model (a baseline ranker, a rule):
    its name and parameters; no weights, no videos read."""
    return {"generator": {"name": name, "class": "baseline", "model": None, "weights": None,
                          "generation": json.loads(json.dumps(params or {}, default=str))},
            "include_title": False, "videos": None}


def record_run_identity(run_dir: str | os.PathLike, histories_file: str | os.PathLike,
                        generation: dict[str, Any]) -> dict[str, Any]:
    """Write ``run_dir/identity.json`` for results made from ``histories_file`` by ``generation`` (e.g.
    :func:`baseline_generation`), as evaluate.py does for a generator: a run directory that already holds
    another identity, or results without one, is an IdentityConflict. Returns the identity."""
    side = sidecar(histories_file)
    if not side.is_file():
        raise IdentityConflict(f"{histories_file} has no identity record ({side.name}): draw it with evaluate.py")
    ident = run_identity(json.loads(side.read_text()), generation)
    check_run_generation(run_dir, ident)
    if stored_run_identity(run_dir) is None:
        write_json(Path(run_dir) / "identity.json", ident)
    return ident


# What makes two runs' sample ids the same samples (joined by pvllm.reports.compare), and what two
# compared runs may differ in by design (the comparison is about them).
SAMPLE_DEFINING = ("histories.dataset_records", "histories.split", "histories.seed", "histories.samples_per_user")


def check_same_samples(run_a: str | os.PathLike, run_b: str | os.PathLike) -> list[str]:
    """Two runs may be joined by sample id only if their samples are the same: dataset records, split and
    target draw (seed, samples per user) agree, and so do their ranking candidates files when both ranked.
    Returns the fields that differ by design (history mode/k/seed, model, decoding, video); raises
    IdentityConflict naming both runs for a sample-defining difference or a run without identity.json."""
    idents = []
    for run in (run_a, run_b):
        ident = stored_run_identity(run)
        if ident is None:
            raise IdentityConflict(f"{run} has no identity.json: nothing says which samples it holds, so it "
                                   "cannot be joined by sample id (regenerate it with evaluate.py)")
        idents.append(ident)
    a, b = ({"histories": i.get("histories", {}), "generation": i.get("generation", {})} for i in idents)
    diff = differing(a, b)
    bad = [d for d in diff if d.split(":")[0] in SAMPLE_DEFINING]
    cands = [Path(r) / "ranking_summary.json" for r in (run_a, run_b)]
    if all(c.is_file() for c in cands):
        sha = [json.loads(c.read_text()).get("candidates_sha256") for c in cands]
        if sha[0] != sha[1]:
            bad.append(f"ranking candidates file: sha256 {sha[0]} vs {sha[1]}")
    if bad:
        raise IdentityConflict(
            f"runs {run_a} (run {idents[0].get('generation_id')}) and {run_b} (run {idents[1].get('generation_id')}) "
            f"hold different samples under the same ids ({'; '.join(bad)}): they cannot be joined by sample id")
    return [d for d in diff if d.split(":")[0] not in SAMPLE_DEFINING]
