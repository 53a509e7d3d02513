"""Dataset statistics of the paper's §2.2: Table 1, Figures 2-4, the ψ distribution, and DATASET.md."""

from __future__ import annotations

import csv
import math
import random
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SPLIT_COLUMNS = (("train", "Train"), ("val", "Validation"), ("test", "Test"))


def count_words(text: str) -> int:
    """Whitespace words, as for English in the paper; CJK text without spaces counts as few words."""
    return len(text.split())


def table1(
    comments: Sequence[Mapping[str, Any]], user_split: Mapping[str, str]
) -> dict[str, dict[str, float]]:
    """Rows -> columns (Train, Validation, Test, Total) of Table 1, plus average characters."""
    cols: dict[str, list[Mapping[str, Any]]] = {name: [] for _, name in SPLIT_COLUMNS}
    key = dict(SPLIT_COLUMNS)
    for c in comments:
        cols[key[user_split[c["user_id"]]]].append(c)
    cols["Total"] = list(comments)
    rows: dict[str, dict[str, float]] = defaultdict(dict)
    for name, cs in cols.items():
        rows["# of Users"][name] = len({c["user_id"] for c in cs})
        rows["# of Videos"][name] = len({c["video_id"] for c in cs})
        rows["# of Comments"][name] = len(cs)
        rows["Avg. # of Words"][name] = (
            sum(count_words(c["text"]) for c in cs) / len(cs) if cs else float("nan")
        )
        rows["Avg. # of Characters"][name] = sum(len(c["text"]) for c in cs) / len(cs) if cs else float("nan")
    return dict(rows)


def _fmt(v: float) -> str:
    if isinstance(v, int):
        return f"{v:,}"
    return "n/a" if math.isnan(v) else f"{v:.2f}"  # an empty split has no average


def _csv_value(v: float) -> int | float | str:
    if isinstance(v, int):
        return v
    return "" if math.isnan(v) else round(v, 4)


