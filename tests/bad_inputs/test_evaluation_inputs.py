"""Bad input at evaluation, through evaluate.py: each case asserts the message (naming the item) or the count.
The table "What bad input gets" (docs/bad_inputs.md, linked from the README) lists these rows."""

from __future__ import annotations

import json
import shutil

import pytest

from pvllm.data.dataset import DatasetFormatError, load_pervidcom
from pvllm.data.histories import build_eval_histories
from pvllm.identity import IdentityConflict
from pvllm.utils.jsonl import load_jsonl
from tests.bad_inputs.conftest import COMMENTS, Capture, evaluate, long_text, tiny_args, write_dataset


def _targets(ds_root, split="val") -> list[str]:
    """The target videos evaluate.py will draw (seed 0, one sample per user)."""
    return [s.video_id for s in build_eval_histories(load_pervidcom(ds_root, check_files=False), split, k=5)]


@pytest.mark.parametrize("damage", ["corrupt", "zero_byte"])
def test_unreadable_target_video_is_a_counted_failure(tmp_path, tiny_model_dir, mini_ds, damage):
    targets = _targets(mini_ds)
    bad = targets[0]
    (mini_ds / f"{bad}.mp4").write_bytes(b"" if damage == "zero_byte" else b"\x00not a video\xff" * 64)
    summary = evaluate(tiny_args(tmp_path, tiny_model_dir, mini_ds), tmp_path / "run")
    preds = load_jsonl(tmp_path / "run" / "predictions.jsonl")
    failed = [p for p in preds if p["error"]]
    assert len(failed) == targets.count(bad) == summary["n_generation_failed"] - summary["n_empty_generations"]
    assert all(p["video_id"] == bad and f"{bad}.mp4" in p["error"] for p in failed)  # names the file
    assert summary["n_requested"] == len(targets) == 4 and summary["n_scored"] <= 4 - len(failed)


def test_missing_target_video_fails_before_generation(tmp_path, tiny_model_dir, mini_ds):
    bad = _targets(mini_ds)[0]
    (mini_ds / f"{bad}.mp4").unlink()
    with pytest.raises(DatasetFormatError, match=rf"1 target video file\(s\) missing .*'{bad}.mp4'"):
        evaluate(tiny_args(tmp_path, tiny_model_dir, mini_ds), tmp_path / "run")
    assert not (tmp_path / "run" / "predictions.jsonl").exists()


def test_duplicate_comment_id_names_file_and_line(tmp_path, tiny_model_dir, mini_ds):
    lines = (mini_ds / "comments.jsonl").read_text().splitlines()
    (mini_ds / "comments.jsonl").write_text("\n".join(lines + [lines[0]]) + "\n")
    with pytest.raises(DatasetFormatError, match=rf"comments.jsonl:{len(lines) + 1}: field 'comment_id' duplicate"):
        evaluate(tiny_args(tmp_path, tiny_model_dir, mini_ds), tmp_path / "run")


def test_user_in_two_splits_names_the_user(tmp_path, tiny_model_dir):
    ds = write_dataset(tmp_path / "ds", extra_users=[{"user_id": "ub", "split": "test"}])
    with pytest.raises(DatasetFormatError, match=r"users.jsonl:5: field 'user_id' duplicate 'ub'"):
        evaluate(tiny_args(tmp_path, tiny_model_dir, ds), tmp_path / "run")


def test_empty_split_is_an_error_naming_it(tmp_path, tiny_model_dir, mini_ds):
    with pytest.raises(ValueError, match=r"split 'test' of .* has no user with comments on 2\+ videos"):
        evaluate(tiny_args(tmp_path, tiny_model_dir, mini_ds, split="test"), tmp_path / "run")


def test_history_shorter_than_k_is_counted(tmp_path, tiny_model_dir, mini_ds):
    summary = evaluate(tiny_args(tmp_path, tiny_model_dir, mini_ds), tmp_path / "run")
    # one comment per video: a user's history is every other comment, fewer than k=5 for all four users
    lens = sorted(len(cs) - 1 for cs in COMMENTS.values())
    assert summary["k"] == 5 and summary["n_history_shorter_than_k"] == 4
    assert (summary["history_len_min"], summary["history_len_max"]) == (lens[0], lens[-1]) == (1, 2)
    assert summary["history_len_mean"] == pytest.approx(sum(lens) / 4)


