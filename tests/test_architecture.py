"""Imports point down the floors of docs/architecture.md (issue 26 items 1 and 7): every import of every module
under pvllm/ (module-level and inside functions), walked with `ast`, goes to its own room or to a lower floor;
the floors are read from the table of docs/architecture.md, so the document and the check cannot drift."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import REPO

ENTRY, FOUNDATION = 6, 0  # the two floors whose rooms may import each other

# Imports that still point up and are fixed on another branch: (module file, imported module) -> who owns the fix.
# Each is named; one that no longer occurs fails the test (remove it here).
TEMPORARY: dict[tuple[str, str], str] = {}


def floors() -> dict[str, int]:
    """Room -> floor, from the table of docs/architecture.md. A room is a package (`pvllm/data/` -> `pvllm.data`)
    or a module (`pvllm/prompt.py` -> `pvllm.prompt`); the entry scripts at the repo root are left out."""
    out: dict[str, int] = {}
    for line in (REPO / "docs" / "architecture.md").read_text().splitlines():
        m = re.match(r"\|\s*(\d)[^|]*\|(.*)\|\s*$", line)
        if not m:
            continue
        for path in re.findall(r"`([^`]+)`", m.group(2)):
            if path.startswith("pvllm/"):
                out[path.removesuffix("/").removesuffix(".py").removesuffix("/__init__").replace("/", ".")] = int(
                    m.group(1))
    return out


def room_of(module: str, rooms: dict[str, int]) -> str | None:
    """The longest room that is ``module`` or contains it (``pvllm.data.build`` -> ``pvllm.data``); the room
    ``pvllm`` (pvllm/__init__.py) holds only itself."""
    best = None
    for r in rooms:
        if (module == r or (r != "pvllm" and module.startswith(r + "."))) and (best is None or len(r) > len(best)):
            best = r
    return best


def imports(source: str) -> list[tuple[int, str]]:
    """(line, module) of every pvllm import in ``source``; ``from pvllm import x`` is ``pvllm.x``."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "pvllm"]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"line {node.lineno}: relative import (write the absolute pvllm.… path)"
            if node.module == "pvllm":
                out += [(node.lineno, f"pvllm.{a.name}") for a in node.names]
            elif node.module and node.module.split(".")[0] == "pvllm":
                out.append((node.lineno, node.module))
    return out


def violations(module: str, source: str, rooms: dict[str, int]) -> list[tuple[int, str, str]]:
    """(line, imported module, why) of each import of ``module`` that leaves its room upward or sideways."""
    mine = room_of(module, rooms)
    assert mine is not None, f"{module} is in no room of docs/architecture.md: add it to the table"
    out = []
    for line, target in imports(source):
        theirs = room_of(target, rooms)
        if theirs is None:
            out.append((line, target, "imports a module in no room"))
        elif theirs != mine and (rooms[theirs] > rooms[mine] or (
                rooms[theirs] == rooms[mine] and rooms[mine] not in (ENTRY, FOUNDATION))):
            where = "a floor above" if rooms[theirs] > rooms[mine] else "another room on its floor"
            out.append((line, target, f"{mine} (floor {rooms[mine]}) imports {theirs}, {where} "
                                      f"(floor {rooms[theirs]})"))
    return out


def modules() -> list[tuple[str, Path]]:
    out = []
    for f in sorted((REPO / "pvllm").rglob("*.py")):
        parts = f.relative_to(REPO).with_suffix("").parts
        out.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), f))
    return out


def test_the_floors_of_the_document():
    rooms = floors()
    assert rooms["pvllm.prompt"] == rooms["pvllm.config"] == rooms["pvllm.identity"] == rooms["pvllm.utils"] == 0
    assert rooms["pvllm.clients"] == 1 and rooms["pvllm.data"] == rooms["pvllm.models"] == 2
    assert rooms["pvllm.raters"] == 3 < rooms["pvllm.metrics"] == rooms["pvllm.generators"] == 4
    assert rooms["pvllm.reports"] == rooms["pvllm.annotate"] == 5 < rooms["pvllm.evaluation"] == ENTRY


def test_the_walk_finds_imports_that_point_up_or_sideways():
    """The checker itself, on sources written here: what it must flag and what it must let through."""
    rooms = floors()
    src = ("import json\nfrom pvllm.prompt import chat_prompt\nimport pvllm.utils.jsonl\n"
           "def f():\n    from pvllm.models.families import FAMILIES\n    from pvllm import evaluation\n"
           "    from pvllm.data.dataset import PerVidCom\n")
    found = violations("pvllm.data.x", src, rooms)
    assert [(line, t) for line, t, _ in found] == [(5, "pvllm.models.families"), (6, "pvllm.evaluation")]
    assert "another room on its floor" in found[0][2] and "a floor above" in found[1][2]
    assert violations("pvllm.raters.x", "from pvllm.metrics.ficl import x\n", rooms)
    assert not violations("pvllm.metrics.x", "from pvllm.raters.base import x\n", rooms)  # metrics use raters
    assert not violations("pvllm.evaluation", "from pvllm.demo import x\nfrom pvllm.reports import y\n", rooms)
    assert not violations("pvllm.config", "from pvllm.prompt import x\n", rooms)  # foundation rooms
    assert violations("pvllm.config", "from pvllm.clients import x\n", rooms)
    with pytest.raises(AssertionError, match="in no room"):
        violations("pvllm.newroom.x", "", rooms)


def test_imports_point_down_the_floors():
    rooms = floors()
    found, seen = [], set()
    for module, path in modules():
        rel = str(path.relative_to(REPO))
        for line, target, why in violations(module, path.read_text(), rooms):
            if (rel, target) in TEMPORARY:
                seen.add((rel, target))
                continue
            found.append(f"{rel}:{line}: imports {target}: {why}")
    assert not found, "imports that point up or sideways (docs/architecture.md):\n" + "\n".join(found)
    assert seen == set(TEMPORARY), f"fixed, remove from TEMPORARY: {sorted(set(TEMPORARY) - seen)}"


def test_data_imports_no_model():
    """The acceptance line of issue 26, on its own: nothing under pvllm/data/ imports pvllm.models."""
    bad = [f"{p.relative_to(REPO)}:{line}: {t}" for m, p in modules() if m.startswith("pvllm.data")
           for line, t in imports(p.read_text()) if t.startswith("pvllm.models")
           and (str(p.relative_to(REPO)), t) not in TEMPORARY]
    assert not bad, bad
