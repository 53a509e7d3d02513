"""Which comments a model sees: training samples and evaluation histories (paper §3.1, §3.2).

Training (§3.2): per user and epoch, one random target video and a history of k ~ U[k_min, k_max]
comments of the same user on *other* videos, re-drawn every epoch from (seed, epoch).
Evaluation (§3.1): a fixed target per user and k history comments (default 5), seeded and written
to ``histories.jsonl`` so that every model of one evaluation reads identical histories.

History modes (Table 5): ``k`` (the user's own comments), ``none`` (no history text), ``others``
(the same number of comments from one different random user). Targets depend only on ``seed``;
histories also on ``history_seed``, so App. A can resample histories for the same targets.

History selection (LaMP-style), evaluation: ``random`` (paper), ``recent`` (the k latest comments
published before the target: a strict time order) or ``retrieved`` (the k comments most similar to the
target video's title, cosine of sentence embeddings, e.g. all-MiniLM-L6-v2). Training: ``random`` (paper)
or ``retrieved_bm25`` (BM25 to the title, only comments published before the target), and optionally
several targets per user and epoch (``draw_training_samples``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from pvllm.data.dataset import Comment, PerVidCom
from pvllm.prompt import HISTORY_MODES, HISTORY_SELECTIONS

if TYPE_CHECKING:
    import numpy as np

Embed = Callable[[list[str]], "np.ndarray"]  # texts -> L2-normalized embeddings (rows)


@dataclass
class Sample:
    """One (user, target video, history) item; ``reference`` is the user's real comment (ground truth)."""

    sample_id: str
    split: str
    user_id: str
    video_id: str
    target_comment_id: str
    reference: str
    history: list[dict] = field(default_factory=list)  # [{comment_id, video_id, text}]
    history_mode: str = "k"
    history_selection: str = "random"
    k: int = 0
    seed: int = 0
    history_seed: int = 0

    def to_row(self) -> dict:
        return dict(self.__dict__)


def _as_history(comments: Sequence[Comment]) -> list[dict]:
    return [{"comment_id": c.comment_id, "video_id": c.video_id, "text": c.text} for c in comments]


def sample_history(user_comments: Sequence[Comment], exclude_video: str, k: int, rng: random.Random) -> list[Comment]:
    """Up to ``k`` of the user's comments on videos other than ``exclude_video`` (fewer if fewer exist)."""
    pool = [c for c in user_comments if c.video_id != exclude_video]
    return rng.sample(pool, min(k, len(pool)))


