"""The real-people experiment, shrunk: 12 danmaku users, the tiny model, 2 text-only training steps.

The full run is `python scripts/real_danmaku_text.py` (docs/real_danmaku_text.md); this runs the same
script end to end (import, build, train.py, evaluate.py x 3 history modes with ranking) on comments only.
"""

import subprocess
import sys

import pytest

from tests.conftest import REPO, requires_shared_data


@pytest.mark.slow
@requires_shared_data("comments", "danmaku_sample.jsonl")
def test_shrunk_real_danmaku_text_run(tmp_path):
    doc = tmp_path / "result.md"
    proc = subprocess.run(
        [
            sys.executable,
            "scripts/real_danmaku_text.py",
            "--users",
            "12",
            "--model",
            "tiny",
            "--max-steps",
            "2",
            "--n-candidates",
            "5",
            "--rater",
            "none",
            "--out",
            str(tmp_path / "run"),
            "--doc",
            str(doc),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = doc.read_text()
    assert "12 real users (pseudonymized)" in text and "trained text-only for 2 steps" in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows[1:]] == [
        "| history k=5",
        "| no history",
        "| others' history (k=5)",
        "| *chance*",
    ]
    assert "| *chance* | 20.0 | 100.0 | 100.0 | 45.7 | 3.0 |" in text
    assert not list((tmp_path / "run").rglob("*.mp4"))  # comments only: no video anywhere
