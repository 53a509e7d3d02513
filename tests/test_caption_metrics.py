"""Caption metrics: parity with independent computations, and the PTB tokenizer traps."""

from __future__ import annotations

import math

import pytest

from pvllm.metrics.caption import caption_metrics, caption_metrics_per_item, ptb_tokenize

# pycocoevalcap needs Java: skipped without it, failed under CI (tests/conftest.py require_java)
pytestmark = pytest.mark.usefixtures("java")


def test_ptb_tokenize_matches_pycocoevalcap_on_clean_captions():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    caps = ["Hello, World!", "can't won't I'm \"quoted\" (paren)", "naïve café 東京タワー", "That's it..."]
    raw = PTBTokenizer().tokenize({str(i): [{"caption": c}] for i, c in enumerate(caps)})
    assert ptb_tokenize(caps) == [raw[str(i)][0] for i in range(len(caps))]
    assert ptb_tokenize(caps)[:2] == ["hello world", "ca n't wo n't i 'm quoted -lrb- paren -rrb-"]


@pytest.mark.parametrize("sep", ["\r", "\n", "\r\n", "\u2028", "\u2029", "\x0c"])
def test_line_separators_do_not_shift_later_captions(sep):
    caps = [f"first part{sep}second part", "third caption", "fourth caption"]
    assert ptb_tokenize(caps) == ["first part second part", "third caption", "fourth caption"]


