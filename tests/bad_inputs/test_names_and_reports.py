"""Recorded names and report joins: Gemini Flash and Pro are two generators, and reports never average or
pick between runs that were produced differently (pvllm.identity)."""

from __future__ import annotations

import json

import pytest

from pvllm.identity import IdentityConflict
from pvllm.reports import table4, table5
from pvllm.reports.qualitative import check_same_histories
from pvllm.reports.table3 import load_alignment_set
from pvllm.utils.jsonl import load_jsonl, write_jsonl
from tests.bad_inputs.conftest import evaluate
from tests.entrypoints import compose_config
from tests.fakes.gemini_server import FakeGeminiServer
from tests.run_summaries import write_run


def test_gemini_flash_and_pro_are_recorded_as_two_generators(tmp_path, mini_ds, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-names-test")
    monkeypatch.delenv("GOOGLE_GEMINI_BASE_URL", raising=False)
    runs = {}
    with FakeGeminiServer() as server:
        for name in ("gemini_flash", "gemini_pro"):
            args = [f"data.root={mini_ds}", f"generator={name}", f"generator.base_url={server.url}", "~rater",
                    "~logger", f"paths.output_root={tmp_path / 'out'}", "generator.retry.initial_delay_s=0.01"]
            runs[name] = evaluate(args, tmp_path / name)
    for name, s in runs.items():
        preds = load_jsonl(tmp_path / name / "predictions.jsonl")
        assert {p["generator"] for p in preds} == {name} and {p["generator_class"] for p in preds} == {"gemini"}
        assert s["generator"] == name and s["n_scored"] == 4
    # Table 3's alignment set (predictions of several models in one file) keeps them apart
    write_jsonl(tmp_path / "set" / "predictions.jsonl",
                load_jsonl(tmp_path / "gemini_flash" / "predictions.jsonl")
                + load_jsonl(tmp_path / "gemini_pro" / "predictions.jsonl"))
    (tmp_path / "set" / "references.jsonl").write_text("")
    preds, _, _ = load_alignment_set(tmp_path / "set")
    assert sorted(preds) == ["gemini_flash", "gemini_pro"] and all(len(v) == 4 for v in preds.values())
    # the qualitative page: two columns from the same histories; one label for both is refused
    loaded = [{"dir": tmp_path / n, "label": n} for n in runs]
    check_same_histories(loaded)
    with pytest.raises(ValueError, match=r"share the column label\(s\) \['gemini'\]"):
        check_same_histories([{**r, "label": "gemini"} for r in loaded])


def test_table4_refuses_to_average_two_checkpoints_under_one_name(tmp_path):
    a = write_run(tmp_path / "eval", "a", history_seed=1, **{"BLEU-4": 1.0})
    b = write_run(tmp_path / "eval", "b", history_seed=2, model="weights-B", **{"BLEU-4": 3.0})
    cfg = compose_config("evaluate", ["experiment=table4", f"paths.output_root={tmp_path}"], tmp_path / "r")
    with pytest.raises(IdentityConflict, match=rf"runs {a} .* and {b} .* produced differently "
                                               r"\(generation.generator.model: 'weights-A' vs 'weights-B'\)"):
        table4.report(cfg, runs_dir=str(tmp_path / "eval"))
    # the same checkpoint with resampled histories is one row, mean ± std of both
    (b / "summary.json").unlink()
    write_run(tmp_path / "eval", "c", history_seed=2, **{"BLEU-4": 3.0})
    (row,) = table4.report(cfg, runs_dir=str(tmp_path / "eval"))
    assert row["BLEU-4"] == "2.00 ± 1.41" and row["history_seeds"] == "1,2"


def test_table4_split_from_two_datasets_is_an_error(tmp_path):
    write_run(tmp_path / "eval", "a", generator="pvllm")
    write_run(tmp_path / "eval", "b", generator="text_only", dataset="records-B")
    with pytest.raises(IdentityConflict, match=r"Table 4, val split: .*histories.dataset_records: "
                                               r"'records-A' vs 'records-B'"):
        table4.report(None, runs_dir=str(tmp_path / "eval"))


def test_table5_refuses_a_mix_of_datasets_and_unidentified_runs(tmp_path):
    write_run(tmp_path / "eval", "none", history_mode="none")
    write_run(tmp_path / "eval", "k", history_mode="k", dataset="records-B")
    cfg = compose_config("evaluate", ["experiment=table5_history", f"paths.output_root={tmp_path}"], tmp_path / "r")
    with pytest.raises(IdentityConflict, match=r"histories.dataset_records: 'records-B' vs 'records-A'"):
        table5.report(cfg, runs_dir=str(tmp_path / "eval"), generator="pvllm")
    old = tmp_path / "old"
    d = write_run(old, "legacy")
    s = json.loads((d / "summary.json").read_text())
    del s["identity"]
    (d / "summary.json").write_text(json.dumps(s))
    with pytest.raises(IdentityConflict, match=rf"run {d} has no recorded identity .* stage=score"):
        table5.report(cfg, runs_dir=str(old), generator="pvllm")
