"""Fig. 6, Table 5 and App. A: their sweeps run through Hydra's real multirun launcher (in-process) with
the tiny model, and the plot/tables show exactly the numbers of the runs' summary.json files."""

import json
from pathlib import Path

import hydra
import pytest

from pvllm.metrics.scoring import FAILURE_RULE
from tests.conftest import REPO
from tests.entrypoints import compose_config, entry_module
from tests.run_summaries import write_run


def _multirun(overrides: list[str], output_root: Path) -> None:
    """``python evaluate.py -m ...`` without a new interpreter: the real sweeper and BasicLauncher."""
    import sys

    task = hydra.main(config_path=str(REPO / "conf"), config_name="evaluate", version_base=None)(
        entry_module("evaluate").evaluate
    )
    argv = sys.argv
    sys.argv = [
        "evaluate.py",
        "-m",
        *overrides,
        f"paths.output_root={output_root}",
        "hydra/job_logging=none",  # root: null, so the test process keeps its logging (caplog)
        "hydra/hydra_logging=none",
    ]
    try:
        task()
    finally:
        sys.argv = argv


class _UnigramMeteor:
    """Stands in for METEOR (~5 s per call in its JVM on the shared CPUs; its real values are tested in
    test_caption_metrics.py): these tests are about sweeps and reports, which copy what the summary holds."""

    def compute_score(self, gts, res):
        items = [
            len(set(res[k][0].split()) & set(gts[k][0].split())) / max(1, len(res[k][0].split())) for k in gts
        ]
        return sum(items) / len(items), items


@pytest.fixture(autouse=True)
def fast_meteor(monkeypatch):
    from pvllm.metrics import caption

    monkeypatch.setattr(caption, "_meteor", _UnigramMeteor)


@pytest.fixture()
def tiny_args(tiny_model_dir):
    return [
        "generator=pvllm",
        f"generator.pretrained={tiny_model_dir}",
        "generator.greedy=true",
        "generator.sampling.max_new_tokens=2",
        "rater=lexical",
        "max_samples=2",
        "~logger",
    ]


def _summaries(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((root / "eval").glob("*/summary.json"))]


def test_fig6_sweep_plots_the_summaries(tmp_path, tiny_args, monkeypatch, capsys):
    from pvllm.reports import fig6

    figs = []
    real_plot = fig6.plot
    monkeypatch.setattr(fig6, "plot", lambda *a, **kw: figs.append(real_plot(*a, **kw)) or figs[-1])
    _multirun(["experiment=fig6_history_sweep", *tiny_args], tmp_path)

    by_k = {s["k"]: s for s in _summaries(tmp_path)}
    assert sorted(by_k) == [0, 1, 3, 5, 10, 15]  # the experiment file's sweep, one run each
    assert all(s["history_mode"] == "k" and s["n"] == 2 and s["ficl_n_failed"] == 0 for s in by_k.values())
    png = tmp_path / "reports" / "fig6" / "fig6.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(figs) == 6  # replotted after every run; the last one has every k
    ax = figs[-1].axes[0]
    assert ax.get_xlabel() == "number of history comments k" and ax.get_ylabel() == "FICL-Score (x100)"
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    for label, col in (("Emotion", "FICL-E"), ("Style", "FICL-S"), ("Relevance", "FICL-R")):
        assert list(lines[label].get_xdata()) == [0, 1, 3, 5, 10, 15]
        assert list(lines[label].get_ydata()) == [by_k[k][col] for k in (0, 1, 3, 5, 10, 15)]
    saved = json.loads((tmp_path / "reports" / "fig6" / "fig6.json").read_text())
    assert saved["FICL-S"] == [by_k[k]["FICL-S"] for k in saved["k"]] and saved["missing_k"] == []

    # stage=report replots from the runs alone; a k without a run is left out and named
    capsys.readouterr()
    cfg = compose_config(
        "evaluate",
        [
            "experiment=fig6_history_sweep",
            "stage=report",
            *tiny_args,
            f"paths.output_root={tmp_path}",
            "report.k_values=[0,5,7]",
        ],
        tmp_path / "r",
    )
    series = entry_module("evaluate").evaluate(cfg)
    assert series["k"] == [0, 5] and series["missing_k"] == [7]
    assert series["FICL-E"] == [by_k[0]["FICL-E"], by_k[5]["FICL-E"]]
    assert f"| 5 | {by_k[5]['FICL-E']:.2f} | {by_k[5]['FICL-S']:.2f} |" in capsys.readouterr().out