def _time(c: Comment) -> datetime:
    if not c.published_at:
        raise ValueError(f"history selection 'recent': comment {c.comment_id} (user {c.user_id}) "
                         "has no published_at")
    t = datetime.fromisoformat(c.published_at.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def select_history(user_comments: Sequence[Comment], target: Comment, k: int, rng: random.Random,
                   selection: str = "random", title: str | None = None,
                   embed: Embed | None = None) -> list[Comment]:
    """Up to ``k`` comments of ``user_comments`` on videos other than the target's, by ``selection``.

    ``recent``: the latest ones published strictly before the target (fewer when fewer exist), newest
    first. ``retrieved``: the most similar to ``title`` under ``embed`` (ties by comment id).
    """
    if selection == "random":
        return sample_history(user_comments, target.video_id, k, rng)
    pool = [c for c in user_comments if c.video_id != target.video_id]
    if selection == "recent":
        t = _time(target)
        before = sorted((c for c in pool if _time(c) < t), key=lambda c: (_time(c), c.comment_id),
                        reverse=True)
        return before[:k]
    if selection == "retrieved":
        if embed is None:
            raise ValueError("history selection 'retrieved' needs an embedding model "
                             "(history.retrieval_model)")
        if not title:
            raise ValueError(f"history selection 'retrieved': video {target.video_id} has no title "
                             "to retrieve by")
        if not pool or k == 0:
            return []
        vecs = embed([title] + [c.text for c in pool])
        sims = vecs[1:] @ vecs[0]
        order = sorted(range(len(pool)), key=lambda i: (-float(sims[i]), pool[i].comment_id))
        return [pool[i] for i in order[:k]]
    raise ValueError(f"unknown history selection {selection!r}; valid: {', '.join(HISTORY_SELECTIONS)}")


def _sorted_comments(ds: PerVidCom, user_id: str) -> list[Comment]:
    # sort so that draws do not depend on file order
    return sorted(ds.comments_of(user_id), key=lambda c: (c.video_id, c.comment_id))


def _pick_target(comments: Sequence[Comment], rng: random.Random) -> Comment:
    """A random target *video* (as the paper), then one of the user's comments on it."""
    videos = sorted({c.video_id for c in comments})
    video = rng.choice(videos)
    return rng.choice([c for c in comments if c.video_id == video])


def eligible_users(ds: PerVidCom, split: str, min_videos: int = 2) -> list[str]:
    """Users of ``split`` with comments on at least ``min_videos`` distinct videos (a target + a history)."""
    return [u for u in ds.users(split) if len({c.video_id for c in ds.comments_of(u)}) >= min_videos]


TRAIN_SELECTIONS = ("random", "retrieved_bm25")


def retrieve_bm25_before(user_comments: Sequence[Comment], target: Comment, title: str | None,
                         k: int) -> list[Comment]:
    """The ``k`` comments of ``user_comments`` most similar to ``title`` (BM25 over character 1-3-grams),
    among those on other videos than the target's and published strictly before it (ties: older first,
    then comment id). Never the target video's comments (the ranking's distractors are there), never a
    comment written after the target."""
    from pvllm.utils.textsim import bm25, char_ngrams

    if not title:
        raise ValueError(f"training history selection 'retrieved_bm25': video {target.video_id} has no title")
    t = _time(target)
    pool = sorted((c for c in user_comments if c.video_id != target.video_id and _time(c) < t),
                  key=lambda c: (_time(c), c.comment_id))
    scores = bm25(char_ngrams(title), [char_ngrams(c.text) for c in pool])
    order = sorted(range(len(pool)), key=lambda i: (-scores[i], i))
    return [pool[i] for i in order[:k]]


def draw_training_samples(
    ds: PerVidCom, split: str, epoch: int, seed: int, k_min: int = 5, k_max: int = 15, per_user: int = 1,
    selection: str = "random",
) -> list[Sample]:
    """``per_user`` samples per user for this epoch (targets on distinct videos; 1 = the paper), in a
    shuffled order; deterministic in (seed, epoch). ``selection``: ``random`` (the paper) or
    ``retrieved_bm25`` (``retrieve_bm25_before``)."""
    if selection not in TRAIN_SELECTIONS:
        raise ValueError(f"unknown training history selection {selection!r}; valid: {', '.join(TRAIN_SELECTIONS)}")
    if not (isinstance(per_user, int) and per_user >= 1):
        raise ValueError(f"train_samples_per_user must be an integer >= 1, got {per_user!r}")
    rng = random.Random(f"train:{seed}:{epoch}")
    out = []
    for user in eligible_users(ds, split):
        comments = _sorted_comments(ds, user)
        if per_user == 1:  # the paper's draw (and its random stream) unchanged
            targets = [_pick_target(comments, rng)]
        else:
            videos = sorted({c.video_id for c in comments})
            targets = [rng.choice([c for c in comments if c.video_id == v])
                       for v in rng.sample(videos, min(per_user, len(videos) - 1))]
        for target in targets:
            k = rng.randint(k_min, k_max)
            if selection == "random":
                hist = sample_history(comments, target.video_id, k, rng)
            else:
                hist = retrieve_bm25_before(comments, target, ds.videos[target.video_id].title, k)
            out.append(Sample(
                sample_id=f"{split}:{user}:{target.comment_id}:e{epoch}", split=split, user_id=user,
                video_id=target.video_id, target_comment_id=target.comment_id, reference=target.text,
                history=_as_history(hist), history_mode="k", history_selection=selection, k=len(hist),
                seed=seed, history_seed=seed,
            ))
    rng.shuffle(out)
    return out


def title_samples(ds: PerVidCom, split: str, seed: int, epoch: int | None = None) -> list[Sample]:
    """``data.task=title`` (projector alignment, LLaVA's stage 1): one (video, its title) item per video the
    users of ``split`` commented on; shuffled per epoch (deterministic in seed, epoch), sorted for ``None``."""
    users = set(eligible_users(ds, split))
    videos = sorted({c.video_id for c in ds.comments.values() if c.user_id in users})
    out = [Sample(sample_id=f"title:{split}:{v}", split=split, user_id="", video_id=v, target_comment_id="",
                  reference=ds.videos[v].title, history_mode="title", seed=seed, history_seed=seed)
           for v in videos if ds.videos[v].title]
    if not out:
        raise ValueError(f"data.task=title: no video with a title in split {split!r}")
    if epoch is not None:
        random.Random(f"title:{seed}:{epoch}").shuffle(out)
    return out


def build_eval_histories(
    ds: PerVidCom,
    split: str,
    k: int = 5,
    mode: str = "k",
    seed: int = 0,
    history_seed: int | None = None,
    samples_per_user: int | str = 1,
    selection: str = "random",
    embed: Embed | None = None,
) -> list[Sample]:
    """Evaluation samples: per user ``samples_per_user`` targets on distinct videos, each with a history;
    ``samples_per_user="all"``: every comment of every eligible user is a target (in comment order).

    Targets are drawn from ``seed`` only; the history from ``history_seed`` (defaults to ``seed``) and
    ``selection`` (``random`` = the paper; ``recent``, ``retrieved``: see ``select_history``).
    """
    if mode not in HISTORY_MODES:
        raise ValueError(f"unknown history mode {mode!r}; valid: {', '.join(HISTORY_MODES)}")
    if selection not in HISTORY_SELECTIONS:
        raise ValueError(f"unknown history selection {selection!r}; valid: {', '.join(HISTORY_SELECTIONS)}")
    if not 0 <= k <= 15:
        raise ValueError(f"history k must be in [0, 15] (paper), got {k}")
    if samples_per_user != "all" and not (isinstance(samples_per_user, int) and samples_per_user >= 1):
        raise ValueError(f"samples_per_user must be an integer >= 1 or 'all', got {samples_per_user!r}")
    history_seed = seed if history_seed is None else history_seed
    users = eligible_users(ds, split)
    all_users = sorted(ds.by_user)
    out = []
    for user in users:
        comments = _sorted_comments(ds, user)
        trng = random.Random(f"target:{seed}:{split}:{user}")
        videos = sorted({c.video_id for c in comments})
        if samples_per_user == "all":  # every comment is a target (its history: the user's other videos)
            targets = list(comments)
        else:
            targets = [trng.choice([c for c in comments if c.video_id == video])
                       for video in trng.sample(videos, min(samples_per_user, len(videos) - 1))]
        for target in targets:
            video = target.video_id
            hrng = random.Random(f"history:{history_seed}:{split}:{user}:{target.comment_id}")
            title = ds.videos[video].title
            if mode == "none" or k == 0:
                hist: list[Comment] = []
            elif mode == "k":
                hist = select_history(comments, target, k, hrng, selection, title, embed)
            else:  # others: same number of comments, one different random user, never the target video
                n = len(select_history(comments, target, k, random.Random(hrng.random()), selection, title,
                                       embed))
                others = [u for u in all_users if u != user]
                other = hrng.choice(others)
                hist = select_history(_sorted_comments(ds, other), target, n, hrng, selection, title, embed)
            out.append(Sample(
                sample_id=f"{split}:{user}:{target.comment_id}", split=split, user_id=user, video_id=video,
                target_comment_id=target.comment_id, reference=target.text, history=_as_history(hist),
                history_mode=mode, history_selection=selection, k=len(hist), seed=seed,
                history_seed=history_seed,
            ))
    return out