def write_table1(rows: Mapping[str, Mapping[str, float]], out_dir: Path) -> str:
    """Write ``table1.md`` and ``table1.csv``; returns the Markdown."""
    cols = [name for _, name in SPLIT_COLUMNS] + ["Total"]
    md = ["| | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    md += [f"| {r} | " + " | ".join(_fmt(vals[c]) for c in cols) + " |" for r, vals in rows.items()]
    text = "\n".join(md) + "\n"
    (out_dir / "table1.md").write_text(text, encoding="utf-8")
    with (out_dir / "table1.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["statistic", *cols])
        for r, vals in rows.items():
            w.writerow([r, *(_csv_value(vals[c]) for c in cols)])
    return text


def bar_histogram(counter: Counter, path: Path, xlabel: str, ylabel: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = sorted(counter)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    from matplotlib.ticker import MaxNLocator

    ax.bar(xs, [counter[x] for x in xs], width=0.8, color="#4C72B0")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no fractional ticks
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def users_by_video_count(comments: Sequence[Mapping[str, Any]]) -> Counter:
    """Figure 2 data: {number of distinct videos a user commented on: number of users}."""
    per_user: dict[str, set] = defaultdict(set)
    for c in comments:
        per_user[c["user_id"]].add(c["video_id"])
    return Counter(len(v) for v in per_user.values())


def videos_by_user_count(comments: Sequence[Mapping[str, Any]]) -> Counter:
    """Figure 3 data: {number of distinct (frequent) users commenting a video: number of videos}."""
    per_video: dict[str, set] = defaultdict(set)
    for c in comments:
        per_video[c["video_id"]].add(c["user_id"])
    return Counter(len(u) for u in per_video.values())


def find_cjk_font() -> str | None:
    """A font file with CJK glyphs: IPAexGothic from the PyPI package matplotlib-fontja (a dependency, found
    without importing it: its import restyles every matplotlib figure), else an installed one (e.g. Debian
    fonts-ipafont-gothic, fonts-noto-cjk)."""
    import importlib.util

    spec = importlib.util.find_spec("matplotlib_fontja")
    if spec is not None and spec.submodule_search_locations:
        bundled = Path(list(spec.submodule_search_locations)[0]) / "fonts" / "ipaexg.ttf"
        if bundled.is_file():
            return str(bundled)
    from matplotlib import font_manager

    for f in font_manager.findSystemFonts():
        name = Path(f).name.lower()
        if any(
            k in name for k in ("ipag", "ipaexg", "notosanscjk", "notoserifcjk", "droidsansfallback", "wqy")
        ):
            return f
    return None


def has_cjk(texts: Sequence[str]) -> bool:
    from pvllm.utils.segment import has_cjk as text_has_cjk

    return any(text_has_cjk(t) for t in texts)


def cjk_word_frequencies(texts: Sequence[str]) -> Counter:
    """Content words of CJK comments (pvllm.utils.segment: janome; particles, auxiliaries, pronouns and
    other function words left out, as English stopwords are), counted; tokens without a letter or digit
    and single kana are left out too."""
    from pvllm.utils.segment import content_words

    def kana(ch: str) -> bool:
        return "\u3040" <= ch <= "\u30ff"

    words = Counter()
    for t in texts:
        for w in content_words(t):
            if any(ch.isalnum() for ch in w) and not (len(w) == 1 and kana(w)):
                words[w] += 1
    return words


def fig4_wordclouds(
    comments: Sequence[Mapping[str, Any]],
    path: Path,
    seed: int = 0,
    n_users: int = 4,
    font_path: str | None = None,
) -> tuple[list[str], str | None]:
    """Word clouds of ``n_users`` users drawn with ``seed``; returns (users, font used)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from wordcloud import WordCloud

    texts: dict[str, list[str]] = defaultdict(list)
    for c in comments:
        texts[c["user_id"]].append(c["text"])
    users = random.Random(seed).sample(sorted(texts), min(n_users, len(texts)))
    all_texts = [t for u in users for t in texts[u]]
    cjk = has_cjk(all_texts)
    if font_path is None and cjk:
        font_path = find_cjk_font()
        if font_path is None:
            raise RuntimeError("Figure 4: the comments are CJK and no CJK font was found: install pvllm's "
                               "dependency matplotlib-fontja (or pass --font-path)")
    cols = 2 if len(users) > 1 else 1
    rows = (len(users) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.6 * rows), dpi=120, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, u in zip(axes.flat, users):
        wc = WordCloud(
            width=600,
            height=340,
            background_color="white",
            font_path=font_path,
            random_state=seed,
            collocations=False,
        )
        joined = "\n".join(texts[u])
        if cjk:  # words from the segmenter: a whitespace split would make each Japanese line one "word"
            freqs = cjk_word_frequencies(texts[u])
            if freqs:
                ax.imshow(wc.generate_from_frequencies(freqs), interpolation="bilinear")
        elif any(w.isalnum() for w in joined):
            ax.imshow(wc.generate(joined), interpolation="bilinear")
        ax.set_title(f"user {u[:10]}… ({len(texts[u])} comments)", fontsize=11)
    fig.suptitle("Figure 4: word clouds of randomly sampled users", fontsize=13)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return users, font_path


def psi_summary(psi_kept: Sequence[float]) -> dict[str, Any]:
    vals = sorted(psi_kept)
    if not vals:
        return {"n": 0}
    q = lambda p: vals[min(len(vals) - 1, int(p * (len(vals) - 1) + 0.5))]  # noqa: E731 (nearest rank)
    return {
        "n": len(vals),
        "min": vals[0],
        "median": q(0.5),
        "max": vals[-1],
        "share_gt_0.95": sum(v > 0.95 for v in vals) / len(vals),
        "share_gt_0.9": sum(v > 0.9 for v in vals) / len(vals),
    }


def fig_psi(psi_all: Sequence[float], threshold: float, path: Path, skipped: bool = False) -> None:
    """Histogram of ψ; with ``skipped`` (``--skip-psi``) or no defined ψ, a figure that says so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    if skipped or not psi_all:
        ax.axis("off")
        ax.text(0.5, 0.5, "ψ not computed (--skip-psi)" if skipped else "no video has a defined ψ",
                ha="center", va="center", fontsize=16, transform=ax.transAxes)
        ax.set_title("ψ of videos (eq. 3)")
        fig.savefig(path)
        plt.close(fig)
        return
    ax.hist(psi_all, bins=[i / 20 for i in range(21)], color="#55A868", edgecolor="white")
    if 0 <= threshold <= 1:  # a negative threshold disables the ψ filter: no line to draw
        ax.axvline(threshold, color="#C44E52", linestyle="--", label=f"threshold ψ > {threshold}")
        ax.legend()
    ax.set_xlabel("Personalization Score ψ (eq. 3)")
    ax.set_ylabel("number of videos")
    ax.set_title("ψ of videos with a defined score (before the ψ filter)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
