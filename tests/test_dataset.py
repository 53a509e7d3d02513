import json
import shutil

import pytest

from pvllm.data.dataset import DatasetFormatError, load_pervidcom
from tests.conftest import SAMPLE


def test_sample_loads_with_counts(sample_ds):
    assert len(sample_ds.videos) == 18 and len(sample_ds.comments) == 327 and len(sample_ds.user_split) == 24
    assert {s: len(sample_ds.users(s)) for s in ("train", "val", "test")} == {"train": 14, "val": 4, "test": 6}
    for u in sample_ds.user_split:  # the paper's rule: >= 11 comments on distinct videos
        assert len({c.video_id for c in sample_ds.comments_of(u)}) >= 11


def _copy(tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(SAMPLE, root, ignore=shutil.ignore_patterns("*.mp4"))
    return root


def _rewrite(path, lineno, change):
    lines = path.read_text(encoding="utf-8").splitlines()
    rec = json.loads(lines[lineno - 1])
    change(rec)
    lines[lineno - 1] = json.dumps(rec, ensure_ascii=False)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize(
    "fname,lineno,change,match",
    [
        ("comments.jsonl", 7, lambda r: r.pop("text"), r"comments.jsonl:7: field 'text' is missing"),
        ("comments.jsonl", 3, lambda r: r.update(likes="12"), r"comments.jsonl:3: field 'likes' must be int"),
        ("comments.jsonl", 5, lambda r: r.update(video_id="nope"), r"comments.jsonl:5: field 'video_id' 'nope' not in"),
        ("videos.jsonl", 2, lambda r: r.update(psi=1.5), r"videos.jsonl:2: field 'psi' must be in \[0, 1\]"),
        ("users.jsonl", 4, lambda r: r.update(split="dev"), r"users.jsonl:4: field 'split' must be one of"),
    ],
)
def test_bad_records_name_file_line_field(tmp_path, fname, lineno, change, match):
    root = _copy(tmp_path)
    _rewrite(root / fname, lineno, change)
    with pytest.raises(DatasetFormatError, match=match):
        load_pervidcom(root, check_files=False)


def test_missing_video_file_and_bad_json(tmp_path):
    root = _copy(tmp_path)
    with pytest.raises(DatasetFormatError, match=r"videos.jsonl:1: field 'file' 'videos/bunny_full.mp4': no such file"):
        load_pervidcom(root, check_files=True)
    with (root / "users.jsonl").open("a") as f:
        f.write("{broken\n")
    with pytest.raises(ValueError, match=r"users.jsonl:25: not valid JSON"):
        load_pervidcom(root, check_files=False)
