"""The Figure-5 prompt: the one function every generator and the training data use.

The paper (Fig. 5) feeds the video, then the user's comment history as text, and asks for the
comment this user would write. The exact wording is not printed in the paper; this is ours, kept in
one place so that every model sees the same text (§3.1: "the same prompt format for all the models").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

INSTRUCTION_WITH_HISTORY = (
    "Here are comments this user wrote on other videos:\n{history}\n"
    "Watch the video and write the comment this user would write on it, in the user's own style."
)
INSTRUCTION_NO_HISTORY = "Watch the video and write a comment a viewer would write on it."
# data.task=title: feature alignment before PV-LLM training (LLaVA's stage 1 on video titles), a fresh projector
INSTRUCTION_TITLE = "Write the title of this video."
TASKS = ("comment", "title")  # data.task: the user's comment (PV-LLM) | the video's title (alignment)
# Which comments of the user the prompt shows (history.mode): the user's own k | none | another user's; and how
# the evaluation histories are chosen (history.selection). pvllm.data.histories draws them.
HISTORY_MODES = ("k", "none", "others")
HISTORY_SELECTIONS = ("random", "recent", "retrieved")

# What video a sample is shown: one config key, `video.mode`, for train.py and evaluate.py (data.video and
# generator.video are `${video.mode}`). own: its video | mismatched: another sample's (evaluation ablation,
# seeded) | none: text only (no frames read, the prompt without the video token).
VIDEO_MODES = ("own", "mismatched", "none")
TRAIN_VIDEO_MODES = ("own", "none")


def shows_video(video: bool | str) -> bool:
    """Whether frames are read for ``video`` (a ``video.mode`` value; a bool from Python callers)."""
    if isinstance(video, bool):
        return video
    if video not in VIDEO_MODES:
        raise ValueError(f"video.mode must be one of {' | '.join(VIDEO_MODES)}, got {video!r}")
    return video != "none"


def _clean(text: str) -> str:
    # One history comment per line: line breaks inside a comment would look like separate comments.
    return " ".join(text.split())


def build_instruction(history: Sequence[str], title: str | None = None) -> str:
    """The user-turn text without any model-specific chat markup or video placeholder."""
    if history:
        lines = "\n".join(f"{i + 1}. {_clean(h)}" for i, h in enumerate(history))
        text = INSTRUCTION_WITH_HISTORY.format(history=lines)
    else:
        text = INSTRUCTION_NO_HISTORY
    if title:
        text = f"Video title: {_clean(title)}\n{text}"
    return text


def chat_prompt(instruction: str, video_token: str | None = "<video>") -> str:
    """Video-LLaVA chat format: ``USER: <video>\\n{instruction} ASSISTANT:`` (the reply follows);
    ``video_token=None``: the same without the video (text-only PV-LLM on comments-only data, and the
    video ablation video.mode=none)."""
    if video_token is None:
        return f"USER: {instruction} ASSISTANT:"
    return f"USER: {video_token}\n{instruction} ASSISTANT:"


def build_prompt(history: Sequence[str], title: str | None = None,
                 video_token: str | None = "<video>") -> str:
    """The full Video-LLaVA prompt for a history (and optional title): what PV-LLM trains and generates on."""
    return chat_prompt(build_instruction(history, title), video_token)


def fit_history(history: Sequence[str], n_tokens: Callable[[list[str]], int], budget: int
                ) -> tuple[list[str], bool]:
    """The history cut until ``n_tokens(history) <= budget`` (the model's context less the reply): the
    longest comment is shortened from its end first, a comment cut to 16 characters is dropped (last first).
    Returns the history and whether anything was cut (generators note it: ``history_truncated``)."""
    h = list(history)
    if n_tokens(h) <= budget:
        return h, False
    while True:
        over = n_tokens(h) - budget
        if over <= 0:
            return h, True
        if not h:
            raise ValueError(f"the prompt needs {over + budget} tokens without any history, over the budget "
                             f"of {budget}: the model's context is too short for this prompt")
        i = max(range(len(h)), key=lambda j: (len(h[j]), -j))
        if len(h[i]) <= 16:
            h.pop()
            continue
        h[i] = h[i][: max(16, len(h[i]) - max(over, len(h[i]) // 8))]
