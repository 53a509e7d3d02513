"""Copy rate and diversity, bootstrap intervals over users, the paired comparison of two runs."""

import json
import math

import pytest

from pvllm.metrics.bootstrap import bootstrap_ci, paired_test
from pvllm.metrics.diversity import copy_diversity, distinct_n, edit_similarity, tokens
from pvllm.reports.compare import compare, main
from pvllm.utils.jsonl import write_jsonl


def _preds(texts, history=("this bike is SO GOOD 😍😍", "worst edit ever. 2/10"), ref="nice clip"):
    return [
        {
            "sample_id": f"s{i}",
            "user_id": f"u{i % 3}",
            "video_id": "v1",
            "text": t,
            "error": None,
            "history": list(history),
            "reference": ref,
        }
        for i, t in enumerate(texts)
    ]


def test_copy_rate_of_history_lines_is_100_and_of_unrelated_text_is_0():
    hist = ["this bike is SO GOOD 😍😍", "worst edit ever. 2/10"]
    copies = _preds(
        [hist[0], hist[1], "This bike is so good 😍😍 ", "worst edit ever 2/10"]
    )  # case/space/punct
    s = copy_diversity(copies, {"v1": "Bikes in the city"})
    assert s["copy_history"] == 100.0 and s["copy_title"] == 0.0 and s["copy_n_with_history"] == 4
    unrelated = copy_diversity(
        _preds(["Quarterly earnings beat expectations"] * 4), {"v1": "Bikes in the city"}
    )
    assert unrelated["copy_history"] == 0.0
    title = copy_diversity(_preds(["bikes in the city!"]), {"v1": "Bikes in the city"})
    assert title["copy_title"] == 100.0
    assert copy_diversity(_preds(["x"]), {"v1": None})["copy_title"] is None  # no title: n/a, not 0
    # threshold in config: 0.9 by default; a near copy below it is not counted
    assert edit_similarity("abcdefghij", "abcdefghiX") == pytest.approx(0.9)
    assert copy_diversity(_preds(["worst edit ever. 3/10!"]), threshold=0.99)["copy_history"] == 0.0
    failed = _preds(["a"]) + [{**_preds(["b"])[0], "sample_id": "f", "text": None, "error": "boom"}]
    assert copy_diversity(failed)["copy_n_with_history"] == 1  # failures are left out, not scored


def test_distinct_and_length_pinned():
    assert tokens("すごい！ Nice bike 😍") == ["す", "ご", "い", "!", "nice", "bike", "😍"]
    texts = ["a b a", "a b c"]
    assert distinct_n(texts, 1) == pytest.approx(100 * 3 / 6)  # a, b, c of 6 tokens
    assert distinct_n(texts, 2) == pytest.approx(100 * 3 / 4)  # ab, ba, bc of 4 bigrams
    s = copy_diversity(_preds(texts, ref="one two three four"))
    assert s["mean_len"] == 3.0 and s["ref_mean_len"] == 4.0


def test_bootstrap_constant_has_zero_width_and_interval_covers_the_estimate():
    users = {f"s{i}": f"u{i % 7}" for i in range(40)}
    const = bootstrap_ci({s: 42.0 for s in users}, users, resamples=500, seed=0)
    assert const == {"mean": 42.0, "lo": 42.0, "hi": 42.0, "n_users": 7}
    vals = {s: float((i * 37) % 11) for i, s in enumerate(users)}
    ci = bootstrap_ci(vals, users, resamples=2000, seed=3)
    assert ci["mean"] == pytest.approx(sum(vals.values()) / 40)
    assert ci["lo"] < ci["mean"] < ci["hi"] and ci["hi"] - ci["lo"] > 0.5
    assert bootstrap_ci(vals, users, resamples=2000, seed=3) == ci  # seeded
    # a user with many samples counts through its samples: resampling is by user
    assert bootstrap_ci(vals, users, resamples=2000, seed=4) != ci


