"""CJK word segmentation: the one place Japanese/Chinese text is split into words.

The PTB tokenizer (caption metrics) and a whitespace split (word clouds) leave a Japanese line as one
"word". ``segment`` splits runs of CJK text with janome (a pure-Python Japanese morphological analyzer,
dictionary bundled, on PyPI) and leaves the rest to whitespace. Used by the caption-metrics option
``metrics.tokenize=cjk`` and by the word clouds of the data-build figures (Figure 4).
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

SEGMENTER = "janome-0.5.1 on CJK runs, whitespace elsewhere"


def is_cjk_char(ch: str) -> bool:
    """A wide/fullwidth letter (kanji, kana, hangul, fullwidth Latin): text that has no spaces between words."""
    return unicodedata.east_asian_width(ch) in ("W", "F") and ch.isalpha()


def has_cjk(text: str) -> bool:
    return any(is_cjk_char(ch) for ch in text)


@lru_cache(maxsize=1)
def _tokenizer():
    from janome.tokenizer import Tokenizer

    return Tokenizer()


# parts of speech (IPADIC, janome's dictionary) that carry no content: particles, auxiliary verbs, symbols...
_FUNCTION_POS = ("助詞", "助動詞", "記号", "接続詞", "連体詞", "フィラー")
_FUNCTION_SUB = ("非自立", "代名詞", "接尾")


def _tokens(text: str) -> list[tuple[str, str]]:
    """(word, part of speech) of ``text``: whitespace tokens; CJK ones split by janome (POS from its
    dictionary), others kept whole with POS ``""``."""
    out: list[tuple[str, str]] = []
    for tok in text.split():
        if has_cjk(tok):
            out += [(t.surface, t.part_of_speech) for t in _tokenizer().tokenize(tok) if t.surface.strip()]
        else:
            out.append((tok, ""))
    return out


def segment(text: str) -> list[str]:
    """The words of ``text``: whitespace-separated tokens, each containing CJK split by janome.

    Text without CJK characters is ``text.split()`` exactly (English scores do not move); janome's
    whitespace tokens are dropped."""
    return [w for w, _ in _tokens(text)]


def content_words(text: str) -> list[str]:
    """``segment(text)`` without Japanese function words (particles, auxiliaries, symbols, pronouns,
    dependent nouns and verbs): what a word cloud shows, as English stopwords are dropped there."""
    out = []
    for w, pos in _tokens(text):
        major, *sub = pos.split(",") if pos else ("",)
        if major in _FUNCTION_POS or any(x in _FUNCTION_SUB for x in sub[:1]):
            continue
        out.append(w)
    return out


def segment_joined(text: str) -> str:
    """``segment(text)`` joined by single spaces (what a whitespace tokenizer downstream expects)."""
    return " ".join(segment(text))
