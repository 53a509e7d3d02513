"""CJK text (issue 22 item 6, issue 25 item 11): one segmenter for caption metrics and the word clouds; a
bundled CJK font so Figure 4 draws Japanese, not boxes; the ψ figure of a --skip-psi build says so."""

import pytest

from pvllm.utils.segment import has_cjk, segment, segment_joined

JA = ["今日もかわいい", "神回だった", "作画がすごい", "今日も作画がすごい"]


def test_segmenter_splits_japanese_and_leaves_english_alone():
    assert segment("今日はいい天気ですね") == ["今日", "は", "いい", "天気", "です", "ね"]
    assert segment("nice clip, 10/10") == ["nice", "clip,", "10/10"]  # exactly str.split()
    assert segment_joined("神回 wwww") == "神 回 wwww"  # janome's words, then the Latin token as is
    assert has_cjk("ｗｗｗ草") and not has_cjk("www")


def test_cjk_caption_tokenization_scores_words():
    from pvllm.metrics.caption import caption_metrics_per_item

    refs = {"a": "今日はいい天気ですね", "b": "作画がすごい"}
    hyps = {"a": "今日はいい天気", "b": "作画がすごい"}
    coco, _ = caption_metrics_per_item(refs, hyps, concurrent=False)
    cjk, items = caption_metrics_per_item(refs, hyps, concurrent=False, tokenize="cjk")
    # PTB keeps each line one token: "a" shares no token; with words, "a" matches 4 of its 4 words
    # (今日 は いい 天気) against a 6-word reference; ROUGE-L recall 4/6, precision 1 (beta 1.2)
    b = 1.2
    p, r = 1.0, 4 / 6
    assert items["a"]["ROUGE-L"] == pytest.approx(100 * (1 + b * b) * p * r / (r + b * b * p))
    assert coco["ROUGE-L"] == pytest.approx(50.0)  # only "b" (identical) matches under PTB
    assert cjk["ROUGE-L"] > coco["ROUGE-L"]
    with pytest.raises(ValueError, match="valid coco, cjk"):
        caption_metrics_per_item(refs, hyps, tokenize="mecab")


def test_word_cloud_words_are_segmented_and_every_glyph_is_in_the_font(tmp_path):
    from fontTools.ttLib import TTFont
    from matplotlib import font_manager

    from pvllm.data.stats import cjk_word_frequencies, fig4_wordclouds, find_cjk_font

    freqs = cjk_word_frequencies(JA)
    # words, not lines: 今日 and 作画 are counted across lines; particles (も, が) are left out
    assert freqs["今日"] == 2 and freqs["作画"] == 2 and "今日もかわいい" not in freqs and "が" not in freqs
    # function words by janome's part of speech: は (particle) and です (auxiliary) go, content words stay
    from pvllm.utils.segment import content_words

    assert content_words("今日はいい天気ですね") == ["今日", "いい", "天気"]
    comments = [{"user_id": f"u{i % 2}", "video_id": "v", "text": t} for i, t in enumerate(JA * 3)]
    users, font = fig4_wordclouds(comments, tmp_path / "fig4.png", seed=0)
    assert font == find_cjk_font() and font.endswith("ipaexg.ttf") and (tmp_path / "fig4.png").stat().st_size
    cmap = TTFont(font).getBestCmap()
    missing = sorted({ch for w in freqs for ch in w if ord(ch) not in cmap})
    assert missing == []  # no character falls back to the missing-glyph box
    # the check can fail: matplotlib's default font has none of these glyphs (what drew the boxes)
    default = TTFont(font_manager.findfont("DejaVu Sans")).getBestCmap()
    assert all(ord(ch) not in default for ch in "今日作画")


def test_psi_figure_of_a_skip_psi_build_says_so(tmp_path, monkeypatch):
    import matplotlib.axes

    from pvllm.data.stats import fig_psi

    said = []
    real = matplotlib.axes.Axes.text
    monkeypatch.setattr(matplotlib.axes.Axes, "text", lambda self, x, y, s, **kw: said.append(s) or
                        real(self, x, y, s, **kw))
    fig_psi([], -1, tmp_path / "psi.png", skipped=True)
    assert said == ["ψ not computed (--skip-psi)"] and (tmp_path / "psi.png").is_file()


def test_tables_say_which_tokenization_was_used():
    from pvllm.reports.summary_table import format_table

    cjk = format_table([("pv", {"caption_tokenize": "cjk", "n": 2}), ("base", {"n": 2})])
    assert "(caption metrics tokenized: pv: CJK segmented (janome) before the PTB tokenizer, base: coco-exact" in cjk
    assert "tokenized" not in format_table([("pv", {"caption_tokenize": "coco", "n": 2})])  # the default