def test_paired_test_detects_a_shift_and_not_noise():
    users = {f"s{i}": f"u{i}" for i in range(30)}
    a = {s: float(i % 5) for i, s in enumerate(users)}
    same = paired_test(a, dict(a), users, resamples=2000)
    assert same["diff"] == 0 and same["lo"] == same["hi"] == 0 and same["p_permutation"] == 1.0
    shifted = paired_test(a, {s: v + 2.0 for s, v in a.items()}, users, resamples=2000)
    assert shifted["diff"] == pytest.approx(2.0) and shifted["lo"] == shifted["hi"] == pytest.approx(2.0)
    assert shifted["p_permutation"] < 0.001
    partial = paired_test(a, {s: v for s, v in list(a.items())[:10]}, users)
    assert partial["n_shared"] == 10


def test_compare_cli_on_two_run_directories(tmp_path, capsys):
    from pvllm.identity import write_json
    from tests.run_summaries import identity

    for name, bump in (("A", 0.0), ("B", 10.0)):
        d = tmp_path / name
        d.mkdir()
        write_json(d / "identity.json", identity(model=f"weights-{name}"))  # same samples, two models
        write_jsonl(d / "predictions.jsonl", _preds(["nice clip", "worst edit ever. 2/10", "meh", "ok"]))
        write_jsonl(
            d / "scores.jsonl",
            [
                {"sample_id": f"s{i}", "metric": "BLEU-4", "value": 10.0 * i + bump, "status": "ok"}
                for i in range(4)
            ],
        )
    rows = compare(tmp_path / "A", tmp_path / "B", resamples=500)
    bleu = next(r for r in rows if r["metric"] == "BLEU-4")
    assert bleu["n_shared"] == 4 and bleu["n_users"] == 3 and bleu["diff"] == pytest.approx(10.0)
    assert bleu["mean_A"] == pytest.approx(15.0) and bleu["mean_B"] == pytest.approx(25.0)
    copy = next(r for r in rows if r["metric"] == "copy_history")
    assert copy["mean_A"] == pytest.approx(25.0) and copy["diff"] == 0
    assert (
        main(
            [
                str(tmp_path / "A"),
                str(tmp_path / "B"),
                "--resamples",
                "200",
                "--json",
                str(tmp_path / "c.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "differing by design: generation.generator.model: 'weights-A' vs 'weights-B'" in out
    assert "| BLEU-4 | 4 | 3 | 15.00 | 25.00 | 10.00 |" in out
    assert not math.isnan(json.loads((tmp_path / "c.json").read_text())[0]["p_permutation"])


def test_copy_columns_and_intervals_in_the_table4_outputs(tmp_path):
    from pvllm.reports.summary_table import format_table
    from pvllm.reports.table4 import table4_rows, to_markdown
    from tests.run_summaries import identity

    s = {
        "split": "val",
        "generator": "pvllm",
        "history_mode": "k",
        "k": 5,
        "seed": 0,
        "history_seed": 0,
        "BLEU-4": 3.0,
        "copy_history": 25.0,
        "copy_title": 0.0,
        "distinct-1": 40.0,
        "distinct-2": 70.0,
        "mean_len": 6.5,
        "ref_mean_len": 7.0,
        "n": 12,
        "ci95": {
            "BLEU-4": {"mean": 2.5, "lo": 1.0, "hi": 4.25, "n_users": 4},
            "copy_history": {"mean": 25.0, "lo": 0.0, "hi": 50.0, "n_users": 4},
        },
    }
    s["identity"] = identity()  # what produced it (pvllm.identity): reports join runs by it
    printed = format_table([("PV-LLM", s)])
    assert "| copy-H | copy-T | dist-1 | dist-2 | len | ref len |" in printed
    assert "| 25.0 | 0.0 | 40.0 | 70.0 | 6.5 | 7.0 |" in printed
    assert "| PV-LLM | 2.50 [1.00, 4.25] | 25.00 [0.00, 50.00] |" in printed
    md = to_markdown(table4_rows([s]))
    assert "| 25.00 | 0.00 | 40.00 | 70.00 | 6.50 | 7.00 |" in md
    assert "| val | pvllm | 2.50 [1.00, 4.25] | 25.00 [0.00, 50.00] |" in md
