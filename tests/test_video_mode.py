"""One name for what video a sample is shown (issue 26 item 4): `video.mode` in train.yaml and evaluate.yaml;
`data.video` and `generator.video` only refer to it, and setting them (the old spelling) fails at validation
naming the old spelling and the new one, before any model is built."""

from pathlib import Path

import hydra
import pytest

from pvllm.config import ConfigError, validate_eval_config, validate_train_config
from tests.entrypoints import compose_config


def _error(entry: str, overrides: list[str], out: Path) -> str:
    cfg = compose_config(entry, overrides, out)
    with pytest.raises(ConfigError) as e:
        (validate_train_config if entry == "train" else validate_eval_config)(cfg)
    return str(e.value)


def test_one_key_in_train_and_evaluate(tmp_path):
    train = compose_config("train", ["video.mode=none"], tmp_path / "t")
    assert train.video.mode == "none" and train.data.video == "none"
    ev = compose_config("evaluate", ["video.mode=none"], tmp_path / "e")
    assert ev.generator.video == "none" and ev.data.video == "none"
    validate_train_config(train)
    validate_eval_config(ev)


@pytest.mark.parametrize(("entry", "old", "new"), [
    ("train", "data.video=false", "video.mode=none"),
    ("train", "data.video=true", "video.mode=own"),
    ("evaluate", "data.video=false", "video.mode=none"),
    ("evaluate", "generator.video=false", "video.mode=none"),
])
def test_old_spelling_on_the_command_line_names_the_new_one(tmp_path, entry, old, new):
    msg = _error(entry, [old], tmp_path)
    assert f"{old}: the old spelling of what video a sample is shown; set {new} instead" in msg


def test_old_spelling_in_an_experiment_file_names_the_file(tmp_path):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "old.yaml").write_text("# @package _global_\ndata:\n  video: false\n")
    msg = _error("train", [f"hydra.searchpath=[file://{tmp_path}]", "experiment=old"], tmp_path / "run")
    assert "data.video=false (set in " in msg and "experiment/old.yaml): the old spelling" in msg
    assert "set video.mode=none instead" in msg
    assert "shadowing" not in msg  # one message for it, not two


def test_training_shows_own_or_none(tmp_path):
    msg = _error("train", ["video.mode=mismatched"], tmp_path / "a")
    assert "video.mode: own | none, got 'mismatched' (mismatched is an evaluation ablation)" in msg
    msg = _error("evaluate", ["video.mode=shuffled"], tmp_path / "b")
    assert "video.mode: own | mismatched | none, got 'shuffled'" in msg


def test_video_mode_none_reaches_the_training_data(tmp_path):
    cfg = compose_config("train", ["video.mode=none"], tmp_path)
    dm = hydra.utils.instantiate(cfg.data)
    dm.setup("validate")  # no validation video is decoded: none is read
    item = dm.val_set[0]
    assert item["frames"] is None and "<video>" not in item["prompt"]
    own = hydra.utils.instantiate(compose_config("train", [], tmp_path / "own").data)
    own.setup("predict")
    assert "<video>" in own.val_set[0]["prompt"]
