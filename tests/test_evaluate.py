"""evaluate.py end to end with the tiny model: resumable generation, shards, identical histories."""

import json
import logging

import pytest

from pvllm.utils.jsonl import load_jsonl
from tests.entrypoints import run_evaluate


class _Result:
    def __init__(self, returncode: int, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, "", stderr


def _run(args, check=True):
    """evaluate.py in-process; returns an object like a finished process (log text in .stderr)."""
    run_dir = next(a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir="))
    args = [a for a in args if not a.startswith("hydra.run.dir=")]
    handler = _Capture()
    logger = logging.getLogger("pvllm")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        run_evaluate(args, output_dir=run_dir)
        code = 0
    except Exception as e:  # noqa: BLE001 - the test inspects the message
        if check:
            raise
        handler.lines.append(f"{type(e).__name__}: {e}")
        code = 1
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    return _Result(code, "\n".join(handler.lines))


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture()
def base_args(tmp_path, tiny_model_dir):
    return ["generator=pvllm", f"generator.pretrained={tiny_model_dir}", "generator.greedy=true",
            "generator.sampling.max_new_tokens=8", "rater=lexical", "samples_per_user=2", "~logger",
            f"histories_file={tmp_path / 'histories.jsonl'}"]


def test_interrupted_evaluate_resumes_without_regenerating(tmp_path, base_args):
    d = tmp_path / "run"
    _run(base_args + [f"hydra.run.dir={d}", "stage=generate"])
    full = (d / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(full) == 8 and len({json.loads(x)["sample_id"] for x in full}) == 8
    # simulate a kill: 3 finished rows and a torn 4th line
    (d / "predictions.jsonl").write_text("\n".join(full[:3]) + "\n" + full[3][:25], encoding="utf-8")
    proc = _run(base_args + [f"hydra.run.dir={d}"])
    assert "3 done, 5 to generate" in proc.stdout + proc.stderr
    assert "predictions.jsonl:4: dropped a torn last line" in proc.stderr  # logged, not silent (issue 16)
    again = (d / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert again[:3] == full[:3]  # finished rows untouched
    def strip(lines):  # latency differs between runs; everything else must not
        return sorted(json.dumps({k: v for k, v in json.loads(x).items() if k != "latency_s"}) for x in lines)

    assert strip(again) == strip(full)  # greedy: regenerated rows identical, each id once
    summary = json.loads((d / "summary.json").read_text())
    assert summary["n"] == 8 and summary["n_generation_failed"] == 0
    assert summary["n_torn_last_line"] == 1  # in summary.json too, not only the log (issue 25 item 9)
    assert {"BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "FICL-E", "FICL-S", "FICL-R"} <= set(summary)
    # a third run generates nothing; another decoding setting is refused instead of mixed in
    assert "8 done, 0 to generate" in (lambda p: p.stdout + p.stderr)(_run(base_args + [f"hydra.run.dir={d}"]))
    bad = _run(base_args + [f"hydra.run.dir={d}", "generator.greedy=false"], check=False)
    assert bad.returncode != 0 and "use another run directory" in bad.stderr


def test_shards_merge_to_exactly_once(tmp_path, base_args):
    d = tmp_path / "sharded"
    for shard in (0, 1):
        _run(base_args + [f"hydra.run.dir={d}", f"shard={shard}", "num_shards=2", "stage=generate"])
    s0 = load_jsonl(d / "predictions.shard0-of-2.jsonl")
    s1 = load_jsonl(d / "predictions.shard1-of-2.jsonl")
    assert len(s0) == len(s1) == 4 and not {r["sample_id"] for r in s0} & {r["sample_id"] for r in s1}
    _run(base_args + [f"hydra.run.dir={d}", "num_shards=2", "stage=score"])
    merged = load_jsonl(d / "predictions.jsonl")
    assert [r["sample_id"] for r in merged] == [r["sample_id"] for r in load_jsonl(tmp_path / "histories.jsonl")]
    # a duplicated id across shards is refused before scoring
    with (d / "predictions.shard1-of-2.jsonl").open("a") as f:
        f.write(json.dumps(s0[0]) + "\n")
    bad = _run(base_args + [f"hydra.run.dir={d}", "num_shards=2", "stage=score"], check=False)
    assert bad.returncode != 0 and "1 duplicated" in bad.stderr


def test_bad_config_lists_all_errors_before_work(tmp_path, base_args):
    bad = _run(base_args + [f"hydra.run.dir={tmp_path / 'x'}", "history.k=20", "split=dev", "shard=3"], check=False)
    assert bad.returncode != 0
    for msg in ("history.k: must be an integer in [0, 15]", "split: train | val | test", "shard/num_shards"):
        assert msg in bad.stderr
    assert not (tmp_path / "x" / "predictions.jsonl").exists()
    typo = _run(["generator=pvlm", f"hydra.run.dir={tmp_path / 'y'}"], check=False)
    assert typo.returncode != 0 and "pvllm" in typo.stderr  # Hydra lists the valid options
