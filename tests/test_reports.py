"""Table 3 and Table 4 reports from files, and the experiment configs that run them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pvllm.metrics.ficl import FewShotPool
from pvllm.raters.base import LLMRater
from pvllm.raters.lexical import LexicalRater
from pvllm.reports.table3 import alignment_table, format_correlations, format_table3, load_alignment_set
from pvllm.reports.table4 import collect_runs, table4_rows, to_csv, to_latex, to_markdown
from tests.run_summaries import write_run

ROOT = Path(__file__).resolve().parents[1]
FEWSHOT = ROOT / "data" / "sample" / "fewshot"


def _run(root: Path, name: str, **summary) -> None:
    write_run(root, name, **summary)


def test_table4_groups_splits_and_history_seeds(tmp_path):
    _run(tmp_path, "a", **{"BLEU-4": 1.0, "FICL-E": 30.0, "history_seed": 1})
    _run(tmp_path, "b", **{"BLEU-4": 2.0, "FICL-E": 32.0, "history_seed": 2})
    _run(tmp_path, "c", **{"BLEU-4": 3.0, "FICL-E": 34.0, "history_seed": 3, "n_generation_failed": 1,
                           "n_scored": 9})
    _run(tmp_path, "d", **{"split": "test", "generator": "video_llava", "BLEU-4": 0.84, "FICL-E": math.nan})
    _run(tmp_path, "e", **{"generator": "video_llava", "BLEU-4": 1.08, "history_mode": "none", "k": 0})
    (tmp_path / "no_preds").mkdir()
    (tmp_path / "no_preds" / "summary.json").write_text(json.dumps({"split": "val", "generator": "x"}))
    runs = collect_runs(tmp_path)
    assert len(runs) == 5  # the directory without predictions.jsonl is skipped
    rows = table4_rows(runs)
    assert [(r["split"], r["method"]) for r in rows] == [
        ("val", "pvllm"), ("val", "video_llava [none k=0]"), ("test", "video_llava")
    ]  # fmt: skip
    pv = rows[0]
    assert (
        pv["BLEU-4"] == "2.00 ± 1.00" and pv["FICL-E"] == "32.00 ± 2.00"
    )  # sample std of (1,2,3), (30,32,34)
    assert pv["scored/requested"] == "10/10, 10/10, 9/10" and pv["history_seeds"] == "1,2,3"
    assert rows[2]["FICL-E"] == "-" and rows[2]["BLEU-4"] == "0.84"
    md = to_markdown(rows)
    assert "| *Validation Set* |" in md and "| *Test Set* |" in md
    assert md.index("Validation") < md.index("Test Set")
    tex = to_latex(rows)
    assert r"2.00 $\pm$ 1.00" in tex and r"video\_llava" in tex and r"\multicolumn{3}{c}{FICL-Score}" in tex
    csv_lines = to_csv(rows).splitlines()
    assert csv_lines[0].startswith("split,method,BLEU-4") and len(csv_lines) == 4


def test_table4_history_selection_and_video_ablation_get_their_own_rows(tmp_path):
    """One model with random / recent histories and with the true / a mismatched / no video: five rows (not an
    identity error, not one run replacing another)."""
    _run(tmp_path, "a", **{"BLEU-4": 1.0})
    _run(tmp_path, "b", **{"BLEU-4": 2.0, "history_selection": "recent"})
    _run(tmp_path, "c", **{"BLEU-4": 3.0, "history_selection": "retrieved"})
    _run(tmp_path, "d", **{"BLEU-4": 4.0, "video_mode": "mismatched"})
    _run(tmp_path, "e", **{"BLEU-4": 5.0, "video_mode": "none"})
    rows = table4_rows(collect_runs(tmp_path))
    assert {r["method"]: r["BLEU-4"] for r in rows} == {
        "pvllm": "1.00", "pvllm [recent history]": "2.00", "pvllm [retrieved history]": "3.00",
        "pvllm [video mismatched]": "4.00", "pvllm [video none]": "5.00"}


class ConstantLLM(LLMRater):
    """Gives every item the same scores: ties everywhere, i.e. the random-order expectation."""

    calls = 0

    @property
    def name(self) -> str:
        return "constant/v1"

    def complete(self, prompts):
        ConstantLLM.calls += len(prompts)
        return ["Emotion: 0.5, Style: 0.5, Relevance: 0.5"] * len(prompts)


@pytest.mark.usefixtures("java")  # caption metrics: skipped without Java, failed under CI
def test_table3_on_the_bundled_illustrative_annotations(tmp_path):
    preds, refs, ann = load_alignment_set(FEWSHOT / "val_alignment")
    assert sorted(preds) == [
        "illustrative_generic",
        "illustrative_history_echo",
        "illustrative_reference_edit",
    ]
    pool = FewShotPool.from_dir(FEWSHOT)
    assert "illustrative, not human" in pool.source
    assert not pool.sample_ids & set(refs)  # few-shot samples are never scored
    assert all(s.startswith("train:") for s in pool.sample_ids) and all(s.startswith("val:") for s in refs)
    rows = alignment_table(preds, refs, ann, [LexicalRater(), ConstantLLM()], k_values=(0, 5, 10, 15, 30),
                           fewshot=pool, cache_path=tmp_path / "c.db")  # fmt: skip
    names = [(r["group"], r["metric"]) for r in rows]
    assert names == [
        ("", "BLEU-4"), ("", "METEOR"), ("", "ROUGE-L"), ("", "CIDEr"),
        ("lexical/char-ratio+style-features+word-f1", "FICL"),
        ("constant/v1", "FICL (0)"), ("constant/v1", "FICL (5x3)"), ("constant/v1", "FICL (10x3)"),
        ("constant/v1", "FICL (15x3)"), ("constant/v1", "FICL (30x3)"), ("", "random scores (expected)"),
    ]  # fmt: skip
    by = {(r["group"], r["metric"]): r for r in rows}
    # a constant judge ties all models: exactly the expected NDCG of random scores
    for col in "ESR":
        assert by[("constant/v1", "FICL (5x3)")][col] == pytest.approx(
            by[("", "random scores (expected)")][col]
        )
    assert "n/a" in by[("constant/v1", "FICL (30x3)")]["note"]  # 28 pool samples
    assert by[("", "BLEU-4")]["n_samples"] == 12
    for r in rows[:5]:
        assert all(0 <= r[c] <= 1 for c in "ESR")
    text = format_table3(rows, source="illustrative")
    assert "| *constant/v1* |" in text and "Annotations: illustrative" in text
    bleu = by[("", "BLEU-4")]
    assert bleu["E_n_systems"] == 3 and -1 <= bleu["E_tau_sample"] <= 1 and -1 <= bleu["R_rho_system"] <= 1
    assert bleu["E_n_samples_corr"] + bleu["E_n_samples_undefined"] == 12
    assert "| BLEU-4 |" in format_correlations(rows)


def test_experiment_configs_compose(tmp_path):
    """Both report experiments compose; their report nodes point at functions with matching arguments."""
    import inspect
    import os

    from hydra import compose, initialize_config_dir
    from hydra.utils import get_method

    os.environ.setdefault("PVLLM_ROOT", str(ROOT))
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        for exp in ("table3_alignment", "table4"):
            cfg = compose(config_name="evaluate", overrides=[f"experiment={exp}"])
            node = dict(cfg.report)
            fn = get_method(node.pop("_target_"))
            params = inspect.signature(fn).parameters
            assert "cfg" in params and set(node) <= set(params), (exp, set(node) - set(params))
            assert cfg.stage == "report"
        for name in ("embedding", "lexical", "local_hf_smollm2"):
            cfg = compose(config_name="evaluate", overrides=[f"rater={name}"])
            assert cfg.rater._target_.startswith("pvllm.raters.")
