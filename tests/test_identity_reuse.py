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


@pytest.fixture(scope="module")
def one_step_checkpoint(tmp_path_factory):
    import subprocess
    import sys

    from tests.conftest import REPO

    tmp = tmp_path_factory.mktemp("resume")
    env = dict(__import__("os").environ, PVLLM_OUTPUTS=str(tmp), WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "train.py", "experiment=demo", "trainer.max_steps=1", "logger=csv",
                           "save_hf_model=false", f"hydra.run.dir={tmp / 'run'}", "trainer.enable_progress_bar=false"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, tmp / "run" / "checkpoints" / "last.ckpt"


def _resume(tmp, ckpt, *extra):
    import subprocess
    import sys

    from tests.conftest import REPO

    env = dict(__import__("os").environ, PVLLM_OUTPUTS=str(tmp), WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "train.py", "experiment=demo", "trainer.max_steps=2", "logger=csv",
                           "save_hf_model=false", f"ckpt_path={ckpt}", "trainer.enable_progress_bar=false", *extra],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_resume_refuses_another_seed_naming_both(one_step_checkpoint):
    tmp, ckpt = one_step_checkpoint
    proc = _resume(tmp, ckpt, "seed=1")
    assert proc.returncode != 0
    assert f"{ckpt} was trained on" in proc.stderr and "seed: 0 vs 1" in proc.stderr


def test_resume_refuses_another_dataset_naming_both(one_step_checkpoint, tmp_path):
    from pvllm.identity import dataset_records_digest
    from tests.conftest import SAMPLE

    tmp, ckpt = one_step_checkpoint
    other = tmp_path / "sample"
    shutil.copytree(SAMPLE, other)
    lines = (other / "comments.jsonl").read_text().splitlines()
    (other / "comments.jsonl").write_text("\n".join(lines[:-1]) + "\n")  # one comment fewer
    proc = _resume(tmp, ckpt, f"data.root={other}")
    assert proc.returncode != 0
    want = f"dataset_records: '{dataset_records_digest(SAMPLE)}' vs '{dataset_records_digest(other)}'"
    assert want in proc.stderr, proc.stderr[-2000:]
    ok = _resume(tmp, ckpt)  # the same identity resumes
    assert ok.returncode == 0, ok.stderr[-3000:]
