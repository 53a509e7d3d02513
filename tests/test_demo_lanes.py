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


def test_stage_output_without_banners():
    text = ("wandb: Tracking run with wandb version 0.31.0\nGPU available: False, used: False\n"
            "┏━━━┳━━━━━━┓\n┃   ┃ Name ┃\nTrainable params: 135 M\n"
            "feature cache:  50%|█  | 9/18 [00:01<00:01, 4.0it/s]\r"
            "feature cache: 100%|██| 18/18 [00:02<00:00, 4.01it/s]\n/x/fit_loop.py:538: UserWarning: blah\n"
            "💡 Tip: For seamless cloud logging, try litlogger\nSeed set to 0\nLoading `train_dataloader` to estimate\n"
            "Epoch 4/19 ━━━━━━━━           8/18 0:02:18 • 0:02:10 0.08it/s v_num: s16u\n"
            "                                                              train/loss: 4.052 \n"
            "| method | BLEU-4 |\n|---|---|\nout/cache: {'encoded': 18}\n")
    assert demo.without_banners(text) == "| method | BLEU-4 |\n|---|---|\nout/cache: {'encoded': 18}\n"


def _summary(mode, bleu, sim, copy):
    ci = {"ROUGE-L": {"mean": 40.0, "lo": 35.0, "hi": 45.0, "n_users": 2},
          "FICL-E": {"mean": sim, "lo": sim - 1, "hi": sim + 1, "n_users": 2}}
    rank = {"R@1": 50.0, "R@5": 90.0, "R@10": 100.0, "MRR": 70.0, "mean_rank": 2.0, "truth_logprob": -1.8,
            "n": 47, "n_candidates": 20, "chance": {"R@1": 5.0, "R@5": 25.0, "R@10": 50.0, "MRR": 18.0,
                                                    "mean_rank": 10.5}}
    return {"BLEU-4": bleu, "METEOR": 20.0, "ROUGE-L": 40.0, "CIDEr": 130.0, "FICL-E": sim, "FICL-S": sim,
            "FICL-R": sim, "copy_history": copy, "distinct-1": 0.5, "mean_len": 9.0, "n_requested": 47,
            "n_scored": 47, "history_mode": mode, "rater": "embedding/all-MiniLM-L6-v2", "ci95": ci,
            "ranking": rank}


def test_report_tables_readable(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "OUT", tmp_path)  # the report reads the summaries only, no run directory
    k, none = _summary("k", 20.07, 47.9, 58.0), _summary("none", 0.5, 30.0, float("nan"))
    report = demo.build_report({"k": k, "none": none}, k["ranking"], "VIDEO", "REENCODED")
    lines = report.splitlines()
    header = next(x for x in lines if x.startswith("| history shown | BLEU-4"))
    assert header.count("BLEU-4") == 1 and header.count("similarity") == 1 and "FICL" not in header
    assert "| the user's own, k=5 | 20.1 | 20.0 | 40.0 | 130.0 | 47.9 | 58.0 |" in report
    assert "| none | 0.5 | 20.0 | 40.0 | 130.0 | 30.0 | no history |" in report
    assert ("| history shown | R@1 | R@5 | R@10 | MRR | mean_rank | truth logp | n | N "
            "| copy of a history comment (%) |") in report
    assert "| the user's own, k=5 | 50.0 | 90.0 | 100.0 | 70.0 | 2.0 | -1.800 | 47 | 20 | 58.0 |" in report
    assert "| another user's, k=5 | 50.0 | 90.0 | 100.0 | 70.0 | 2.0 | -1.800 | 47 | 20 | not generated |" in report
    assert "| *chance* | 5.0 | 25.0 | 50.0 | 18.0 | 10.5 | | | | |" in report and "nan" not in report
    assert "rater `embedding/all-MiniLM-L6-v2`" in report and "(47 samples of 2 users)" in report
    titles = [x for x in lines if x.startswith("#")]
    assert len(titles) == len(set(titles)) == 4


def test_reencode_dataset(tmp_path):
    """The re-encoding check's copy of the data: other size and frame rate, same files otherwise."""
    import decord

    src = demo.ROOT / "data" / "sample"
    mini = tmp_path / "mini"
    (mini / "videos").mkdir(parents=True)
    first = (src / "videos.jsonl").read_text().splitlines()[2]  # bunny_01: 1.2 s, 128 px high, 24 fps
    (mini / "videos.jsonl").write_text(first + "\n")
    for name in ("comments.jsonl", "users.jsonl", "content_words.json", "videos/bunny_01.mp4"):
        (mini / name).write_bytes((src / name).read_bytes())
    demo.reencode_dataset(mini, tmp_path / "re", height=96, fps=12)
    before = decord.VideoReader(str(mini / "videos" / "bunny_01.mp4"))
    after = decord.VideoReader(str(tmp_path / "re" / "videos" / "bunny_01.mp4"))
    assert before[0].shape[0] == 128 and after[0].shape[0] == 96
    assert after.get_avg_fps() == 12 and before.get_avg_fps() != 12
    assert (tmp_path / "re" / "videos.jsonl").read_text() == first + "\n"


def test_console_leaves_the_stage_tables_in_the_log():
    """evaluate.py's own tables (FICL-E = S = R for the embedding rater, corpus and per-item BLEU-4) and their
    caption lines stay in the stage's log; the console says where they are."""
    text = ("wandb: Syncing\nval split, history k k=5 (sample-val)\n"
            "| method | BLEU-4 | FICL-E | FICL-S |\n|---|---|---|---|\n| pvllm | 18.49 | 46.28 | 46.28 |\n"
            "95% intervals over users (mean of per-item scores [low, high]):\n| method | BLEU-4 |\n|---|---|\n"
            "| pvllm | 10.31 [3.07, 17.71] |\nwrote /x/summary.json\n")
    assert demo.for_console(text) == ("wrote /x/summary.json\n"
                                      "(this stage's tables: in its log; the demo's are in the report printed at "
                                      "the end)\n")
    assert demo.for_console("feature cache: {'encoded': 18}\n") == "feature cache: {'encoded': 18}\n"