def test_raw_pycocoevalcap_misaligns_on_carriage_return():
    """The trap itself: without sanitizing, '\\r' makes pycocoevalcap give caption b the tail of a."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    raw = PTBTokenizer().tokenize({"a": [{"caption": "one\rtwo"}], "b": [{"caption": "three"}]})
    assert raw == {"a": ["one"], "b": ["two"]}
    assert ptb_tokenize(["one\rtwo", "three"]) == ["one two", "three"]
    # and the metrics see a reference with '\r' exactly as one with a space
    refs = {"a": "the cat\rsat on the mat", "b": "a dog runs in the park"}
    hyps = {"a": "the cat sat on a mat", "b": "a dog runs in a park"}
    clean = caption_metrics({k: v.replace("\r", " ") for k, v in refs.items()}, hyps)
    assert caption_metrics(refs, hyps) == clean


def test_emoji_and_punctuation_are_dropped_and_empty_hypotheses_score_zero():
    assert ptb_tokenize(["great goal 😀🎉!", "😀", "", "wow!!"]) == [
        "great goal",
        "",
        "",
        "wow !!",
    ]  # "!!" is no PTB punctuation
    refs = {"a": "what a great goal", "b": "so happy for him", "c": "unbelievable match"}
    hyps = {"a": "what a great goal 😀", "b": "😀😀", "c": ""}
    corpus, items = caption_metrics_per_item(refs, hyps)
    for m in ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr"):
        assert items["b"][m] == 0.0 and items["c"][m] == 0.0, m
        assert math.isfinite(corpus[m])
    assert items["a"]["ROUGE-L"] == pytest.approx(100.0)  # the emoji is gone: identical token sequences


def test_bleu4_matches_nltk_corpus_bleu_on_ptb_tokens():
    from nltk.translate.bleu_score import corpus_bleu

    refs = {
        "1": "the quick brown fox jumps over the lazy dog today",
        "2": "i can not believe he scored that goal in the last minute",
        "3": "this is the best video i have seen all week",
    }
    hyps = {
        "1": "the quick brown fox jumps over a lazy dog",
        "2": "i can not believe that goal in the last minute wow",
        "3": "this is the best video of the week",
    }
    ids = list(refs)
    tok = ptb_tokenize([refs[k] for k in ids] + [hyps[k] for k in ids])
    expected = corpus_bleu([[tok[i].split()] for i in range(3)], [tok[3 + i].split() for i in range(3)])
    assert expected > 0.2  # every n-gram order has matches: no smoothing question
    assert caption_metrics(refs, hyps)["BLEU-4"] == pytest.approx(100 * expected, rel=1e-6)


def test_rouge_l_by_hand_beta_1_2():
    # a: LCS("a b c d e f", "a c e f g") = "a c e f" = 4; P = 4/5, R = 4/6
    # b: LCS("x y z", "x z") = 2; P = 1, R = 2/3
    def f(p, r, beta=1.2):
        return (1 + beta**2) * p * r / (r + beta**2 * p)

    expected = 100 * (f(4 / 5, 4 / 6) + f(1.0, 2 / 3)) / 2
    got = caption_metrics({"a": "a b c d e f", "b": "x y z"}, {"a": "a c e f g", "b": "x z"})
    assert got["ROUGE-L"] == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(74.3846, abs=1e-3)  # (0.71554 + 0.77215) / 2, by hand


def test_cider_d_by_hand():
    """Two items with disjoint vocabularies: idf = log 2 for every n-gram.

    Item 2 is a perfect hypothesis: 10 (CIDEr-D's x10). Item 1 drops the last word of a 5-word
    reference: per order n the clipped cosine is (5-n)/sqrt((5-n)(6-n)), times the length penalty
    exp(-1/(2*6^2)).
    """
    refs = {"1": "alpha bravo charlie delta echo", "2": "foxtrot golf hotel india juliet"}
    hyps = {"1": "alpha bravo charlie delta", "2": "foxtrot golf hotel india juliet"}
    cos = [(5 - n) / math.sqrt((5 - n) * (6 - n)) for n in (1, 2, 3, 4)]
    item1 = 10 * sum(cos) / 4 * math.exp(-1 / 72)
    corpus, items = caption_metrics_per_item(refs, hyps)
    assert items["2"]["CIDEr"] == pytest.approx(1000.0)
    assert items["1"]["CIDEr"] == pytest.approx(100 * item1, rel=1e-9)
    assert corpus["CIDEr"] == pytest.approx(100 * (item1 + 10) / 2, rel=1e-9)


def test_single_item_corpus_warns_and_cider_is_zero():
    with pytest.warns(UserWarning, match="CIDEr-D takes idf"):
        got = caption_metrics({"a": "same words here"}, {"a": "same words here"})
    assert got["CIDEr"] == 0.0
    assert got["ROUGE-L"] == pytest.approx(100.0)


def test_meteor_pinned_and_ids_checked():
    refs = {"a": "the cat sat on the mat", "b": "a dog runs in the park"}
    hyps = {"a": "the cat is on the mat", "b": "a dog is running in a park"}
    # pinned from meteor-1.5.jar (pycocoevalcap 1.2); a change here means the METEOR setup changed
    assert caption_metrics(refs, hyps)["METEOR"] == pytest.approx(METEOR_PIN, abs=1e-6)
    with pytest.raises(ValueError, match="without a reference"):
        caption_metrics(refs, {"a": "x", "z": "y"})
    with pytest.raises(TypeError, match="exclude failed generations"):
        caption_metrics(refs, {"a": "x", "b": None})


METEOR_PIN = 37.65278677576403


def test_line_count_guard_catches_any_misalignment(monkeypatch):
    """Were a separator ever missed by the sanitizer, the tokenizer would fail loudly, not misalign."""
    import pvllm.metrics.caption as cap

    monkeypatch.setattr(cap, "sanitize_caption", lambda t: t)
    with pytest.raises(cap.CaptionMetricError, match="misalign"):
        cap.ptb_tokenize(["one\rtwo", "three"])


def test_concurrent_scorers_equal_sequential_and_pycocoevalcap():
    """The concurrent path (two tokenizer JVMs, METEOR in a thread) gives exactly the scores of the
    sequential one, which are pycocoevalcap's own on one tokenizer run (bench_caption_metrics.py)."""
    import json
    from pathlib import Path

    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    lines = (Path(__file__).resolve().parents[1] / "data/sample/comments.jsonl").read_text().splitlines()
    texts = [json.loads(x)["text"] for x in lines if x.strip()][:60]
    refs = {f"s{i}": t for i, t in enumerate(texts)}
    hyps = {f"s{i}": texts[(i * 7 + 3) % len(texts)] for i in range(len(texts))}
    seq = caption_metrics_per_item(refs, hyps, concurrent=False)
    conc = caption_metrics_per_item(refs, hyps, concurrent=True)
    assert conc == seq
    tok = ptb_tokenize(list(refs.values()) + list(hyps.values()))
    gts = {k: [tok[i]] for i, k in enumerate(refs)}
    res = {k: [tok[len(refs) + i]] for i, k in enumerate(refs)}
    assert conc[0]["BLEU-4"] == 100.0 * Bleu(4).compute_score(gts, res, verbose=0)[0][3]
    assert conc[0]["CIDEr"] == 100.0 * Cider().compute_score(gts, res)[0]
    assert len({round(v["BLEU-4"], 9) for v in conc[1].values()}) > 1  # not a degenerate corpus
