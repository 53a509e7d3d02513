"""Issue 11: `python -m pvllm.data.export` writes PerVidCom splits as LLaMA-Factory / ms-swift video data."""

import json
import subprocess
import sys

import pytest

from pvllm.data.dataset import load_pervidcom
from pvllm.data.export import export
from pvllm.data.histories import build_eval_histories, draw_training_samples
from tests.conftest import REPO, SAMPLE

# hand-written from data/sample (test split, seed 0, k=5): LLaMA-Factory's mllm_video_demo shape
EXPECTED_FIRST = {
    "id": "test:synthetic_nostalgic_1:c0260",
    "messages": [
        {"role": "user", "content": (
            "<video>Here are comments this user wrote on other videos:\n"
            "1. Back in the day, my old red bicycle looked just like this. Miss those times.\n"
            "2. Back in the day, the rabbits in my grandma's garden looked just like this. Miss those times.\n"
            "3. Seeing the street brings back commuting by bike in college. Simpler days.\n"
            "4. This reminds me of the city where I grew up. The cyclist riding home takes me right back.\n"
            "5. Seeing the meadow brings back summer camp in the countryside. Simpler days.\n"
            "Watch the video and write the comment this user would write on it, in the user's own style.")},
        {"role": "assistant", "content": "Seeing the trees brings back watching cartoons on Saturday mornings. "
                                         "Simpler days."},
    ],
    "videos": [str((SAMPLE / "videos" / "bunny_05.mp4").resolve())],
}


def test_llamafactory_export_matches_a_hand_written_record_and_loads_with_datasets(tmp_path):
    datasets = pytest.importorskip("datasets", reason="pip install -c constraints.txt 'pvllm[export]'")
    out = tmp_path / "lf"
    cmd = [sys.executable, "-m", "pvllm.data.export", "--root", str(SAMPLE), "--split", "test",
           "--format", "llamafactory", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((out / "pervidcom_test.json").read_text())
    assert rows[0] == EXPECTED_FIRST
    info = json.loads((out / "dataset_info.json").read_text())
    assert info == {"pervidcom_test": {
        "file_name": "pervidcom_test.json", "formatting": "sharegpt",
        "columns": {"messages": "messages", "videos": "videos"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                 "assistant_tag": "assistant"}}}
    # the same histories evaluate.py writes for this split (every model scored on identical histories)
    ds = load_pervidcom(SAMPLE)
    want = build_eval_histories(ds, "test", k=5, seed=0)
    assert [r["id"] for r in rows] == [s.sample_id for s in want]
    assert [r["messages"][1]["content"] for r in rows] == [s.reference for s in want]
    loaded = datasets.load_dataset("json", data_files=str(out / "pervidcom_test.json"), split="train",
                                   cache_dir=str(tmp_path / "hf"))
    assert loaded.num_rows == len(rows) and loaded[0]["messages"] == EXPECTED_FIRST["messages"]
    assert loaded[0]["videos"] == EXPECTED_FIRST["videos"]


def test_swift_and_sharegpt_exports_of_the_train_draws(tmp_path):
    datasets = pytest.importorskip("datasets", reason="pip install -c constraints.txt 'pvllm[export]'")
    ds = load_pervidcom(SAMPLE)
    draws = [s for e in range(2) for s in draw_training_samples(ds, "train", e, 0, 5, 15)]
    path = export(str(SAMPLE), "train", str(tmp_path), "swift", epochs=2)
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert [r["id"] for r in rows] == [s.sample_id for s in draws]  # one fresh draw per epoch, in order
    for r, s in zip(rows, draws):
        n = r["messages"][0]["content"].count("\n") - 1  # the numbered history lines
        assert n == len(s.history) and 5 <= n <= 15 and r["messages"][0]["content"].startswith("<video>")
    sg = export(str(SAMPLE), "train", str(tmp_path), "sharegpt", name="pvc_sharegpt")
    first = json.loads(sg.read_text())[0]
    assert first["conversations"][0]["from"] == "human" and first["conversations"][1] == {
        "from": "gpt", "value": draws[0].reference}
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert info["pvc_sharegpt"]["columns"] == {"messages": "conversations", "videos": "videos"}
    for f in (path, sg):
        loaded = datasets.load_dataset("json", data_files=str(f), split="train",
                                       cache_dir=str(tmp_path / "hf"))
        assert loaded.num_rows == (len(draws) if f == path else len(draws) // 2)
    with pytest.raises(ValueError, match="valid: llamafactory, swift, sharegpt"):
        export(str(SAMPLE), "train", str(tmp_path), "alpaca")