def test_table5_and_appA_print_the_run_summaries(tmp_path, tiny_args, capsys):
    _multirun(["experiment=table5_history", *tiny_args], tmp_path)
    out = capsys.readouterr().out
    by_mode = {s["history_mode"]: s for s in _summaries(tmp_path)}
    assert sorted(by_mode) == ["k", "none", "others"] and {s["k"] for s in by_mode.values()} == {5}
    table = out[out.rindex("Table 5") :]
    for mode, label in (("none", "No History"), ("others", "Others' History"), ("k", "Default")):
        s = by_mode[mode]
        cells = " | ".join(
            f"{s[c]:.2f}" for c in ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "FICL-E", "FICL-S", "FICL-R")
        )
        hist = f"{s['history_len_mean']:.2f} ({s['history_len_min']}-{s['history_len_max']})"
        assert f"| {label} | {cells} | 2/2 | 2/2 | {hist} | none |" in table
    assert by_mode["none"]["history_len_max"] == 0 and by_mode["k"]["history_len_min"] > 0
    # histories really differ: none sends no history, others/k the same number of comments
    preds = {
        s["history_mode"]: [json.loads(x) for x in (Path(s_dir) / "predictions.jsonl").open()]
        for s_dir, s in (
            (str(p.parent), json.loads(p.read_text())) for p in (tmp_path / "eval").glob("*/summary.json")
        )
    }
    assert all(p["history"] == [] for p in preds["none"])
    assert [len(p["history"]) for p in preds["others"]] == [len(p["history"]) for p in preds["k"]]

    # App. A: three resampled histories of the same targets -> mean ± std (sample std) of those runs
    from pvllm.reports.table4 import _fmt

    _multirun(["experiment=appA_resample", *tiny_args], tmp_path)
    out = capsys.readouterr().out
    runs = {
        s["history_seed"]: s
        for s in _summaries(tmp_path)
        if s["history_mode"] == "k" and s["k"] == 5
    }
    assert sorted(runs) == [0, 1, 2]  # seed 0 is Table 5's default run, reused (not regenerated)
    targets = {
        seed: [
            json.loads(x)["sample_id"]
            for x in (tmp_path / "eval" / f"sample-val-pvllm-k5-s0h{seed}" / "predictions.jsonl").open()
        ]
        for seed in runs
    }
    assert targets[0] == targets[1] == targets[2]
    table = out[out.rindex("Appendix A") :]
    want = " | ".join(
        _fmt([runs[s][c] for s in (0, 1, 2)])
        for c in ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "FICL-E", "FICL-S", "FICL-R")
    )
    assert f"| mean ± std | {want} | 3 runs |" in table
    for seed in (0, 1, 2):
        assert f"| history_seed={seed} | {runs[seed]['BLEU-4']:.2f} |" in table
    saved = json.loads((tmp_path / "reports" / "appA" / "appA.json").read_text())
    assert saved["history_seeds"] == [0, 1, 2] and saved["per_seed"]["2"]["FICL-R"] == runs[2]["FICL-R"]


def test_report_refuses_a_mix_of_raters(tmp_path):
    from pvllm.reports import table5

    for i, rater in enumerate(("lexical/a", "gemini/b")):
        write_run(tmp_path / "eval", f"run{i}", history_mode=["none", "k"][i], rater=rater, **{"FICL-E": 1.0})
    cfg = compose_config(
        "evaluate",
        ["experiment=table5_history", "stage=report", f"paths.output_root={tmp_path}"],
        tmp_path / "r",
    )
    with pytest.raises(ValueError, match="several raters"):
        table5.report(cfg, runs_dir=str(tmp_path / "eval"), generator="pvllm")
    rows = table5.report(cfg, runs_dir=str(tmp_path / "eval"), generator="pvllm", rater="gemini/b")
    assert [(name, s["rater"]) for name, s in rows] == [("Default", "gemini/b")]


def test_table6_prints_labelled_runs(tmp_path, capsys):
    from pvllm.reports.table6 import main

    dirs = {}
    for label, vals in (("Video + Text", (30.0, 49.8, 43.5)), ("Video (Default)", (30.3, 49.9, 43.7))):
        d = tmp_path / label.replace(" ", "_")
        d.mkdir()
        dirs[label] = d
        s = dict(zip(("FICL-E", "FICL-S", "FICL-R"), vals), n=50, n_generation_failed=0, ficl_n_ok=49,
                 ficl_n_failed=1)
        (d / "summary.json").write_text(json.dumps(s))
    md = main([f"{k}={v}" for k, v in dirs.items()] + ["--out", str(tmp_path / "out")])
    assert "| Video + Text | 30.00 | 49.80 | 43.50 | 50/50 | 49/50 | - | - |" in md
    assert "| Video (Default) | 30.30 | 49.90 | 43.70 | 50/50 | 49/50 | - | - |" in md.splitlines()[4]
    assert md.splitlines()[0] == f"({FAILURE_RULE})"
    assert (tmp_path / "out" / "table6.md").read_text() == md + "\n" and "Table 6" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="no summary.json"):
        main([f"x={tmp_path / 'nope'}"])
