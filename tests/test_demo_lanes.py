"""`make demo` runs its later evaluations two at a time (pvllm.demo.run_lanes): outputs, times, failures."""

from __future__ import annotations

import pytest

from pvllm import demo


def test_lanes_print_every_stage_and_stop_a_failed_lane(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "OUT", tmp_path)
    times: dict[str, float] = {}
    lanes = [[("a one", ["-c", "print('from A')"]), ("b", ["-c", "import sys; sys.exit(3)"]),
              ("c", ["-c", "print('never')"])],
             [("d", ["-c", "import os; print('D threads', os.environ['OMP_NUM_THREADS'])"])]]
    with pytest.raises(SystemExit, match="demo stage 'b' failed"):
        demo.run_lanes(lanes, times)
    out = capsys.readouterr().out
    assert "from A" in out and "D threads 1" in out and "never" not in out
    assert "=== b: " in out and "FAILED (exit 3" in out
    assert set(times) == {"a one", "b", "d"} and (tmp_path / "logs" / "a_one.log").read_text() == "from A\n"


def test_lanes_all_succeed(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "OUT", tmp_path)
    times: dict[str, float] = {}
    demo.run_lanes([[("x", ["-c", "print(1)"])], [("y", ["-c", "print(2)"])]], times)
    assert set(times) == {"x", "y"} and "FAILED" not in capsys.readouterr().out
