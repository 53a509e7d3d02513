"""Identity wherever a result is reused (issue 21 item 5): stage=rank, compare's join by sample id,
a baseline's identity.json, runs without one."""

from __future__ import annotations

import json
import shutil

import pytest

from pvllm.identity import (
    IdentityConflict,
    baseline_generation,
    check_run_generation,
    check_same_samples,
    record_run_identity,
    sidecar,
    write_json,
)
from pvllm.reports.compare import compare
from tests.bad_inputs.conftest import evaluate, tiny_args
from tests.run_summaries import identity


def _run(tmp_path, name, **kw):
    d = tmp_path / name
    d.mkdir()
    write_json(d / "identity.json", identity(**kw))
    (d / "scores.jsonl").write_text("".join(json.dumps({"sample_id": f"s{i}", "metric": "BLEU-4", "value": 1.0 * i,
                                                        "status": "ok"}) + "\n" for i in range(3)))
    return d


def test_compare_joins_runs_that_differ_by_design_only(tmp_path):
    a = _run(tmp_path, "a", history_mode="k", model="weights-A")
    b = _run(tmp_path, "b", history_mode="none", model="weights-B", video_mode="none")
    diff = check_same_samples(a, b)
    assert [d.split(":")[0] for d in diff] == ["generation.generator.model", "generation.video_mode",
                                               "histories.history_mode"]


@pytest.mark.parametrize("field, kw", [("histories.dataset_records", {"dataset": "records-B"}),
                                       ("histories.split", {"split": "test"}),
                                       ("histories.seed", {"seed": 1})])
def test_compare_refuses_runs_of_other_samples(tmp_path, field, kw):
    a, b = _run(tmp_path, "a"), _run(tmp_path, "b", **kw)
    with pytest.raises(IdentityConflict, match=rf"runs {a} .* and {b} .* hold different samples .*{field}: "):
        compare(a, b, resamples=10)


def test_compare_refuses_other_candidates_and_runs_without_identity(tmp_path):
    a, b = _run(tmp_path, "a"), _run(tmp_path, "b")
    for d, sha in ((a, "aaa"), (b, "bbb")):
        (d / "ranking_summary.json").write_text(json.dumps({"candidates_sha256": sha}))
    with pytest.raises(IdentityConflict, match="ranking candidates file: sha256 aaa vs bbb"):
        check_same_samples(a, b)
    (b / "identity.json").unlink()
    with pytest.raises(IdentityConflict, match=rf"{b} has no identity.json"):
        compare(a, b, resamples=10)


def test_baseline_writes_identity_like_a_generator(tmp_path):
    hist = tmp_path / "histories.jsonl"
    hist.write_text("")
    write_json(sidecar(hist), identity()["histories"])
    run = tmp_path / "baseline"
    ident = record_run_identity(run, hist, baseline_generation("popularity", {"n": 20}))
    assert json.loads((run / "identity.json").read_text()) == ident
    assert ident["generation"]["generator"] == {"name": "popularity", "class": "baseline", "model": None,
                                                "weights": None, "generation": {"n": 20}}
    assert record_run_identity(run, hist, baseline_generation("popularity", {"n": 20})) == ident  # resumable
    with pytest.raises(IdentityConflict, match=r"holds run \w+ but this evaluation is run \w+ .*generation.n"):
        record_run_identity(run, hist, baseline_generation("popularity", {"n": 10}))


def test_results_without_identity_json_are_refused(tmp_path):
    run = tmp_path / "old"
    run.mkdir()
    (run / "ranking.jsonl").write_text("")
    with pytest.raises(IdentityConflict, match=rf"{run} holds ranking.jsonl but no identity.json"):
        check_run_generation(run, identity())


def test_stage_rank_checks_the_generation_identity(tmp_path, tiny_model_dir):
    from tests.bad_inputs.conftest import write_dataset

    ds = write_dataset(tmp_path / "ds")
    evaluate(tiny_args(tmp_path, tiny_model_dir, ds, stage="generate"), tmp_path / "run")
    other = tmp_path / "other_model"
    shutil.copytree(tiny_model_dir, other)
    with pytest.raises(IdentityConflict, match=r"holds run \w+ but this evaluation is run \w+ .*generator.model"):
        evaluate(tiny_args(tmp_path, tiny_model_dir, ds, stage="rank", **{"generator.pretrained": other}),
                 tmp_path / "run")
    assert not (tmp_path / "run" / "ranking.jsonl").exists()
