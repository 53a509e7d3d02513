"""CJK word segmentation: the one place Japanese/Chinese text is split into words.

The PTB tokenizer (caption metrics) and a whitespace split (word clouds) leave a Japanese line as one
"word". ``segment`` splits runs of CJK text with janome (a pure-Python Japanese morphological analyzer,
dictionary bundled, on PyPI) and leaves the rest to whitespace. Used by the caption-metrics option
``metrics.tokenize=cjk`` and by the word clouds of the data-build figures (Figure 4).
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

SEGMENTER = "janome-0.5.1 (wakati) on CJK runs, whitespace elsewhere"


def is_cjk_char(ch: str) -> bool:
    """A wide/fullwidth letter (kanji, kana, hangul, fullwidth Latin): text that has no spaces between words."""
    return unicodedata.east_asian_width(ch) in ("W", "F") and ch.isalpha()


def has_cjk(text: str) -> bool:
    return any(is_cjk_char(ch) for ch in text)


@lru_cache(maxsize=1)
def _tokenizer():
    from janome.tokenizer import Tokenizer

    return Tokenizer(wakati=True)


def segment(text: str) -> list[str]:
    """The words of ``text``: whitespace-separated tokens, each containing CJK split by janome.

    Text without CJK characters is ``text.split()`` exactly (English scores do not move); janome's
    whitespace tokens are dropped."""
    out: list[str] = []
    for tok in text.split():
        if has_cjk(tok):
            out += [w for w in _tokenizer().tokenize(tok) if w.strip()]
        else:
            out.append(tok)
    return out


def segment_joined(text: str) -> str:
    """``segment(text)`` joined by single spaces (what a whitespace tokenizer downstream expects)."""
    return " ".join(segment(text))