def test_over_long_history_is_cut_to_the_context_and_counted(tmp_path, tiny_model_dir):
    # a single test user whose every comment is 10,000 characters: the tiny model's context is 4096 tokens
    comments = {"ue": [(v, long_text(10_000, seed=i)) for i, v in enumerate(("v1", "v2", "v3"))]}
    ds = write_dataset(tmp_path / "ds", comments, splits={"ue": "test"})
    log = Capture()
    summary = evaluate(tiny_args(tmp_path, tiny_model_dir, ds, split="test"), tmp_path / "run", log)
    (pred,) = load_jsonl(tmp_path / "run" / "predictions.jsonl")
    assert "history_truncated" in pred["notes"] and summary["n_history_truncated"] == 1
    assert "test:ue:" in log.text and "history cut to fit the context of 4096 tokens" in log.text
    assert len(pred["history"]) == 2  # the histories file keeps what was drawn; the prompt was cut


def test_replaced_dataset_under_the_same_name_is_not_reused(tmp_path, tiny_model_dir, mini_ds):
    args = tiny_args(tmp_path, tiny_model_dir, mini_ds)
    evaluate(args, tmp_path / "run")
    # a new dataset at the same root and data.name: the old histories must not be read for it
    shutil.rmtree(mini_ds)
    write_dataset(mini_ds, {**COMMENTS, "ub": [("v2", "a different comment"), ("v3", "cute bunny")]})
    with pytest.raises(IdentityConflict, match=r"was drawn as histories \w+ but this evaluation is histories \w+ "
                                               r"\(dataset_records: '\w+' vs '\w+'\)"):
        evaluate(args, tmp_path / "run2")


def test_stage_score_with_a_run_of_other_histories_is_refused(tmp_path, tiny_model_dir, mini_ds):
    gen = tiny_args(tmp_path, tiny_model_dir, mini_ds, stage="generate")
    evaluate([a.replace("generator=pvllm", "generator=video_llava") for a in gen], tmp_path / "run")
    ident = json.loads((tmp_path / "run" / "identity.json").read_text())
    with pytest.raises(IdentityConflict, match=rf"holds predictions for histories {ident['histories']['id']}, but "
                                               r"this evaluation draws histories \w+ \(history_seed: 0 vs 1\)"):
        evaluate(tiny_args(tmp_path, tiny_model_dir, mini_ds, stage="score", **{"history.history_seed": 1}),
                 tmp_path / "run")
    # scored with its own settings, the summary records the predictions' generator and model, not the
    # config's default generator (pvllm)
    s = evaluate(tiny_args(tmp_path, tiny_model_dir, mini_ds, stage="score"), tmp_path / "run")
    assert (s["generator"], s["model"]) == ("video_llava", str(tiny_model_dir.resolve()))
    assert s["identity"]["generation"]["generator"]["weights"] is not None


def test_resumed_run_with_other_weights_is_refused(tmp_path, tiny_model_dir, mini_ds):
    evaluate(tiny_args(tmp_path, tiny_model_dir, mini_ds, stage="generate"), tmp_path / "run")
    other = tmp_path / "other_model"
    shutil.copytree(tiny_model_dir, other)
    with pytest.raises(IdentityConflict, match=r"holds run \w+ but this evaluation is run \w+ .*generator.model"):
        evaluate(tiny_args(tmp_path, tiny_model_dir, mini_ds, **{"generator.pretrained": other}), tmp_path / "run")


def test_reply_cut_inside_a_multibyte_character_is_not_stored_with_u_fffd(tiny_model_dir):
    from transformers import AutoTokenizer

    from pvllm.generators.base import decode_new_tokens

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tok("so fun 😂😂", add_special_tokens=False)["input_ids"]
    # every prefix that ends inside an emoji (max_new_tokens reached there) decodes to a trailing U+FFFD
    cut = [n for n in range(1, len(ids)) if tok.decode(ids[:n]).endswith("\ufffd")]
    assert cut, "the tokenizer splits the emoji over several byte tokens"
    rows = [ids[:n] for n in cut] + [ids]
    out = decode_new_tokens(tok, rows)
    for (text, notes), n in zip(out, cut):
        assert notes == ["cut_multibyte_char"] and "\ufffd" not in text
        assert text == tok.decode(ids[:n]).rstrip("\ufffd").strip() and "so fun 😂😂".startswith(text)
    assert out[-1] == ("so fun 😂😂", [])  # a complete reply is untouched and not noted


def test_replaced_video_file_is_not_hidden_by_earlier_predictions(tmp_path, tiny_model_dir, mini_ds):
    args = tiny_args(tmp_path, tiny_model_dir, mini_ds)
    evaluate(args, tmp_path / "run")
    target = _targets(mini_ds)[0]
    (mini_ds / f"{target}.mp4").write_bytes(b"a replaced, corrupt file")
    with pytest.raises(IdentityConflict, match=r"holds run \w+ but this evaluation is run \w+ \(generation.videos: "):
        evaluate(args, tmp_path / "run")
